"""The last table of bench/gpu_check.sh: every GPU target of issue 17 beside what this run measured.

Reads the JSON the check's benchmarks wrote into DIR (bench_scan.json, bench_ttt.json, bench_epoch.json,
bench_device_serving.json) and the pytest line of the kernel tests. A number that is missing says so; nothing is
called met (or missed) without a measurement on a GPU at the target's shape: "-" otherwise.
Run: python -m bench.gpu_summary DIR [--pytest "LINE"]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _load(folder: Path, name: str):
    path = folder / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _scan_rows(scan):
    """(our fwd+bwd vs eager, ours vs fla) at the largest float32 shape measured, as text."""
    if not scan:
        return "no bench_scan.json", "no bench_scan.json", None, None
    rows = [r for r in scan.get("rows", []) if r.get("dtype") == "float32" and "shape" in r]
    if not rows:
        return "no float32 rows", "no float32 rows", None, None
    shape = max((tuple(r["shape"]) for r in rows), key=lambda s: s[0] * s[1])
    at = {r["backend"]: r for r in rows if tuple(r["shape"]) == shape}
    ours, eager, fla = at.get("triton", {}), at.get("eager", {}), at.get("fla_simple_gla", {})
    if "fwd_bwd_ms" in ours and "fwd_bwd_ms" in eager:
        x = eager["fwd_bwd_ms"] / ours["fwd_bwd_ms"]
        vs_eager = (f"{x:.1f}x at {'x'.join(map(str, shape))}", x >= 10)
    else:
        vs_eager = (ours.get("error") or ours.get("skipped") or "not measured", None)
    if "fwd_bwd_ms" in ours and "fwd_bwd_ms" in fla:
        vs_fla = (f"ours {ours['fwd_bwd_ms']:.3f} ms, fla {fla['fwd_bwd_ms']:.3f} ms", ours["fwd_bwd_ms"] <=
                  fla["fwd_bwd_ms"])
    else:
        vs_fla = (fla.get("error") or fla.get("skipped") or "fla not measured", None)
    return vs_eager[0], vs_fla[0], vs_eager[1], vs_fla[1]


def table(folder: Path, pytest_line: str) -> list:
    """[(target, measured, met)] with met True / False / None (not measured)."""
    out = [("kernel tests (CUDA; a dry run: interpreter)", pytest_line or "no pytest line", None if not pytest_line else
            "failed" not in pytest_line and "error" not in pytest_line)]
    e_text, f_text, e_ok, f_ok = _scan_rows(_load(folder, "bench_scan.json"))
    out += [("scan fwd+bwd >= 10x eager (float32)", e_text, e_ok),
            ("scan fwd+bwd no slower than fla chunk_simple_gla", f_text, f_ok)]
    ttt = _load(folder, "bench_ttt.json") or {}
    best = [r for r in ttt.get("rows", []) if r.get("step") in ("ttt", "ttt_compiled") and "batches_per_s" in r]
    if best:
        b = max(best, key=lambda r: r["batches_per_s"])
        measured = f"{b['batches_per_s']:.1f}/s ({b['step']}, {b['backend']}, {b['device']}, batch {b['batch']})"
        out.append(("test-time step >= 100 batches/s", measured,
                    b["batches_per_s"] >= 100 if b["device"] == "cuda" else None))
    else:
        out.append(("test-time step >= 100 batches/s", "not measured", None))
    epoch = _load(folder, "bench_epoch.json") or {}
    done = [r for r in epoch.get("rows", []) if "epoch_s" in r]
    if done:
        b = min(done, key=lambda r: r["epoch_s"])
        out.append(("ML-1M training epoch <= 1 s", f"{b['epoch_s']:.2f} s ({'compiled' if b['compiled'] else 'eager'}"
                    f", {b['dtype']}, {b['device']}, {b['users']}x{b['length']}x{b['items']})",
                    b["epoch_s"] <= 1.0 if b["device"] == "cuda" and b["users"] >= 6040 else None))
    else:
        out.append(("ML-1M training epoch <= 1 s", "not measured", None))
    serving = _load(folder, "bench_device_serving.json") or {}
    at = {r["batch"]: r for r in serving.get("rows", []) if "events_per_s" in r}
    device = serving.get("settings", {}).get("device", "?")
    for batch in (1, 64, 4096):
        if batch in at:
            r = at[batch]
            met = r["events_per_s"] >= 1e6 and r["p99_ms"] <= 5 if batch == 4096 and device == "cuda" else None
            out.append((f"serving batch {batch}" + (": >= 1M events/s, p99 <= 5 ms" if batch == 4096 else ""),
                        f"{r['events_per_s']:,.0f} events/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms "
                        f"({device})", met))
        else:
            out.append((f"serving batch {batch}", "not measured", None))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--pytest", default="", help="the kernel tests' summary line")
    o = p.parse_args(argv)
    rows = table(o.folder, o.pytest.strip())
    width = max(len(t) for t, _, _ in rows)
    print(f"\n{'target':<{width}}  {'met':<4} measured")
    for target, measured, met in rows:
        print(f"{target:<{width}}  {'-' if met is None else 'yes' if met else 'no':<4} {measured}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
