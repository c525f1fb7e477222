"""Run the benchmarks: every `bench/bench_<name>.py` is one, found by its file name.

    python -m bench.run --list                 # the benchmarks and what each measures
    python -m bench.run                        # all of them at a small size (minutes; numbers not to quote)
    python -m bench.run --only train scan      # some of them
    python -m bench.run --only serving --full  # the documented size (the numbers docs/benchmarks.md quotes)

Small-size runs write into bench/results/quick/ (git-ignored) unless --out DIR says otherwise, so that they never
overwrite the JSON the docs quote; --full writes into bench/results/ (or $OUT). Each benchmark runs in its own
process (`python -m bench.bench_<name> ...`), so that one failing does not stop the others; the exit status is 1
if any failed. A new benchmark needs only its file and a line in SMALL (tests/test_bench_run.py checks both).
"""
from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import RESULTS, ROOT, child_command, default_out

BENCH_DIR = Path(__file__).resolve().parent
QUICK_OUT = RESULTS / "quick"

# The small size of each benchmark: arguments that finish in about a minute on a 2-core CPU and exercise every path.
SMALL = {
    "cache": ["--quick"],
    "ce": ["--rows", "4000", "--items", "500", "--reps", "1"],
    "curves": ["--quick"],
    "device_serving": ["--dry"],
    "epoch": ["--dry"],
    "load": ["--rows", "200000", "--runs", "1"],
    "onnx": ["--quick", "--no-compile"],
    "redis_tail": ["--seconds", "2", "--aof", "tmpfs", "--fsync", "everysec", "--rewrite", "on", "--users", "256"],
    "scan": ["--quick"],
    "serving": ["--quick"],
    "shared_state": ["--quick"],
    "train": ["--data", "synthetic:n_users=300", "--min-count", "1", "--epochs", "1", "--max-len", "50", "--models",
              "sasrec", "t2arec", "--ttt-batch", "32", "--ttt-reps", "1"],
    "ttt": ["--batch", "256", "--cpu-batch", "16", "--length", "50", "--items", "500", "--reps", "1",
            "--no-profile"],
}


def benchmarks() -> dict:
    """{name: first line of the module's docstring} for every bench/bench_<name>.py, without importing them."""
    found = {}
    for path in sorted(BENCH_DIR.glob("bench_*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        found[path.stem[len("bench_"):]] = doc.strip().splitlines()[0] if doc.strip() else ""
    return found


def command(name: str, full: bool, out: Path) -> list:
    """argv of one benchmark run: its small size unless `full`, writing into `out`."""
    return child_command(f"bench.bench_{name}", *([] if full else SMALL.get(name, [])), "--out", str(out))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run these benchmarks (default: all)")
    p.add_argument("--full", action="store_true", help="the documented sizes instead of the small ones")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="folder for the JSON (default: bench/results/quick, or $OUT / bench/results with --full)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    opts = parse_args(argv)
    known = benchmarks()
    if opts.list:
        width = max(map(len, known))
        for name, what in known.items():
            print(f"{name:<{width}}  {what}")
        return 0
    names = opts.only or list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    out = opts.out or (default_out() if opts.full else QUICK_OUT)
    failed = []
    for name in names:
        argv = command(name, opts.full, out)
        print(f"=== {name}: {' '.join(argv[1:])}", flush=True)
        start = time.perf_counter()
        status = subprocess.run(argv, cwd=ROOT).returncode
        print(f"=== {name}: {'ok' if status == 0 else f'FAILED (exit {status})'} in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        if status != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
