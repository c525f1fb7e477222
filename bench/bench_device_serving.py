"""Serving from the device tier: events/s and per-call latency (p50, p99) of observe + top-10 at batch 1, 64, 4096.

`DeviceRecommender` (t2arec_fast/serving/device_tier.py): users' states in device slot pools advanced in place by
the pooled one-step kernel, top-k on the device. The model: T2ARec with the default sizes on the ML-1M item count
(3,706), random weights (speed does not depend on them). --users users (default 100,000, all resident: slots =
users) each get one warm-up event; then each timed call observes one new event for `batch` distinct users and
asks for their top-10 — one request round trip of a serving process. events/s = batch / median latency.

Prints a table and writes bench_device_serving.json into --out DIR. Run from the repository root:
python -m bench.bench_device_serving (--dry: tiny shapes on CPU with the kernels in Triton's interpreter if
TRITON_INTERPRET=1 — checks the script, numbers not to quote).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import traceback

import numpy as np
import torch

from bench.harness import add_out_argument, environment, timed, write_json


def run_batch(rec, n_users: int, batch: int, reps: int, rng, clock: list) -> dict:
    """clock: [last event time], shared by every batch size (a user's events must not go back in time)."""
    row = dict(batch=batch)
    try:

        def call():
            users = rng.choice(n_users, batch, replace=False).astype(np.int64)
            clock[0] += 1
            rec.observe(users, rng.integers(1, rec.n_items + 1, batch), np.full(batch, clock[0], np.int64))
            rec.recommend(users, k=10)
        seconds = timed(call, reps, warmup=2, budget_s=20.0)["wall"]
        p50 = statistics.median(seconds)
        row.update(reps=len(seconds), p50_ms=1e3 * p50, p99_ms=1e3 * float(np.percentile(seconds, 99)),
                   events_per_s=batch / p50)
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        traceback.print_exc()
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_out_argument(p)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--items", type=int, default=3706)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 4096])
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--dry", action="store_true", help="tiny shapes on CPU (checks the script)")
    opts = p.parse_args(argv)
    if opts.dry:
        opts.users, opts.items, opts.batches, opts.reps = 300, 50, [1, 8, 64], 5
    from t2arec_fast.model import T2ARec
    from t2arec_fast.serving.device_tier import DeviceRecommender
    device = "cuda" if torch.cuda.is_available() and not opts.dry else "cpu"
    torch.manual_seed(0)
    model = T2ARec(opts.items) if not opts.dry else T2ARec(opts.items, d=16, d_state=8)
    model.set_backend("triton" if device == "cuda" else "auto")
    rec = DeviceRecommender(model, slots=opts.users, device=device, capacity_bytes=64 << 20)
    rng = np.random.default_rng(0)
    for lo in range(0, opts.users, 4096):                         # warm-up: every user resident with one event
        users = np.arange(lo, min(lo + 4096, opts.users), dtype=np.int64)
        rec.observe(users, rng.integers(1, opts.items + 1, len(users)), np.full(len(users), 1_800_000_000))
    clock = [1_800_000_000]
    rows = [run_batch(rec, opts.users, b, opts.reps, rng, clock) for b in opts.batches if b <= opts.users]
    result = dict(machine=environment(), settings=vars(opts) | {"out": str(opts.out), "device": device}, rows=rows)
    path = write_json(opts.out, "bench_device_serving.json", result)
    print(f"device-tier serving on {device}: {opts.users} resident users, {opts.items} items, observe + top-10 "
          f"per call")
    print(f"{'batch':>6} {'events/s':>12} {'p50 ms':>9} {'p99 ms':>9} {'reps':>5}")
    for r in rows:
        if "error" in r:
            print(f"{r['batch']:>6} ERROR {r['error'][:90]}")
            continue
        print(f"{r['batch']:>6} {r['events_per_s']:>12,.0f} {r['p50_ms']:>9.3f} {r['p99_ms']:>9.3f} {r['reps']:>5}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
