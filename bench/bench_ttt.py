"""Throughput of the whole test-time step of the paper (Algorithm 1), in test batches per second.

One step = forward, self-supervised losses (L_time, L_state), backward to every parameter, the adapted forward and
full-ranking scores over all items plus each target's rank — what `evaluate(..., ttt=...)` does per batch. Beside
it, "plain" = forward + full-ranking scores without the test-time step (the backbone's inference, Mamba4Rec-like).
The paper reports 1.02 batches/s for T2ARec and 2.82 for Mamba4Rec at batch 4096 on ML-1M (hardware not stated).

Random data of the paper's ML-1M shape: batch 4096 × length 200 × 3,706 items (lengths uniform in [L/2, L], the rest
left-padded; gaps of seconds to days). d 64, d_state 32, one block, α 0.005, M 1, μ1' = μ2' = 0.1, all parameters.
On CUDA: backend "triton" vs "reference" in the same run, float32, then a torch.profiler summary of the top CUDA
ops of one triton-backend step. CPU cases (reference; without CUDA, or with --cpu) use a smaller batch
(--cpu-batch). Warm-up excluded, median of --reps, each case time-boxed by --budget seconds and wrapped in
try/except (an error is recorded, the run goes on); no new case starts after --total-budget seconds (the GPU check
gives this script ~100 s), and the JSON is rewritten after every case.

"ttt_compiled" is the same step with `ttt_compile` (torch.compile, inductor): its first call (compilation) is
reported apart as compile s, and "vs eager" is the eager "ttt" row's median over its own.

Prints a table and writes bench_ttt.json into --out DIR (default $OUT, else bench/results).
Run from the repository root: python -m bench.bench_ttt
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback

import torch

from bench.harness import add_out_argument, environment, timed, write_json
from t2arec_fast.adapt import GATED_PER_USER_STEP, adapted_scores
from t2arec_fast.config import ModelConfig, TTTConfig
from t2arec_fast.metrics import target_ranks
from t2arec_fast.model import build_model


class _Batch:
    def __init__(self, **tensors):
        self.__dict__.update(tensors)


def random_batch(batch: int, length: int, n_items: int, device, seed: int = 0) -> _Batch:
    """LEFT-padded random sequences, lengths uniform in [length/2, length], increasing int64 timestamps."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, n_items + 1, (batch, length), generator=g)
    gaps = torch.exp(torch.rand(batch, length, generator=g) * 13).long()       # 1 s .. ~5 days, log-uniform
    times = 1_700_000_000 + gaps.cumsum(1)
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=g)
    pad = torch.arange(length)[None, :] < (length - lengths)[:, None]
    items, times = items.masked_fill(pad, 0), times.masked_fill(pad, 0)
    target_times = times[:, -1] + torch.exp(torch.rand(batch, generator=g) * 13).long()
    targets = torch.randint(1, n_items + 1, (batch,), generator=g)
    return _Batch(items=items.to(device), times=times.to(device), target_times=target_times.to(device),
                  targets=targets.to(device))


def make_model(n_items: int, backend: str, device, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(model="t2arec", backend=backend), n_items, max_len=200).to(device)
    model.set_time_margin(1.0)
    return model.eval()


def ttt_step(model, batch, ttt_cfg):
    """The measured unit: adapted scores for one batch, then each target's rank (full ranking)."""
    return target_ranks(adapted_scores(model, batch.items, batch.times, batch.target_times, ttt_cfg).scores,
                        batch.targets)


def plain_step(model, batch, ttt_cfg=None):
    with torch.no_grad():
        return target_ranks(model.scores(batch.items, batch.times), batch.targets)


STEPS = {"ttt": ttt_step, "ttt_user": ttt_step, "plain": plain_step, "ttt_compiled": ttt_step}
# the test-time settings of each measured step: the paper's (per batch), and per-user episodes on L_time (every user
# adapted: the gate of docs/results.md would only lower the work), vectorised with torch.func.vmap
STEP_TTT = {"ttt": TTTConfig(), "plain": TTTConfig(), "ttt_compiled": TTTConfig(ttt_compile=True),
            "ttt_user": TTTConfig(**{**GATED_PER_USER_STEP, "ttt_gate": 0.0})}


def time_step(fn, model, batch, ttt_cfg, reps: int, warmup: int, budget_s: float) -> list:
    """Wall seconds per call of fn(model, batch, ttt_cfg) (CUDA synchronised): `warmup` untimed calls, then up to
    `reps` timed ones or until `budget_s` has passed (at least one)."""
    return timed(lambda: fn(model, batch, ttt_cfg), reps, warmup=warmup, budget_s=budget_s)["wall"]


def run_case(step: str, device: str, backend: str, batch: int, length: int, n_items: int, opts) -> dict:
    row = dict(step=step, device=device, backend=backend, batch=batch, length=length, n_items=n_items)
    try:
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        model = make_model(n_items, backend, device)
        data = random_batch(batch, length, n_items, device)
        # the first call apart: it compiles (ttt_compiled) or warms up; compile_s = first call − steady median
        first = time_step(STEPS[step], model, data, STEP_TTT[step], 1, 0, opts.budget)[0]
        times = time_step(STEPS[step], model, data, STEP_TTT[step], opts.reps, opts.warmup, opts.budget)
        median = statistics.median(times)
        row.update(median_s=median, batches_per_s=1.0 / median, reps=len(times), times_s=times, first_call_s=first,
                   compile_s=first - median if step.endswith("_compiled") else None)
        if device == "cuda":
            row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    except Exception as exc:                      # record and go on: one broken case must not lose the others
        row["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        if device == "cuda":
            torch.cuda.empty_cache()
    return row


def profile_triton_step(batch: int, length: int, n_items: int, rows: int = 15) -> str:
    """Top CUDA ops of one triton-backend test-time step (after a warm-up step)."""
    from torch.profiler import ProfilerActivity, profile
    model = make_model(n_items, "triton", "cuda")
    data = random_batch(batch, length, n_items, "cuda")
    ttt_step(model, data, TTTConfig())
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        ttt_step(model, data, TTTConfig())
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows)


