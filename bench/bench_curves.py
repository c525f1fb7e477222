"""Latency curves on CPU: serving one more event vs batch size, and re-encoding vs history length, as PNG + JSON.

    python -m bench.bench_curves [--quick] [--threads 1] [--out DIR]

Model and paths are bench_serving.py's (ml-100k-sized T2ARec, random weights, float32, denormals flushed):
  vs batch   event → answer per call for the O(1) path (cached state + one step + top-10) and for re-encoding the
             last 200 events, batches 1 … 1024 (bench_serving.throughput, runs interleaved, median over runs).
  vs length  encode + score + top-10 of L events (L = 10 … 800) at batch 1 and 64 in eager PyTorch, beside the
             O(1) path's one step at the same batch, which does not depend on L.
Both clocks are kept (wall and this thread's CPU time); the plot uses CPU time, steadier on a shared machine.
Writes latency_curves.json and latency_curves.png into --out DIR (default $OUT, else bench/results).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from bench.bench_serving import CLOCKS, N_ITEMS, Clock, build, flushed_denormals, throughput, timed_both
from bench.harness import cpu_benchmark_options, environment, write_json

BATCHES = (1, 4, 16, 64, 256, 1024)
LENGTHS = (10, 25, 50, 100, 200, 400, 800)


def vs_batch(model, rec, users, rng, runs: int, batches) -> list:
    clock = Clock()
    rows = []
    for b in batches:
        calls_o1 = max(2, 200 // b)
        calls_re = max(1, 20 // b)
        t = throughput(model, rec, users, rng, clock, b, runs, calls_o1, calls_re)
        rows.append({"batch": b, **{c: {"o1_ms_per_call": 1e3 * b / t[c]["o1_events_per_s"],
                                        "reencode200_ms_per_call": 1e3 * b / t[c]["reencode200_events_per_s"],
                                        "speedup": t[c]["speedup"]} for c in CLOCKS}})
        print(f"batch {b:>5}: O(1) {rows[-1]['cpu']['o1_ms_per_call']:.3f} ms, re-encode 200 "
              f"{rows[-1]['cpu']['reencode200_ms_per_call']:.3f} ms per call (CPU)", flush=True)
    return rows


@torch.inference_mode()
def vs_length(model, runs: int, batches, lengths, seed: int = 0) -> list:
    """ms per call of encode+score+top-10 over L events, and of step+score+top-10, interleaved per run."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in batches:
        step_ids = torch.randint(1, N_ITEMS + 1, (b,), generator=g)
        states = model.encode(torch.randint(1, N_ITEMS + 1, (b, 5), generator=g),
                              torch.arange(5).repeat(b, 1) + 1_700_000_000)[1]
        for length in lengths:
            items = torch.randint(1, N_ITEMS + 1, (b, length), generator=g)
            times = torch.arange(length).repeat(b, 1) * 60 + 1_700_000_000
            calls = max(1, 40 // b)
            per_run = {(p, c): [] for p in ("encode", "step") for c in CLOCKS}
            with flushed_denormals():
                for run in range(runs + 1):                               # run 0 = warm-up
                    enc = timed_both(lambda: torch.topk(model.score_from(model.encode(items, times)[0]), 10, dim=1),
                                     calls)
                    stp = timed_both(lambda: torch.topk(model.score_from(model.step(step_ids, states)[0]), 10, dim=1),
                                     max(calls, 10))
                    if run:
                        for c in CLOCKS:
                            per_run["encode", c].append(statistics.median(enc[c]) * 1e3)
                            per_run["step", c].append(statistics.median(stp[c]) * 1e3)
            rows.append({"batch": b, "length": length,
                         **{c: {f"{p}_ms_per_call": statistics.median(per_run[p, c]) for p in ("encode", "step")}
                            for c in CLOCKS}})
            print(f"batch {b:>4} L {length:>4}: encode {rows[-1]['cpu']['encode_ms_per_call']:.3f} ms, "
                  f"one step {rows[-1]['cpu']['step_ms_per_call']:.3f} ms (CPU)", flush=True)
    return rows


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    rows = result["vs_batch"]
    batches = [r["batch"] for r in rows]
    left.loglog(batches, [r["cpu"]["reencode200_ms_per_call"] for r in rows], "o-", label="re-encode last 200 events")
    left.loglog(batches, [r["cpu"]["o1_ms_per_call"] for r in rows], "s-", label="O(1): cached state + one step")
    left.set_xlabel("users per call (batch)")
    left.set_ylabel("ms per call (CPU time)")
    left.set_title("one more event → top-10, vs batch")
    for b in sorted({r["batch"] for r in result["vs_length"]}):
        rows = [r for r in result["vs_length"] if r["batch"] == b]
        lengths = [r["length"] for r in rows]
        line, = right.loglog(lengths, [r["cpu"]["encode_ms_per_call"] for r in rows], "o-",
                             label=f"encode L events, batch {b}")
        right.loglog(lengths, [r["cpu"]["step_ms_per_call"] for r in rows], "s--", color=line.get_color(),
                     label=f"one step, batch {b}")
    right.set_xlabel("history length L (events)")
    right.set_title("encode vs one step, vs history length")
    left.set_xticks(batches, [str(b) for b in batches])
    right.set_xticks(lengths, [str(n) for n in lengths])
    right.minorticks_off()
    left.minorticks_off()
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    m = result["machine"]
    fig.suptitle(f"T2ARec (1,682 items, d 64, d_state 32), {m['cpu']}, {m['torch_threads']} thread, "
                 f"torch {m['torch']}, {m['date'][:10]}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = cpu_benchmark_options(__doc__.split("\n")[0], argv, "fewer shapes and runs (a smoke run)")
    runs = 2 if args.quick else 5
    batches = (1, 16) if args.quick else BATCHES
    start = time.perf_counter()
    result = {"machine": environment(), "runs": runs}
    model, rec, users, rng = build(max(batches))
    result["vs_batch"] = vs_batch(model, rec, users, rng, runs, batches)
    result["vs_length"] = vs_length(model, runs, (1, 64), (10, 50) if args.quick else LENGTHS)
    result["wall_s"] = time.perf_counter() - start
    out = Path(args.out)
    write_json(out, "latency_curves.json", result)
    try:
        plot(result, out / "latency_curves.png")
    except ImportError:
        print("matplotlib not installed: no plot")
    print(f"wrote {out / 'latency_curves.json'} and latency_curves.png in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
