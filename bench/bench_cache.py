"""How fast is StateCache, and how much memory does a cached user cost?

Throughput: batch get / get_into / put of random users at 1 and 2 Python threads, in states/s and GB/s of float32
state moved, against the physical reference — numpy fancy indexing of the same bytes out of / into one
(entries, state_size) float32 table (table[rows], np.take(..., out=), table[rows] = states). Cache and reference
alternate within each repetition; medians over the repetitions, the first (warm-up) one dropped; cache/numpy is
the median of the per-repetition ratios.

Memory: a cache filled past its budget, stats()["bytes"] / entries versus the raw state bytes.

    python -m bench.bench_cache            # full run (~1-2 min on 2 cores), bench_cache.json in --out DIR
    python -m bench.bench_cache --quick    # smoke run
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from bench.harness import add_out_argument, environment, write_json
from t2arec_fast.cache import StateCache


# ---- one measurement -------------------------------------------------------------------------------------------

def _run_threads(n_threads: int, work) -> float:
    """Runs work(thread_index) on n threads started together; returns the wall time of the slowest."""
    barrier = threading.Barrier(n_threads + 1)
    threads = [threading.Thread(target=lambda t=t: (barrier.wait(), work(t))) for t in range(n_threads)]
    for th in threads:
        th.start()
    barrier.wait()
    start = time.perf_counter()
    for th in threads:
        th.join()
    return time.perf_counter() - start


def _make_ops(cache: StateCache, table: np.ndarray, batches, states, outs, version: int):
    """Pairs of (cache op, numpy reference op) per operation name; each takes (thread, batch index)."""
    return {
        "get": (lambda t, i: cache.get(batches[t][i], version),
                lambda t, i: table[batches[t][i]]),
        "get_into": (lambda t, i: cache.get_into(batches[t][i], version, outs[t]),
                     lambda t, i: np.take(table, batches[t][i], axis=0, out=outs[t])),
        "put": (lambda t, i: cache.put(batches[t][i], states[t], version),
                lambda t, i: table.__setitem__(batches[t][i], states[t])),
    }


def measure(cache, table, op_name, n_threads, batch, rows_per_thread, reps, rng):
    n_entries, state_size = table.shape
    calls = max(1, rows_per_thread // batch)
    batches = [[rng.integers(0, n_entries, batch) for _ in range(calls)] for _ in range(n_threads)]
    states = [rng.standard_normal((batch, state_size)).astype(np.float32) for _ in range(n_threads)]
    outs = [np.empty((batch, state_size), np.float32) for _ in range(n_threads)]
    cache_op, numpy_op = _make_ops(cache, table, batches, states, outs, version=1)[op_name]

    def loop(op):
        return lambda t: [op(t, i) for i in range(calls)]

    cache_s, numpy_s = [], []
    for rep in range(reps + 1):  # rep 0 warms caches, page tables and the allocator
        c = _run_threads(n_threads, loop(cache_op))
        n = _run_threads(n_threads, loop(numpy_op))
        if rep > 0:
            cache_s.append(c)
            numpy_s.append(n)
    moved = n_threads * calls * batch
    gb = moved * state_size * 4 / 1e9
    c, n = statistics.median(cache_s), statistics.median(numpy_s)
    return {
        "op": op_name, "threads": n_threads, "batch": batch, "dtype": cache.dtype, "states": moved,
        "cache_states_per_s": moved / c, "cache_gb_per_s": gb / c,
        "numpy_states_per_s": moved / n, "numpy_gb_per_s": gb / n,
        # Median of the per-repetition ratios: cache and numpy ran back to back, so the pair shares the machine's
        # momentary load (this 2-core machine is shared) and the ratio is steadier than either absolute number.
        "cache_vs_numpy": statistics.median(nn / cc for cc, nn in zip(cache_s, numpy_s)),
    }


def throughput(args, rng):
    results = []
    table = rng.standard_normal((args.entries, args.state_size)).astype(np.float32)
    for dtype in args.dtypes:
        row_bytes = args.state_size * (2 if dtype == "float16" else 4)
        capacity = int(args.entries * row_bytes * 1.3) + (1 << 20)  # slack: shards fill unevenly
        cache = StateCache(args.state_size, capacity, dtype=dtype)
        ids = np.arange(args.entries, dtype=np.int64)
        for start in range(0, args.entries, 4096):
            cache.put(ids[start:start + 4096], table[start:start + 4096], 1)
        assert len(cache) == args.entries, "the benchmark cache must hold the whole table (all hits)"
        for op in args.ops:
            for n_threads in args.threads:
                for batch in args.batches:
                    rows = args.rows_per_thread if batch > 1 else args.rows_per_thread // 4
                    r = measure(cache, table, op, n_threads, batch, rows, args.reps, rng)
                    results.append(r)
                    print(f"{op:>8} {dtype:>7} threads={n_threads} batch={batch:>5}  "
                          f"cache {r['cache_states_per_s']:>11,.0f} st/s {r['cache_gb_per_s']:6.2f} GB/s   "
                          f"numpy {r['numpy_states_per_s']:>11,.0f} st/s {r['numpy_gb_per_s']:6.2f} GB/s   "
                          f"cache/numpy {r['cache_vs_numpy']:5.2f}", flush=True)
        del cache
    return results


def memory(args, rng):
    results = []
    for state_size in args.memory_state_sizes:
        for dtype in ("float32", "float16"):
            raw = state_size * (2 if dtype == "float16" else 4)
            capacity = 64 << 20
            cache = StateCache(state_size, capacity, dtype=dtype)
            n = int(capacity / raw * 1.2)  # more users than fit: the cache ends full
            block = rng.standard_normal((4096, state_size)).astype(np.float32)
            for start in range(0, n, 4096):
                cache.put(np.arange(start, start + 4096), block, 1)
            s = cache.stats()
            per_user = s["bytes"] / s["entries"]
            results.append({
                "state_size": state_size, "dtype": dtype, "capacity_bytes": capacity, "entries": s["entries"],
                "bytes": s["bytes"], "bytes_per_user": per_user, "raw_state_bytes": raw,
                "ratio_vs_raw": per_user / raw, "ratio_vs_raw_float32": per_user / (state_size * 4),
                "budget_used": s["bytes"] / capacity,
            })
            del cache
    return results


# ---- report ------------------------------------------------------------------------------------------------

def print_tables(tp, mem):
    print("\nThroughput (median; GB/s counts the float32 state bytes handed to / from the caller)")
    print(f"{'op':>8} {'dtype':>7} {'thr':>3} {'batch':>5} | {'cache st/s':>12} {'GB/s':>6} | "
          f"{'numpy st/s':>12} {'GB/s':>6} | {'cache/numpy':>11}")
    for r in tp:
        print(f"{r['op']:>8} {r['dtype']:>7} {r['threads']:>3} {r['batch']:>5} | {r['cache_states_per_s']:>12,.0f} "
              f"{r['cache_gb_per_s']:>6.2f} | {r['numpy_states_per_s']:>12,.0f} {r['numpy_gb_per_s']:>6.2f} | "
              f"{r['cache_vs_numpy']:>11.2f}")
    print("\nMemory per cached user (cache filled past a 64 MiB budget)")
    print(f"{'state_size':>10} {'dtype':>7} | {'entries':>8} {'bytes/user':>10} {'raw':>7} {'ratio':>6} "
          f"{'vs f32 raw':>10} {'budget used':>11}")
    for r in mem:
        print(f"{r['state_size']:>10} {r['dtype']:>7} | {r['entries']:>8} {r['bytes_per_user']:>10.1f} "
              f"{r['raw_state_bytes']:>7} {r['ratio_vs_raw']:>6.3f} {r['ratio_vs_raw_float32']:>10.3f} "
              f"{r['budget_used']:>11.1%}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state-size", type=int, default=2500, help="floats per user (a realistic serving state)")
    p.add_argument("--entries", type=int, default=16384, help="users in the cache and in the numpy table")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--ops", nargs="+", default=["get", "get_into", "put"])
    p.add_argument("--dtypes", nargs="+", default=["float32", "float16"])
    p.add_argument("--rows-per-thread", type=int, default=8192, help="states each thread moves per repetition")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--memory-state-sizes", type=int, nargs="+", default=[64, 512, 2500])
    p.add_argument("--quick", action="store_true", help="small smoke run (numbers not meaningful)")
    add_out_argument(p)
    args = p.parse_args(argv)
    if args.quick:
        args.entries, args.rows_per_thread, args.reps = 2048, 1024, 2
        args.memory_state_sizes = [64, 2500]

    rng = np.random.default_rng(0)
    import pybind11
    env = environment(pybind11=pybind11.__version__)
    tp = throughput(args, rng)
    mem = memory(args, rng)
    print_tables(tp, mem)
    report = {"benchmark": "bench_cache", "environment": env,
              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "throughput": tp, "memory": mem}
    print(f"\nwrote {write_json(args.out, 'bench_cache.json', report)}")


if __name__ == "__main__":
    main()
