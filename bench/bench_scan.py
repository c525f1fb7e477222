"""Selective-scan speed: Triton kernels vs the PyTorch reference (eager and torch.compile) vs flash-linear-attention.

On CUDA: forward, backward and forward+backward at (batch, seqlen, d, d_state) = (4096, 200, 64, 32) and
(4096, 50, 64, 32), float32 and bfloat16 inputs; warm-up excluded, median of many CUDA-event-timed runs; the card's
measured device-to-device copy bandwidth and the forward's bytes moved / time as a % of it; ratios vs eager.
`--sweep` also times the kernels' launch shapes (BLOCK_D × num_warps) to choose the defaults.
On CPU (no CUDA): seconds for forward+backward at (256, 200, 64, 32), loop vs chunked reference.

Prints a table and writes bench_scan.json (CUDA) or bench_scan_cpu.json to --out DIR (default: $OUT or
bench/results). Run from the repository root: python -m bench.bench_scan [--quick]. `--summary FILE` prints the
table of a written JSON again (bench/gpu_check.sh ends with it).
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import time
from pathlib import Path

import torch

from bench.harness import add_out_argument, child_command, environment, timed, write_json

GPU_SHAPES = [(4096, 200, 64, 32), (4096, 50, 64, 32)]
CPU_SHAPE = (256, 200, 64, 32)
QUICK_GPU_SHAPES, QUICK_CPU_SHAPE = [(256, 50, 64, 32)], (16, 50, 16, 8)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------------------------
# inputs and the functions under test
# ---------------------------------------------------------------------------------------------------------------

def make_inputs(shape, dtype, device, seed=0):
    """Model-like inputs: activations in `dtype`, parameters (A, D) in float32 as under autocast; no initial
    state (training starts from zero); 10% of every sequence left-padded (dt = 0)."""
    b, L, d, n = shape
    g = torch.Generator(device="cpu").manual_seed(seed)

    def rand(*s):
        return torch.randn(*s, generator=g).to(device=device, dtype=dtype)

    dt = torch.rand(b, L, generator=g) * 0.1 + 1e-3
    dt[:, : L // 10] = 0.0
    args = dict(x=rand(b, L, d), dt=dt.to(device=device, dtype=dtype),
                A=torch.tensor(-2.0, device=device), B=rand(b, L, n), C=rand(b, L, n),
                D=torch.randn(d, generator=g).to(device), z=rand(b, L, d), initial_state=None)
    for v in args.values():
        if v is not None:
            v.requires_grad_()
    return args


ARG_ORDER = ("x", "dt", "A", "B", "C", "D", "z", "initial_state")


def scan_fn(backend):
    """A callable (x, dt, A, B, C, D, z, h0) -> (y, final_state) for a backend name."""
    from t2arec_fast.ops import selective_scan_chunked, selective_scan_loop
    if backend == "triton":
        from t2arec_fast.triton_kernels.selective_scan import selective_scan_triton
        return selective_scan_triton
    if backend == "triton_chunked":
        return forced_impl_triton("chunked")
    if backend == "eager":
        return selective_scan_chunked
    if backend == "loop":
        return selective_scan_loop
    if backend == "compile":
        return torch.compile(selective_scan_chunked, dynamic=False)
    if backend == "fla_simple_gla":
        return fla_scan()
    raise ValueError(backend)


def forced_impl_triton(impl):
    """The Triton scan with one implementation chosen ("sequential" is the default, "chunked" opt-in)."""
    from t2arec_fast.triton_kernels.selective_scan import selective_scan_triton
    return functools.partial(selective_scan_triton, impl=impl)


def fla_scan():
    """The same recurrence through flash-linear-attention's chunk_simple_gla (q=C, k=B, v=dt·x, g=dt·A, one head),
    plus the D skip and the gate in PyTorch, so that it does the same work. Raises ImportError without fla."""
    from fla.ops.simple_gla import chunk_simple_gla

    def run(x, dt, A, B, C, D, z, h0):
        v = (dt[..., None] * x).unsqueeze(2)
        g = (dt * A).float().unsqueeze(2)
        o, h = chunk_simple_gla(q=C.unsqueeze(2), k=B.unsqueeze(2), v=v, g=g, scale=1.0,
                                initial_state=None if h0 is None else h0.unsqueeze(1), output_final_state=True)
        y = (o.squeeze(2) + x * D) * torch.nn.functional.silu(z)
        return y, h.squeeze(1)
    return run


# ---------------------------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------------------------

def cuda_median_ms(fn, budget_s=2.0, min_reps=5, max_reps=50, warmup=3):
    """Median ms over CUDA-event-timed runs after `warmup` untimed ones (compile/autotune happen there)."""
    return 1e3 * statistics.median(timed(fn, max_reps, warmup=warmup, clocks=("cuda",), budget_s=budget_s,
                                         min_reps=min_reps)["cuda"])


def cpu_median_s(fn, reps=3):
    """Median wall seconds over `reps` runs after one warm-up run."""
    return statistics.median(timed(fn, reps, warmup=1)["wall"])


def phase_callables(fn, args):
    """(forward, backward, forward+backward) closures. Backward replays one retained graph."""
    ordered = [args[k] for k in ARG_ORDER]
    leaves = [v for v in ordered if v is not None]

    def forward():
        with torch.no_grad():
            fn(*ordered)

    y, h = fn(*ordered)
    dy, dh = torch.randn_like(y), torch.randn_like(h)

    def backward():
        for leaf in leaves:
            leaf.grad = None
        torch.autograd.backward((y, h), (dy, dh), retain_graph=True)

    def forward_backward():
        for leaf in leaves:
            leaf.grad = None
        yy, hh = fn(*ordered)
        torch.autograd.backward((yy, hh), (dy, dh))

    return forward, backward, forward_backward


def forward_bytes(shape, dtype):
    """Bytes a fused forward must move: read x, z, B, C, dt; write y and the final state."""
    b, L, d, n = shape
    elt = torch.tensor([], dtype=dtype).element_size()
    return b * L * (3 * d + 2 * n + 1) * elt + b * n * d * elt


def copy_bandwidth_gbs():
    """Device-to-device copy of 1 GiB: (bytes read + bytes written) / time."""
    src = torch.empty(2 ** 28, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    ms = cuda_median_ms(lambda: dst.copy_(src), budget_s=1.0)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


# ---------------------------------------------------------------------------------------------------------------
# modes
# ---------------------------------------------------------------------------------------------------------------

PEER_CHECK_SHAPE = (4, 64, 64, 32)      # (batch, L, d, d_state) of the correctness check before a peer is timed
PEER_CHECK_TOL = 1e-3                   # relative to the largest |value|; float32 vs the float64 reference


def check_against_reference(fn, device) -> float:
    """Max relative error of fn's (y, final_state) against the chunked PyTorch reference in float64, on a small
    float32 case with left padding: a peer's wrapper must compute OUR recurrence before its time means anything."""
    from t2arec_fast.ops import selective_scan_chunked
    args = make_inputs(PEER_CHECK_SHAPE, torch.float32, device)
    ordered = [args[k] for k in ARG_ORDER]
    with torch.no_grad():
        got = fn(*ordered)
        want = selective_scan_chunked(*[None if a is None else a.double() for a in ordered])
    return max(((g.double() - w).abs().max() / w.abs().max().clamp_min(1e-30)).item() for g, w in zip(got, want))


