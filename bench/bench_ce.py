"""Peak memory and time of the training cross-entropy over all items: materialised logits vs chunked vs fused.

L_rec scores every position against every item (docs/model.md); `ops.linear_cross_entropy` computes the same loss
and gradients without holding the (rows × items) logits (impl "chunked": rows in chunks, logits recomputed in the
backward; "liger": liger-kernel's fused kernel, CUDA only). Each implementation runs forward + backward in its own
subprocess so that its peak memory is its own: CPU ru_maxrss minus the RSS before the inputs were made; CUDA
max_memory_allocated minus the inputs. Default shape: batch 256 × 200 positions (every position real) = 51,200
rows, 3,706 items (ML-1M), d 64, float32.

Prints a table and writes bench_ce.json into --out DIR. Run from the repository root: python -m bench.bench_ce
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys

from t2arec_fast import json_io
from bench.harness import ROOT, add_out_argument, child_command, environment, timed, write_json


def worker(impl: str, rows: int, items: int, d: int, reps: int) -> dict:
    import torch
    from t2arec_fast.ops import linear_cross_entropy
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(rows, d, generator=g).to(device).requires_grad_()
    weight = (0.1 * torch.randn(items, d, generator=g)).to(device).requires_grad_()
    targets = torch.randint(0, items, (rows,), generator=g).to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()

    def step():
        hidden.grad = weight.grad = None
        linear_cross_entropy(hidden, weight, targets, impl=impl).backward()
    seconds = timed(step, reps, warmup=1)["wall"]
    loss = float(linear_cross_entropy(hidden.detach(), weight.detach(), targets, impl=impl))
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0
    return dict(impl=impl, device=device, rows=rows, items=items, d=d, loss=loss, median_s=statistics.median(seconds),
                reps=len(seconds), peak_extra_mib=peak, logits_mib=rows * items * 4 / 2**20)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=256 * 200)
    p.add_argument("--items", type=int, default=3706)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--impls", nargs="+", default=["plain", "chunked", "liger"])
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    add_out_argument(p)
    o = p.parse_args(argv)
    if o.worker:
        print(json_io.dumps(worker(o.worker, o.rows, o.items, o.d, o.reps), indent=None))
        return 0
    rows = []
    import torch
    for impl in o.impls:
        if impl == "liger" and not torch.cuda.is_available():
            rows.append(dict(impl=impl, error="liger-kernel's fused kernel needs CUDA (no GPU here)"))
            continue
        argv_child = child_command("bench.bench_ce", "--worker", impl, "--rows", str(o.rows), "--items",
                                   str(o.items), "--d", str(o.d), "--reps", str(o.reps))
        proc = subprocess.run(argv_child, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            rows.append(dict(impl=impl, error=((proc.stderr or proc.stdout).strip().splitlines() or ["?"])[-1]))
        else:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"cross-entropy over {o.items} items, {o.rows} rows, d {o.d}: forward + backward")
    print(f"{'impl':<8} {'device':<6} {'s/step':>8} {'peak extra MiB':>15} {'logits MiB':>11} {'loss':>10}")
    for r in rows:
        if "error" in r:
            print(f"{r['impl']:<8} skipped: {r['error']}")
            continue
        print(f"{r['impl']:<8} {r['device']:<6} {r['median_s']:>8.3f} {r['peak_extra_mib']:>15.0f} "
              f"{r['logits_mib']:>11.0f} {r['loss']:>10.5f}")
    path = write_json(o.out, "bench_ce.json", dict(machine=environment(), settings=vars(o) | {"out": str(o.out)},
                                                   rows=rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
