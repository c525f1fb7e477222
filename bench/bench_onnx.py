"""Latency of the exported graphs in ONNX Runtime vs the same modules in PyTorch (eager and torch.compile).

    python -m bench.bench_onnx [--threads N] [--no-compile] [--quick] [--out DIR]
    # writes DIR/bench_onnx.json, or DIR/bench_onnx_threads<N>.json with --threads N

Model: ml-100k sized T2ARec (1682 items, d 64, d_state 32, one block), float32, CPU.
  encode: batch 1, 64, 1024 × L 50, 200 (left-padded ids → o_n and states)
  step:   batch 1, 1024 (one event per user → new o_n and states)
Engines (timed one after the other for each shape):
  ort      ONNX Runtime session.run on the exported graph (CPU provider, all graph optimisations)
  ort_api  the same through OnnxEncoder (input checks, numpy/torch conversion)
  ort_nospin  session.run with spin=False (ORT threads do not busy-wait between runs; for shared cores)
  eager    PyTorch eager on the traced wrapper modules (reference scan backend, inference mode)
  compiled torch.compile(dynamic=True) of the same modules (skipped if it fails; --no-compile to skip)
A second table compares the scan's two graph forms inside ORT (opset 27): matrix vs LinearAttention.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from t2arec_fast import json_io
from bench.harness import add_out_argument, environment, timed, write_json
from t2arec_fast.export import OnnxEncoder, export_onnx
from t2arec_fast.export.graphs import EncodeGraph, StepGraph, flatten_states, io_names
from t2arec_fast.export.runtime import open_session
from t2arec_fast.model import T2ARec

N_ITEMS, D, D_STATE = 1682, 64, 32
ENCODE_SHAPES = [(1, 50), (1, 200), (64, 50), (64, 200), (1024, 50), (1024, 200)]
STEP_BATCHES = [1, 1024]
FORM_SHAPES = [(1, 50), (256, 200)]


def repeats(batch: int, quick: bool) -> int:
    n = 100 if batch == 1 else 10 if batch <= 256 else 3
    return max(3, n // 4) if quick else n


def timed_blocks(calls: dict, n: int, warmup: int = 2) -> dict:
    """Per engine: `warmup` untimed calls, then n timed calls → {name: [seconds]}.

    Engines run one after the other, not interleaved: ONNX Runtime's worker threads spin for a while after each
    run, and an interleaved PyTorch call would then fight them for the cores (measured: 1.7 ms → 500 ms)."""
    return {name: timed(fn, n, warmup=warmup)["wall"] for name, fn in calls.items()}


def summarise(times: list) -> dict:
    ms = np.asarray(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}


def left_padded_ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, N_ITEMS + 1, (batch, length), generator=g)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    for row, n in enumerate(lengths.tolist()):
        ids[row, : length - n] = 0
    return ids


def try_compile(module, example_args, log: dict, name: str):
    """torch.compile(module) warmed up on one input, or None (the reason goes into `log`)."""
    start = time.perf_counter()
    try:
        compiled = torch.compile(module, dynamic=True)
        with torch.inference_mode():
            compiled(*example_args)
    except Exception as exc:  # inductor needs a C++ toolchain; report and carry on without it
        log[name] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return None
    log[name] = f"compiled in {time.perf_counter() - start:.1f} s"
    return compiled


def bench_encode(model, encoder, sessions, compiled, quick) -> list:
    rows = []
    eager = EncodeGraph(model)
    for batch, length in ENCODE_SHAPES:
        ids = left_padded_ids(batch, length)
        feeds = {"item_ids": ids.numpy()}
        calls = {"ort": lambda: sessions["encode"].run(None, feeds), "eager": lambda: eager(ids)}
        if batch <= 64:  # the variants only at small batches: at 1024 they would double the run time
            calls.update(ort_api=lambda: encoder.encode(ids),
                         ort_nospin=lambda: sessions["encode_nospin"].run(None, feeds))
        if compiled is not None:
            calls["compiled"] = lambda: compiled(ids)
        with torch.inference_mode():
            times = timed_blocks(calls, repeats(batch, quick), warmup=1 if batch > 256 else 2)
        rows += [{"graph": "encode", "batch": batch, "length": length, "engine": name, **summarise(t)}
                 for name, t in times.items()]
        print_rows(rows[-len(calls):])
    return rows


def bench_step(model, encoder, sessions, compiled, quick) -> list:
    rows = []
    eager = StepGraph(model)
    for batch in STEP_BATCHES:
        with torch.inference_mode():
            _, states, _ = model._run_sequence(left_padded_ids(batch, 50))
        flat = flatten_states(states)
        items = torch.randint(1, N_ITEMS + 1, (batch,))
        names = io_names("step", len(model.layers))[0]
        feeds = dict(zip(names, [items.numpy()] + [t.numpy() for t in flat]))
        calls = {"ort": lambda: sessions["step"].run(None, feeds), "ort_api": lambda: encoder.step(items, states),
                 "ort_nospin": lambda: sessions["step_nospin"].run(None, feeds), "eager": lambda: eager(items, *flat)}
        if compiled is not None:
            calls["compiled"] = lambda: compiled(items, *flat)
        with torch.inference_mode():
            times = timed_blocks(calls, repeats(batch, quick) * (5 if batch == 1 else 10))
        rows += [{"graph": "step", "batch": batch, "length": None, "engine": name, **summarise(t)}
                 for name, t in times.items()]
        print_rows(rows[-len(calls):])
    return rows


def bench_scan_forms(model, workdir: Path, quick, threads) -> list:
    """encode at opset 27 with the matrix form vs one LinearAttention node, both in ORT."""
    sessions = {}
    for form in ("matrix", "linear_attention"):
        export_onnx(model, workdir / form, kinds=("encode",), opset=27, scan_form=form)
        sessions[form] = open_session(workdir / form / "encode.onnx", ["CPUExecutionProvider"], threads)
    rows = []
    for batch, length in FORM_SHAPES:
        feeds = {"item_ids": left_padded_ids(batch, length).numpy()}
        calls = {form: (lambda s=s: s.run(None, feeds)) for form, s in sessions.items()}
        times = timed_blocks(calls, repeats(batch, quick), warmup=1 if batch > 1 else 2)
        rows += [{"graph": "encode(opset 27)", "batch": batch, "length": length, "engine": form, **summarise(t)}
                 for form, t in times.items()]
        print_rows(rows[-2:])
    return rows


def print_rows(rows) -> None:
    for r in rows:
        length = "-" if r["length"] is None else r["length"]
        print(f"{r['graph']:17s} {r['batch']:5d} {length:>4} {r['engine']:17s} "
              f"{r['p50_ms']:10.3f} {r['p99_ms']:10.3f} {r['n']:5d}", flush=True)


def ratio_summary(rows) -> dict:
    """ORT p50 / eager p50 per configuration (the target is ≤ 0.5 at batch 1)."""
    by_key = {}
    for r in rows:
        by_key.setdefault((r["graph"], r["batch"], r["length"]), {})[r["engine"]] = r["p50_ms"]
    return {f"{g} b{b}" + (f" L{length}" if length else ""): round(e["ort"] / e["eager"], 3)
            for (g, b, length), e in by_key.items() if "ort" in e and "eager" in e}




def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads for both engines (default: each library's own, one per core)")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    import onnx
    env = environment(onnx=onnx.__version__, threads_option=args.threads)
    print(json_io.dumps(env, indent=1))
    torch.manual_seed(0)
    model = T2ARec(N_ITEMS, d=D, d_state=D_STATE, n_layers=1).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    compile_log = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        summary = export_onnx(model, workdir / "onnx", kinds=("encode", "step"))
        encoder = OnnxEncoder(workdir / "onnx", providers=["CPUExecutionProvider"], threads=args.threads)
        sessions = {}
        for kind in ("encode", "step"):
            path = workdir / "onnx" / f"{kind}.onnx"
            sessions[kind] = open_session(path, ["CPUExecutionProvider"], args.threads)
            sessions[kind + "_nospin"] = open_session(path, ["CPUExecutionProvider"], args.threads, spin=False)
        compiled_encode = compiled_step = None
        if not args.no_compile:
            compiled_encode = try_compile(EncodeGraph(model), (left_padded_ids(3, 20),), compile_log, "encode")
            with torch.inference_mode():
                _, st, _ = model._run_sequence(left_padded_ids(3, 20))
            compiled_step = try_compile(StepGraph(model), (torch.tensor([1, 2, 3]), *flatten_states(st)),
                                        compile_log, "step")
            print("torch.compile:", compile_log, flush=True)
        print(f"{'graph':17s} {'batch':>5s} {'L':>4s} {'engine':17s} {'p50 ms':>10s} {'p99 ms':>10s} {'n':>5s}")
        rows = bench_encode(model, encoder, sessions, compiled_encode, args.quick)
        rows += bench_step(model, encoder, sessions, compiled_step, args.quick)
        form_rows = bench_scan_forms(model, workdir, args.quick, args.threads)
    ratios = ratio_summary(rows)
    print("ORT / eager p50:", json_io.dumps(ratios, indent=None))
    result = {"environment": env, "model": {"n_items": N_ITEMS, "d": D, "d_state": D_STATE, "n_layers": 1},
              "export_validation": summary["validation"], "torch_compile": compile_log or "skipped",
              "results": rows, "scan_forms_opset27": form_rows, "ort_over_eager_p50": ratios,
              "total_seconds": round(time.perf_counter() - started, 1), "load_average_at_end": os.getloadavg()}
    name = f"bench_onnx_threads{args.threads}.json" if args.threads else "bench_onnx.json"
    print(f"wrote {write_json(args.out, name, result)} in {result['total_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