def format_rows(rows: list) -> str:
    head = f"{'step':<12} {'device':<6} {'backend':<10} {'batch':>6} {'L':>4} {'items':>6} {'batches/s':>10} " \
           f"{'median s':>9} {'reps':>4} {'peak GiB':>8} {'vs eager':>8} {'compile s':>9}"
    eager = {(r["device"], r["backend"], r["batch"]): r["median_s"] for r in rows
             if r["step"] == "ttt" and "error" not in r}
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['step']:<12} {r['device']:<6} {r['backend']:<10} {r['batch']:>6} {r['length']:>4} "
                         f"{r['n_items']:>6}  ERROR {r['error'][:80]}")
            continue
        mem = f"{r['peak_mem_gib']:.2f}" if "peak_mem_gib" in r else "-"
        base = eager.get((r["device"], r["backend"], r["batch"]))
        ratio = f"{base / r['median_s']:.2f}x" if base and r["step"] == "ttt_compiled" else ""
        compile_s = f"{r['compile_s']:.1f}" if r.get("compile_s") is not None else ""
        lines.append(f"{r['step']:<12} {r['device']:<6} {r['backend']:<10} {r['batch']:>6} {r['length']:>4} "
                     f"{r['n_items']:>6} {r['batches_per_s']:>10.3f} {r['median_s']:>9.4f} {r['reps']:>4} {mem:>8} "
                     f"{ratio:>8} {compile_s:>9}")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_out_argument(p)
    p.add_argument("--batch", type=int, default=4096, help="users per test batch on CUDA")
    p.add_argument("--length", type=int, default=200)
    p.add_argument("--items", type=int, default=3706)
    p.add_argument("--cpu-batch", type=int, default=256, help="users per test batch on CPU")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--budget", type=float, default=10.0, help="seconds of timed reps per case (at least one rep)")
    p.add_argument("--total-budget", type=float, default=75.0, help="start no new case after this many seconds")
    p.add_argument("--cpu", action="store_true", help="also run the CPU cases when CUDA is present")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the ttt_compiled case")
    return p.parse_args(argv)


def plan(opts) -> list:
    """Cases in priority order (the GPU check gives this script ~100 s): the test-time step on both backends, the
    profile, then plain inference; CPU cases only without CUDA or with --cpu."""
    cases = []
    if torch.cuda.is_available():
        cases += [("ttt", "cuda", "triton", opts.batch), ("ttt_compiled", "cuda", "triton", opts.batch),
                  ("ttt", "cuda", "reference", opts.batch)]
        if not opts.no_profile:
            cases.append(("profile", "cuda", "triton", opts.batch))
        cases += [("plain", "cuda", "triton", opts.batch), ("plain", "cuda", "reference", opts.batch),
                  ("ttt_user", "cuda", "reference", opts.batch)]
    if not torch.cuda.is_available() or opts.cpu:
        cases += [("ttt", "cpu", "reference", opts.cpu_batch), ("ttt_compiled", "cpu", "reference", opts.cpu_batch),
                  ("plain", "cpu", "reference", opts.cpu_batch),
                  ("ttt_user", "cpu", "reference", opts.cpu_batch)]
    return cases


def main(argv=None) -> int:
    opts = parse_args(argv)
    STEP_TTT["ttt_compiled"] = TTTConfig(ttt_compile=True, ttt_compile_backend=opts.compile_backend)
    result = dict(meta=environment(), ttt=vars(TTTConfig()), rows=[])
    started = time.perf_counter()
    for step, device, backend, batch in plan(opts):
        if time.perf_counter() - started > opts.total_budget:
            result["rows"].append(dict(step=step, device=device, backend=backend, batch=batch, length=opts.length,
                                       n_items=opts.items, error="skipped: --total-budget spent"))
        elif step == "profile":
            try:
                result["profile_triton_top_cuda_ops"] = profile_triton_step(batch, opts.length, opts.items)
                print(result["profile_triton_top_cuda_ops"], flush=True)
            except Exception as exc:
                result["profile_error"] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
        else:
            result["rows"].append(run_case(step, device, backend, batch, opts.length, opts.items, opts))
            print(format_rows(result["rows"][-1:]).splitlines()[-1], flush=True)
        # written after every case: a run cut short by a time limit still leaves what it measured
        path = write_json(opts.out, "bench_ttt.json", result)
    print(f"\nTest-time step throughput (batches/s), {result['meta'].get('device', result['meta']['cpu'])}, "
          f"torch {torch.__version__}; 'ttt' = forward + L_time/L_state + backward + adapted forward + full "
          f"ranking, 'plain' = forward + full ranking")
    print(format_rows(result["rows"]))
    if "profile_triton_top_cuda_ops" in result:
        print("\nTop CUDA ops of one triton-backend test-time step:")
        print(result["profile_triton_top_cuda_ops"])
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
