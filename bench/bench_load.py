"""How fast does load_dataset read a 10-million-interaction CSV, and how much memory does it need?

Generates user,item,timestamp rows (heavy-tailed history lengths, Zipf item popularity, shuffled rows so the
chronological sort has real work) into a temporary folder - not timed - then loads the file with the default
10-core filter in a fresh process per run and reports wall seconds and peak resident memory (ru_maxrss of that
process, imports included). Targets: under 20 s and under 3 GB on a 2-core machine.

    python -m bench.bench_load [--rows 10000000] [--runs 3] [--out DIR]     # writes DIR/bench_load.json
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from t2arec_fast import json_io
from bench.harness import add_out_argument, child_command, environment, write_json

TARGET_SECONDS, TARGET_BYTES = 20.0, 3 * 1024 ** 3


def generate_csv(path: Path, rows: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    rng = np.random.default_rng(seed)
    lengths = np.maximum(rng.lognormal(np.log(35), 0.9, rows // 20).astype(np.int64), 1)
    lengths = lengths[: int(np.searchsorted(np.cumsum(lengths), rows)) + 1]
    lengths[-1] -= lengths.sum() - rows
    users = np.repeat(np.arange(len(lengths), dtype=np.int64) * 7 + 1000, lengths)      # sparse raw ids
    items = (rng.zipf(1.15, rows) % 150_000 + 1).astype(np.int64)
    times = rng.integers(1_420_000_000, 1_730_000_000, rows, dtype=np.int64)
    order = rng.permutation(rows)
    table = pa.table({"user": users[order], "item": items[order], "timestamp": times[order]})
    pacsv.write_csv(table, path)


def child(path: str, min_count: int) -> None:
    """One measured load in this (fresh) process; prints a JSON line."""
    from t2arec_fast.data import load_dataset
    rss_after_imports = peak_rss()
    start, cpu_start = time.perf_counter(), cpu_seconds()
    ds = load_dataset(path, min_count=min_count, verbose=False)
    load_s, load_cpu_s = time.perf_counter() - start, cpu_seconds() - cpu_start
    start = time.perf_counter()
    ds.stats()                                    # includes the sha256 of the input file
    stats_s = time.perf_counter() - start
    print(json_io.dumps(indent=None, obj={
        "load_s": load_s, "load_cpu_s": load_cpu_s, "stats_s": stats_s, "users": ds.n_users, "items": ds.n_items,
        "interactions": ds.n_interactions, "rss_after_imports": rss_after_imports, "peak_rss": peak_rss()}))


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads: less sensitive than wall time to a busy machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss() -> int:
    """Peak resident memory in bytes. VmHWM belongs to this process image; ru_maxrss would also count the
    parent's memory at fork time on Linux."""
    status = Path("/proc/self/status")
    if status.exists():
        line = next(l for l in status.read_text().splitlines() if l.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--min-count", type=int, default=10)
    add_out_argument(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.min_count)
        return 0
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "interactions.csv"
        start = time.perf_counter()
        generate_csv(path, args.rows)
        print(f"generated {args.rows:,} rows, {path.stat().st_size / 1e6:,.0f} MB in "
              f"{time.perf_counter() - start:.1f} s (not timed below)")
        argv = child_command("bench.bench_load", "--child", str(path), "--min-count", str(args.min_count))
        runs = [json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)
                for _ in range(args.runs)]
        file_bytes = path.stat().st_size
    result = summarise(runs, args, file_bytes)
    print_table(result)
    print(f"wrote {write_json(args.out, 'bench_load.json', result)}")
    return 0


def summarise(runs: list, args, file_bytes: int) -> dict:
    load = statistics.median(r["load_s"] for r in runs)
    peak = statistics.median(r["peak_rss"] for r in runs)
    return {"rows": args.rows, "file_bytes": file_bytes, "min_count": args.min_count, "runs": runs,
            "median_load_s": round(load, 2),
            "median_load_cpu_s": round(statistics.median(r["load_cpu_s"] for r in runs), 2),
            "median_stats_s": round(statistics.median(r["stats_s"] for r in runs), 2),
            "median_peak_rss_bytes": int(peak), "kept": {k: runs[0][k] for k in ("users", "items", "interactions")},
            "targets": {"seconds": TARGET_SECONDS, "bytes": TARGET_BYTES},
            "meets_targets": load < TARGET_SECONDS and peak < TARGET_BYTES, "environment": _environment()}


def _environment() -> dict:
    import pyarrow
    return environment(pyarrow=pyarrow.__version__)


def print_table(result: dict) -> None:
    print("\n| run | load s (wall) | load CPU s | stats+sha256 s | peak RSS GB | after imports GB |")
    print("|---|---|---|---|---|---|")
    for i, r in enumerate(result["runs"], 1):
        print(f"| {i} | {r['load_s']:.2f} | {r['load_cpu_s']:.2f} | {r['stats_s']:.2f} | "
              f"{r['peak_rss'] / 1024 ** 3:.2f} | {r['rss_after_imports'] / 1024 ** 3:.2f} |")
    kept = result["kept"]
    print(f"\nmedian load {result['median_load_s']:.2f} s wall ({result['median_load_cpu_s']:.2f} s CPU), peak RSS "
          f"{result['median_peak_rss_bytes'] / 1024 ** 3:.2f} GB (targets < {TARGET_SECONDS:.0f} s, < 3 GB: "
          f"{'met' if result['meets_targets'] else 'NOT met'}); kept {kept['users']:,} users, {kept['items']:,} "
          f"items, {kept['interactions']:,} interactions; load average "
          f"{', '.join(f'{x:.1f}' for x in result['environment']['load_average'])}")


if __name__ == "__main__":
    sys.exit(main())