def bench_gpu_backend(backend, shape, dtype_name, budget_s):
    row = dict(backend=backend, shape=list(shape), dtype=dtype_name)
    try:
        fn = scan_fn(backend)
        if backend == "fla_simple_gla":
            row["check_rel_err"] = check_against_reference(fn, "cuda")
            if not row["check_rel_err"] <= PEER_CHECK_TOL:
                row["error"] = f"wrapper disagrees with our reference (rel err {row['check_rel_err']:.2e}): not timed"
                return row
        args = make_inputs(shape, DTYPES[dtype_name], "cuda")
        fwd, bwd, both = phase_callables(fn, args)
        row.update(fwd_ms=cuda_median_ms(fwd, budget_s), bwd_ms=cuda_median_ms(bwd, budget_s),
                   fwd_bwd_ms=cuda_median_ms(both, budget_s))
        row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    except ImportError as exc:
        row["skipped"] = f"not importable: {exc}"
    except Exception as exc:  # keep going: one failing backend must not lose the others' numbers
        row["error"] = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return row


def run_compile_child(out_dir, timeout_s):
    """torch.compile in a child process with a wall-clock limit: inductor can take minutes."""
    path = Path(out_dir) / "bench_scan_compile.json"
    cmd = child_command("bench.bench_scan", "--compile-only", "--out", str(out_dir))
    try:
        subprocess.run(cmd, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        print(f"torch.compile benchmark stopped after {timeout_s}s")
    if path.exists():
        return json.loads(path.read_text())
    return [dict(backend="compile", skipped=f"no result within {timeout_s}s")]


# (impl, dtype, launch parameters): the questions the defaults in triton_kernels/ were chosen by. Kept short: every
# entry compiles a forward and a backward kernel (seconds each).
SWEEP = [
    ("chunked", "float32", dict(chunk=32, num_warps=4, precision="ieee")),
    ("chunked", "float32", dict(chunk=32, num_warps=4, precision="tf32x3")),
    ("chunked", "float32", dict(chunk=64, num_warps=8, precision="ieee")),
    ("chunked", "bfloat16", dict(chunk=32, num_warps=4)),
    ("chunked", "bfloat16", dict(chunk=64, num_warps=4)),
    ("chunked", "bfloat16", dict(chunk=64, num_warps=8)),
    ("chunked", "bfloat16", dict(chunk=32, num_warps=4, block_d=32)),
    ("sequential", "float32", dict(block_d=64, num_warps=1)),
    ("sequential", "float32", dict(block_d=32, num_warps=1)),
]


def sweep(shape, out_rows, deadline):
    """Time kernel launch shapes (forward and backward launchers, no autograd) until `deadline`."""
    from t2arec_fast.triton_kernels import selective_scan as tk
    for impl, dtype_name, cfg in SWEEP:
        if time.perf_counter() > deadline:
            out_rows.append(dict(impl=impl, dtype=dtype_name, **cfg, skipped="sweep time budget spent"))
            continue
        row = dict(impl=impl, dtype=dtype_name, shape=list(shape), **cfg)
        try:
            args = make_inputs(shape, DTYPES[dtype_name], "cuda")
            a = [None if args[k] is None else args[k].detach() for k in ARG_ORDER]
            y, h, states = tk.scan_fwd(*a, impl=impl, **cfg)
            dy, dh = torch.randn_like(y), torch.randn_like(h)
            bwd_cfg = {k: v for k, v in cfg.items() if k != "chunk"}
            row["fwd_ms"] = cuda_median_ms(lambda: tk.scan_fwd(*a, impl=impl, **cfg), 0.3)
            row["bwd_ms"] = cuda_median_ms(lambda: tk.scan_bwd(*a, states, dy, dh, **bwd_cfg), 0.3)
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        out_rows.append(row)
        print("sweep", row, flush=True)
        torch.cuda.empty_cache()


def gpu_main(opts, out_dir):
    result = dict(meta=environment(), rows=[])
    bw = copy_bandwidth_gbs()
    result["meta"]["copy_bandwidth_gbs"] = bw
    print(f"device {torch.cuda.get_device_name()}: copy bandwidth {bw:.0f} GB/s (read+write)", flush=True)
    if opts.sweep:
        result["sweep"] = []
        sweep(opts.gpu_shapes[0], result["sweep"], deadline=time.perf_counter() + opts.sweep_budget)
        write_json(out_dir, "bench_scan.json", result)
    backends = ["triton", "triton_chunked", "eager", "fla_simple_gla"]
    for shape in opts.gpu_shapes:
        for dtype_name in DTYPES:
            for backend in backends:
                row = bench_gpu_backend(backend, shape, dtype_name, opts.budget)
                if backend.startswith("triton") and "fwd_ms" in row:
                    moved = forward_bytes(shape, DTYPES[dtype_name])
                    row["fwd_gbs"] = moved / (row["fwd_ms"] * 1e-3) / 1e9
                    row["fwd_pct_copy_bw"] = 100.0 * row["fwd_gbs"] / bw
                result["rows"].append(row)
                print(row, flush=True)
                write_json(out_dir, "bench_scan.json", result)   # after each row: a timeout keeps what is done
    if not opts.no_compile:
        result["rows"] += run_compile_child(out_dir, opts.compile_timeout)
    add_ratios(result["rows"])
    write_json(out_dir, "bench_scan.json", result)
    print_table(result)


def compile_only_main(opts):
    out_dir, rows = opts.out, []
    for shape in opts.gpu_shapes:
        for dtype_name in DTYPES:
            start = time.perf_counter()
            row = bench_gpu_backend("compile", shape, dtype_name, budget_s=1.0)
            row["compile_and_bench_s"] = time.perf_counter() - start
            rows.append(row)
            print(row, flush=True)
            write_json(out_dir, "bench_scan_compile.json", rows)   # after each case: a timeout keeps what is done


def add_ratios(rows):
    """speedup_vs_eager = eager time / this time, per phase, for the same shape and dtype."""
    eager = {(tuple(r["shape"]), r["dtype"]): r for r in rows if r.get("backend") == "eager" and "fwd_ms" in r}
    for r in rows:
        base = eager.get((tuple(r.get("shape", ())), r.get("dtype")))
        if base is None or "fwd_ms" not in r:
            continue
        for phase in ("fwd", "bwd", "fwd_bwd"):
            r[f"{phase}_speedup_vs_eager"] = base[f"{phase}_ms"] / r[f"{phase}_ms"]


def print_table(result):
    """The table of a bench_scan result (CUDA or CPU), from the run or from its JSON (--summary)."""
    if "copy_bandwidth_gbs" not in result["meta"]:
        return print_cpu_table(result)
    if result.get("sweep"):
        print("\nlaunch-shape sweep at", result["sweep"][0].get("shape"), "(kernels only, ms)")
        for r in result["sweep"]:
            cfg = {k: v for k, v in r.items() if k not in ("shape", "fwd_ms", "bwd_ms")}
            times = f"fwd {r['fwd_ms']:.3f}  bwd {r['bwd_ms']:.3f}" if "fwd_ms" in r else ""
            print(f"  {times:<26} {cfg}")
    print(f"\nselective scan on {result['meta'].get('device')}, copy bandwidth "
          f"{result['meta']['copy_bandwidth_gbs']:.0f} GB/s; times in ms (median), x = speed-up vs eager")
    print(f"{'shape':<20}{'dtype':<10}{'backend':<16}{'fwd':>9}{'bwd':>9}{'fwd+bwd':>9}{'x fwd+bwd':>10}{'%BW fwd':>9}")
    for r in result["rows"]:
        shape = "x".join(map(str, r.get("shape", [])))
        if "fwd_ms" not in r:
            print(f"{shape:<20}{r.get('dtype', ''):<10}{r['backend']:<16}  {r.get('skipped') or r.get('error')}")
            continue
        pct = f"{r['fwd_pct_copy_bw']:.0f}%" if "fwd_pct_copy_bw" in r else ""
        speed = f"{r['fwd_bwd_speedup_vs_eager']:.1f}" if "fwd_bwd_speedup_vs_eager" in r else ""
        print(f"{shape:<20}{r['dtype']:<10}{r['backend']:<16}{r['fwd_ms']:>9.3f}{r['bwd_ms']:>9.3f}"
              f"{r['fwd_bwd_ms']:>9.3f}{speed:>10}{pct:>9}")


def cpu_main(opts, out_dir):
    result = dict(meta=environment(), rows=[])
    shape = opts.cpu_shape
    for backend in ("eager", "loop"):
        args = make_inputs(shape, torch.float32, "cpu")
        _, _, both = phase_callables(scan_fn(backend), args)
        seconds = cpu_median_s(both, reps=opts.cpu_reps)
        row = dict(backend="chunked" if backend == "eager" else "loop", shape=list(shape), dtype="float32",
                   fwd_bwd_s=seconds)
        result["rows"].append(row)
        print(row, flush=True)
    result["meta"]["reps"] = opts.cpu_reps
    write_json(out_dir, "bench_scan_cpu.json", result)
    print_table(result)


def print_cpu_table(result):
    meta = result["meta"]
    print(f"\nselective scan on CPU ({meta['cpu']}, {meta.get('torch_threads')} threads), float32 "
          f"forward+backward, median of {meta.get('reps')}")
    for r in result["rows"]:
        print(f"  {'x'.join(map(str, r['shape']))}  {r['backend']:<8} {r['fwd_bwd_s']:.3f} s")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_out_argument(p)
    p.add_argument("--quick", action="store_true", help="small shapes, short budgets, no torch.compile (a smoke run)")
    p.add_argument("--summary", type=Path, metavar="FILE", help="print the table of a bench_scan JSON and exit")
    p.add_argument("--sweep", action="store_true", help="also time kernel launch shapes (CUDA)")
    p.add_argument("--sweep-budget", type=float, default=120.0, help="seconds for the sweep")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile reference (CUDA)")
    p.add_argument("--compile-timeout", type=int, default=150, help="seconds for all torch.compile cases")
    p.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--budget", type=float, default=1.5, help="seconds of timed runs per measurement (CUDA)")
    p.add_argument("--cpu-reps", type=int, default=3)
    opts = p.parse_args(argv)
    opts.gpu_shapes, opts.cpu_shape = (QUICK_GPU_SHAPES, QUICK_CPU_SHAPE) if opts.quick else (GPU_SHAPES, CPU_SHAPE)
    if opts.quick:
        opts.budget, opts.no_compile, opts.cpu_reps = min(opts.budget, 0.2), True, 1
    return opts


def main(argv=None):
    opts = parse_args(argv)
    if opts.summary:
        return print_table(json.loads(opts.summary.read_text()))
    if opts.compile_only:
        return compile_only_main(opts)
    if torch.cuda.is_available():
        return gpu_main(opts, opts.out)
    return cpu_main(opts, opts.out)


if __name__ == "__main__":
    main()
