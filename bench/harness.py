"""What every benchmark shares: where results go, what produced them, and how time is taken.

- `add_out_argument(parser)` gives a script the one output convention: `--out DIR` (default `$OUT`, else
  bench/results); `write_json(out, name, obj)` writes `DIR/name` atomically, so a run cut short by a time limit
  leaves the last complete file.
- `environment()` is the one environment-and-commit record stored in every result JSON: date (UTC), machine, CPU,
  load, library versions, the GPU when there is one, and the code's commit (`code_version()`).
- `timed(fn, reps, ...)` is the one timer: per-call seconds on the clocks asked for (wall, this thread's CPU time,
  CUDA events), after untimed warm-up calls, optionally stopped by a time budget.

Benchmarks are modules of the `bench` package, run from the repository root as `python -m bench.<name>` or through
`python -m bench.run --only <name>`; studies live in bench/studies/. docs/benchmarks.md lists them.
"""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CLOCKS = ("wall", "cpu", "cuda")


# ---- output ---------------------------------------------------------------------------------------------------

def default_out() -> Path:
    """The results folder: $OUT when set (the GPU machine's collected folder), else bench/results."""
    return Path(os.environ.get("OUT") or RESULTS)


def add_out_argument(parser, default: Path | None = None) -> None:
    """Adds `--out DIR` to an argparse parser: the folder the benchmark writes its JSON (and plots) into."""
    parser.add_argument("--out", type=Path, default=default if default is not None else default_out(),
                        metavar="DIR", help="folder for the result JSON (default: $OUT, else bench/results)")


def cpu_benchmark_options(description: str, argv=None, quick_help: str = "a smoke run, not numbers to quote"):
    """Parses the options of the single-process CPU latency benchmarks (serving, curves): --quick, --threads
    (torch intra-op threads, default 1, applied here) and --out DIR."""
    import argparse

    import torch
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    add_out_argument(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def write_json(out_dir, name: str, obj) -> Path:
    """Writes obj as indented JSON to out_dir/name through a temporary file (never a half-written result).

    Raises:
        OSError: the folder cannot be created or written.
    """
    from t2arec_fast.json_io import write_json as write
    return write(Path(out_dir) / name, obj, indent=1)


def child_command(module: str, *args: str) -> list:
    """argv that runs benchmark `module` (e.g. "bench.bench_train") in a fresh Python process, with this process's
    interpreter and its -P flag (bench/gpu_check.sh uses -P to keep a checkout's own package off sys.path). Run it
    with cwd=ROOT, or with the `bench` package on PYTHONPATH."""
    import sys
    return [sys.executable, *(["-P"] if getattr(sys.flags, "safe_path", False) else []), "-m", module, *args]


# ---- provenance -----------------------------------------------------------------------------------------------

def code_version() -> str:
    """'<commit>' or '<commit>+uncommitted changes'; 'unknown' outside a git checkout.

    Training is deterministic for a fixed code version and seed, but float-level changes (an einsum turned into a
    bmm) move a run as much as a seed does, so a number is only reproducible together with its commit. Studies read
    it once when the process starts (edits made during a long run do not count)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+uncommitted changes" if dirty.stdout.strip() else "")


def join_seed_runs(reports: list, files: list, same: tuple, paired: Callable[[dict], dict]) -> dict:
    """One study from runs of other seeds (one process per core): refuses a run whose `same` keys differ from the
    first's (naming the key and both files) and a seed found twice; `paired` recomputes the paired tests."""
    first, seeds = reports[0], {}
    for report, name in zip(reports, files):
        for key in same:
            if report.get(key) != first.get(key):
                raise SystemExit(f"{name}: {key} {report.get(key)!r} differs from {files[0]}'s {first.get(key)!r}")
        for seed, result in report["seeds"].items():
            if seed in seeds:
                raise SystemExit(f"{name}: seed {seed} is in two of the files")
            seeds[seed] = result
    seeds = dict(sorted(seeds.items(), key=lambda kv: int(kv[0])))
    return {**first, "seeds": seeds, "paired": paired(seeds), "environment": environment(),
            "combined_from": [{"file": f, "seeds": list(r["seeds"]), "code": r.get("code")}
                              for r, f in zip(reports, files)]}


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(**extra) -> dict:
    """The record of what produced a result: date (UTC, ISO 8601), host, CPU, logical CPUs, load average at the
    call, Python / numpy / torch / triton / t2arec_fast versions, torch's intra-op threads, the CUDA device when
    present, and the code's commit. Libraries that are not installed are left out. `extra` is merged in last."""
    from t2arec_fast import __version__
    info = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                host=platform.node(), machine=platform.machine(), cpu=cpu_name(), cpus=os.cpu_count(),
                load_average=list(os.getloadavg()), python=platform.python_version(), t2arec_fast=__version__,
                code=code_version())
    for name in ("numpy", "torch", "triton", "onnxruntime"):
        try:
            info[name] = __import__(name).__version__
        except Exception:            # absent, or (triton) present but unusable on this platform
            continue
    try:
        import torch
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(device=props.name, sms=props.multi_processor_count, cuda=torch.version.cuda,
                        gpu_mem_gib=round(props.total_memory / 2**30, 1))
    except ImportError:
        pass
    info.update(extra)
    return info


# ---- timing ---------------------------------------------------------------------------------------------------

def timed(fn: Callable[[], object], reps: int, *, warmup: int = 0, clocks: Iterable[str] = ("wall",),
          budget_s: float | None = None, min_reps: int = 1) -> dict:
    """Seconds per call of fn() on each clock: {clock: [seconds, ...]}.

    `warmup` untimed calls first (compilation, autotuning, allocator warm-up happen there), then up to `reps` timed
    calls, or fewer once `budget_s` seconds have passed (at least `min_reps`). Clocks: "wall" (time.perf_counter),
    "cpu" (this thread's CPU time: steadier than wall on a shared machine), "cuda" (CUDA events around the call;
    the call is synchronised, so "wall" then includes the kernels too).

    Raises:
        ValueError: an unknown clock name.
    """
    clocks = tuple(clocks)
    unknown = set(clocks) - set(CLOCKS)
    if unknown:
        raise ValueError(f"unknown clock(s) {sorted(unknown)}; choose from {CLOCKS}")
    cuda = None
    if "cuda" in clocks or _cuda_in_use():
        import torch
        cuda = torch.cuda if torch.cuda.is_available() else None
    for _ in range(warmup):
        fn()
    if cuda is not None:
        cuda.synchronize()
    out = {c: [] for c in clocks}
    started = time.perf_counter()
    while len(out[clocks[0]]) < reps:
        done = len(out[clocks[0]])
        if budget_s is not None and done >= min_reps and time.perf_counter() - started > budget_s:
            break
        _one_call(fn, out, cuda)
    return out


def _one_call(fn, out: dict, cuda) -> None:
    events = None
    if "cuda" in out:
        events = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
        events[0].record()
    wall, cpu = time.perf_counter(), time.thread_time()
    fn()
    if events is not None:
        events[1].record()
    if cuda is not None:
        cuda.synchronize()
    if "cpu" in out:
        out["cpu"].append(time.thread_time() - cpu)
    if "wall" in out:
        out["wall"].append(time.perf_counter() - wall)
    if events is not None:
        out["cuda"].append(events[0].elapsed_time(events[1]) / 1e3)


def _cuda_in_use() -> bool:
    """Whether torch is loaded and a CUDA device is initialised: then every timed call is synchronised."""
    import sys
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized())
