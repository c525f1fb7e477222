"""One training epoch at the paper's ML-1M shape: eager vs torch.compile, float32 and bf16 autocast.

6,040 users × L 200 × 3,706 items (synthetic ids and times: the shape is what costs, not the data), T2ARec with
the default sizes (d 64, d_state 32, one block), μ1 = μ2 = 0.1 (every loss term on), Adam, batch --batch. One epoch =
ceil(users / batch) optimizer steps through `model.losses` (the training path of `t2arec_fast.train`; with
--compile the loss module is compiled as `train.fit` does). Each case: one untimed step first (compilation, reported
apart as compile s), then the epoch, timed (CUDA synchronised). bf16 rows use torch.autocast like `amp: true`.

Prints a table and writes bench_epoch.json into --out DIR. Run from the repository root: python -m bench.bench_epoch
(--dry: tiny shapes on CPU, aot_eager compile — checks the script, numbers not to quote).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import traceback

import torch

from bench.harness import add_out_argument, environment, write_json


def synthetic_epoch(users: int, length: int, n_items: int, seed: int = 0):
    """LEFT-padded item ids (users, L), increasing int64 times, next items and target times."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, n_items + 1, (users, length + 1), generator=g)
    lengths = torch.randint(length // 2, length + 2, (users,), generator=g)
    pad = torch.arange(length + 1)[None, :] < (length + 1 - lengths)[:, None]
    items = items.masked_fill(pad, 0)
    times = (1_700_000_000 + torch.exp(torch.rand(users, length + 1, generator=g) * 12).long().cumsum(1))
    times = times.masked_fill(pad, 0)
    return items[:, :-1], times[:, :-1], items[:, 1:], times[:, -1]


def run_case(opts, device, compiled: bool, dtype: str) -> dict:
    from t2arec_fast.compiled import compile_fn
    from t2arec_fast.config import ModelConfig
    from t2arec_fast.model import build_model
    row = dict(compiled=compiled, dtype=dtype, device=str(device), users=opts.users, length=opts.length,
               items=opts.items, batch=opts.batch)
    try:
        torch.manual_seed(0)
        model = build_model(ModelConfig(d=opts.d, d_state=opts.d_state), opts.items, opts.length).to(device).train()
        model.set_time_margin(1.0)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        losses = compile_fn(model.losses, opts.compile_backend) if compiled else model.losses
        data = [t.to(device) for t in synthetic_epoch(opts.users, opts.length, opts.items)]
        autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")

        def step(lo, hi):
            with autocast:
                out = losses(*(t[lo:hi] for t in data))
            loss = out["rec"] + 0.1 * out["time"] + 0.1 * out["state"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize()
        t0 = time.perf_counter()
        step(0, opts.batch)
        sync()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for lo in range(0, opts.users, opts.batch):
            step(lo, lo + opts.batch)
        sync()
        epoch = time.perf_counter() - t0
        steady_step = epoch / math.ceil(opts.users / opts.batch)
        row.update(epoch_s=epoch, first_step_s=first, compile_s=first - steady_step if compiled else None)
        if device.type == "cuda":
            row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    except Exception as exc:                        # record and go on: the other cases still run
        row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        traceback.print_exc()
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    return row


def format_rows(rows) -> str:
    eager = {(r["dtype"]): r["epoch_s"] for r in rows if not r["compiled"] and "epoch_s" in r}
    lines = [f"{'mode':<9} {'dtype':<6} {'device':<7} {'epoch s':>8} {'vs eager':>8} {'compile s':>9}"]
    for r in rows:
        mode = "compiled" if r["compiled"] else "eager"
        if "error" in r:
            lines.append(f"{mode:<9} {r['dtype']:<6} {r['device']:<7} ERROR {r['error'][:90]}")
            continue
        ratio = f"{eager[r['dtype']] / r['epoch_s']:.2f}x" if r["compiled"] and r["dtype"] in eager else ""
        comp = f"{r['compile_s']:.1f}" if r["compile_s"] is not None else ""
        lines.append(f"{mode:<9} {r['dtype']:<6} {r['device']:<7} {r['epoch_s']:>8.3f} {ratio:>8} {comp:>9}")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_out_argument(p)
    p.add_argument("--users", type=int, default=6040)
    p.add_argument("--length", type=int, default=200)
    p.add_argument("--items", type=int, default=3706)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--d-state", type=int, default=32)
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument("--dry", action="store_true", help="tiny shapes on CPU, aot_eager (checks the script)")
    opts = p.parse_args(argv)
    if opts.dry:
        opts.users, opts.length, opts.items, opts.batch, opts.d, opts.d_state = 48, 16, 50, 16, 16, 8
        opts.compile_backend = "aot_eager"
    return opts


def main(argv=None) -> int:
    opts = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not opts.dry else "cpu")
    rows = []
    for compiled in (False, True):                  # eager rows first: a time limit then cuts compiled ones only
        for dtype in ("fp32", "bf16"):
            rows.append(run_case(opts, device, compiled, dtype))
            print(format_rows(rows[-1:]).splitlines()[-1], flush=True)
            path = write_json(opts.out, "bench_epoch.json", dict(machine=environment(), settings=vars(opts) | {
                "out": str(opts.out)}, rows=rows))
    print(f"\none training epoch: {opts.users} users x L {opts.length} x {opts.items} items, batch {opts.batch}")
    print(format_rows(rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
