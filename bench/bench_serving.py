"""Online serving speed on CPU: the O(1) path (cached state + one step) against re-encoding the last 200 events.

    python -m bench.bench_serving [--quick] [--threads 1] [--out DIR]     # writes DIR/bench_serving.json

Model: ml-100k-sized T2ARec (n_items 1682, d 64, d_state 32, 1 block), random weights, eval mode, float32.
Every user starts with 199 observed events, so after the first measured event both paths see exactly 200 events
and must give the same answer (checked and reported). One "event → answer" is observe(event) + recommend(k=10) for
the O(1) path, and encode(last 200 events) + score + top-10 for the re-encode path (given ready-made tensors, which
flatters it: fetching the histories is not timed). Both run with denormals flushed to zero, as the recommender
does by default (see OnlineRecommender's flush_denormal).

Reported: per-event latency p50/p99 for one user; events/s at batches of 1, 64, 1024 users; the speed-up at each
batch (target ≥ 20× at 64); memory per cached user; where the O(1) path's time goes; what a request costs when
each of its users gets a per-user test-time step (OnlineRecommender(ttt=...), O(history) work per user). Runs of
the two paths are interleaved so that a busy machine slows both alike; each number is the median over runs,
warm-up excluded.
"""
from __future__ import annotations

import contextlib
import statistics
import sys
import time

import numpy as np
import torch

from bench.harness import cpu_benchmark_options, environment, timed, write_json
from t2arec_fast.cache import StateCache
from t2arec_fast.model import T2ARec
from t2arec_fast.serving import HEADER_WORDS, OnlineRecommender

N_ITEMS, D, D_STATE, HISTORY = 1682, 64, 32, 200
BATCHES = (1, 64, 1024)
T0 = 1_700_000_000


def build(n_users: int, seed: int = 0):
    torch.manual_seed(seed)
    model = T2ARec(N_ITEMS, d=D, d_state=D_STATE, n_layers=1).eval()
    rec = OnlineRecommender(model, capacity_bytes=1 << 30, history_len=HISTORY)
    rng = np.random.default_rng(seed)
    users = np.arange(n_users, dtype=np.int64) * 7919 + 13            # sparse ids, like real ones
    for j in range(HISTORY - 1):                                       # 199 events each, one batched call per event
        rec.observe(users, rng.integers(1, N_ITEMS + 1, n_users), np.full(n_users, T0 + 60 * j))
    return model, rec, users, rng


class Clock:
    """Gives each observed event a later time than the last, so the recommender accepts it."""
    def __init__(self):
        self.t = T0 + 60 * HISTORY

    def next(self, n: int) -> np.ndarray:
        self.t += 1
        return np.full(n, self.t, np.int64)


def o1_answer(rec, users, items, clock):
    rec.observe(users, items, clock.next(len(users)))
    return rec.recommend(users, k=10)


@torch.inference_mode()
def reencode_answer(model, items, times):
    with flushed_denormals():                # the same float mode the recommender uses: a like-for-like race
        top = torch.topk(model.score_from(model.encode(items, times)[0]), 10, dim=1)
    return top.indices.numpy(), top.values.numpy()


@contextlib.contextmanager
def flushed_denormals():
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def last_events(rec, users):
    items, times = rec.history.recent(rec.history.rows_of(users))
    return torch.from_numpy(items), torch.from_numpy(times)


def check_same_answers(model, rec, users, rng, clock) -> dict:
    """After the 200th event: top-10 of the O(1) path vs re-encoding those 200 events."""
    items, scores = o1_answer(rec, users, rng.integers(1, N_ITEMS + 1, len(users)), clock)
    ref_items, ref_scores = reencode_answer(model, *last_events(rec, users))
    return {"users": len(users), "top10_identical_fraction": float((items == ref_items).all(1).mean()),
            "max_rel_score_diff": float((np.abs(scores - ref_scores) / np.abs(ref_scores).max(1, keepdims=True)).max())}


CLOCKS = ("wall", "cpu")     # wall-clock, and this thread's CPU time (steadier when other processes share the cores)


def timed_both(fn, calls: int) -> dict:
    """Seconds per call on both clocks: {"wall": [...], "cpu": [...]}."""
    return timed(fn, calls, clocks=CLOCKS)


def single_user_latency(rec, users, rng, clock, runs: int, calls: int) -> dict:
    """p50/p99 ms of one user's observe and recommend: per run, then the median over runs (run 0 = warm-up)."""
    u = users[:1]
    per_run = {(name, c): [] for name in ("observe", "recommend") for c in CLOCKS}
    for run in range(runs + 1):
        obs = timed_both(lambda: rec.observe(u, rng.integers(1, N_ITEMS + 1, 1), clock.next(1)), calls)
        recm = timed_both(lambda: rec.recommend(u, k=10), calls)
        if run:
            for c in CLOCKS:
                per_run["observe", c].append(np.percentile(obs[c], [50, 99]) * 1e3)
                per_run["recommend", c].append(np.percentile(recm[c], [50, 99]) * 1e3)
    return {f"{name}_{c}": {"p50_ms": float(np.median([x[0] for x in v])),
                             "p99_ms": float(np.median([x[1] for x in v]))} for (name, c), v in per_run.items()}


def throughput(model, rec, users, rng, clock, batch: int, runs: int, calls_o1: int, calls_re: int) -> dict:
    """events/s of event → answer for both paths (and observe alone), on both clocks; runs interleave the paths."""
    u = users[:batch]
    rates = {(path, c): [] for path in ("o1", "observe", "reencode") for c in CLOCKS}
    for run in range(runs + 1):                                        # run 0 = warm-up
        t = {"o1": timed_both(lambda: o1_answer(rec, u, rng.integers(1, N_ITEMS + 1, batch), clock), calls_o1),
             "observe": timed_both(lambda: rec.observe(u, rng.integers(1, N_ITEMS + 1, batch), clock.next(batch)),
                              calls_o1)}
        items, times = last_events(rec, u)
        t["reencode"] = timed_both(lambda: reencode_answer(model, items, times), calls_re)
        if run:
            for (path, c), v in rates.items():
                v.append(batch / statistics.median(t[path][c]))
    out = {"batch": batch}
    for c in CLOCKS:
        med = {path: statistics.median(rates[path, c]) for path in ("o1", "observe", "reencode")}
        out[c] = {"o1_events_per_s": med["o1"], "o1_observe_only_events_per_s": med["observe"],
                  "reencode200_events_per_s": med["reencode"], "speedup": med["o1"] / med["reencode"]}
    return out


def breakdown(model, rec, users, rng, batch: int, calls: int) -> dict:
    """CPU µs per call of the pieces of one O(1) event → answer, measured one by one on the same batch."""
    from t2arec_fast.serving.events import group_events
    u = users[:batch]
    found, flat = rec.cache.get(u, rec.version)
    states, o = rec.layout.views(torch.from_numpy(flat))
    ids = torch.from_numpy(rng.integers(1, N_ITEMS + 1, batch))
    med = lambda fn: statistics.median(timed_both(fn, calls)["cpu"]) * 1e6        # noqa: E731
    with torch.inference_mode(), flushed_denormals():
        parts = {"cache_get": med(lambda: rec.cache.get(u, rec.version)),
                 "model_step": med(lambda: model.step(ids, states)),
                 "score_topk": med(lambda: torch.topk(model.score_from(o), 10, dim=1)),
                 "cache_put": med(lambda: rec.cache.put(u, flat, rec.version)),
                 "group_and_lookup": med(lambda: (group_events(u), rec.history.rows_of(u)))}
    return {k: round(v, 1) for k, v in parts.items()}


def ttt_requests(rec, users, clock, quick: bool) -> list:
    """ms per recommend call when every user in it gets a per-user test-time step (paper settings: all parameters,
    α 0.005, μ' 0.1) on its 200-event ring, vs the plain O(1) recommend of the same users; median of calls."""
    from t2arec_fast.config import TTTConfig
    rows = []
    for b in (1, 16) if quick else (1, 64):
        u = users[:b]
        at = np.full(b, clock.t + 3600, np.int64)                 # an hour after each user's last event
        plain = timed_both(lambda: rec.recommend(u, k=10), 5)
        rec.set_ttt(TTTConfig())
        rec.recommend(u, k=10, at_time=at)                        # warm-up: the first per-user step is slower
        adapted = timed_both(lambda: rec.recommend(u, k=10, at_time=at), 2 if quick else 5)
        rec.set_ttt(None)
        rows.append({"batch": b, **{f"{c}_ms": {"plain": 1e3 * statistics.median(plain[c]),
                                                "adapted": 1e3 * statistics.median(adapted[c])} for c in CLOCKS}})
    return rows


def full_cache_bytes_per_user(state_size: int, dtype: str, budget: int = 64 << 20) -> float:
    """Fill a cache past its budget, then bytes / entries: the real cost of one more cached user."""
    cache = StateCache(state_size, budget, dtype=dtype)
    per_put = 1000
    states = np.random.default_rng(0).standard_normal((per_put, state_size)).astype(np.float32)
    bytes_per_float = 4 if dtype == "float32" else 2
    for start in range(0, 2 * budget // (state_size * bytes_per_float), per_put):
        cache.put(np.arange(start, start + per_put), states, 1)
    st = cache.stats()
    return st["bytes"] / st["entries"]


def memory(rec) -> dict:
    raw = rec.layout.size * 4
    per_user = full_cache_bytes_per_user(rec.layout.size, "float32")
    return {"state_floats": rec.layout.size, "raw_vector_bytes": raw,
            "of_which_model_state_bytes": (rec.layout.size - HEADER_WORDS - D) * 4,
            "cache_bytes_per_user": per_user, "cache_overhead_ratio": per_user / raw,
            "cache_bytes_per_user_float16": full_cache_bytes_per_user(rec.layout.size, "float16"),
            "history_bytes_per_user": (rec.history.items.itemsize + rec.history.times.itemsize) * HISTORY + 24}


def main(argv=None) -> int:
    args = cpu_benchmark_options(__doc__.split("\n")[0], argv, "fewer users and runs (a smoke run)")
    runs = 2 if args.quick else 7
    batches = (1, 64) if args.quick else BATCHES
    info = environment()
    start = time.perf_counter()
    model, rec, users, rng = build(max(batches))
    clock = Clock()
    print(f"set-up: {len(users)} users × {HISTORY - 1} events in {time.perf_counter() - start:.1f} s", flush=True)
    result = {"machine": info, "config": {"n_items": N_ITEMS, "d": D, "d_state": D_STATE, "n_layers": 1,
                                          "history": HISTORY, "runs": runs, "quick": args.quick}}
    result["same_answers"] = check_same_answers(model, rec, users, rng, clock)
    result["single_user_latency"] = single_user_latency(rec, users, rng, clock, runs, 30 if args.quick else 100)
    result["throughput"] = []
    for b in batches:
        calls_o1 = {1: 100, 64: 30, 1024: 4}[b] // (4 if args.quick else 1) or 1
        calls_re = {1: 10, 64: 2, 1024: 1}[b]
        result["throughput"].append(throughput(model, rec, users, rng, clock, b, runs, calls_o1, calls_re))
        print(f"batch {b}: done", flush=True)
    result["breakdown_us_batch64"] = breakdown(model, rec, users, rng, 64, 50)
    result["breakdown_us_batch1"] = breakdown(model, rec, users, rng, 1, 100)
    result["ttt_requests"] = ttt_requests(rec, users, clock, args.quick)
    result["memory"] = memory(rec)
    result["wall_s"] = time.perf_counter() - start
    print_table(result)
    print(f"wrote {write_json(args.out, 'bench_serving.json', result)}")
    return 0


def print_table(r: dict) -> None:
    m = r["machine"]
    print(f"\n{m['cpu']} ({m['cpus']} cores, load {m['load_average'][0]:.1f}), torch {m['torch']}, "
          f"{m['torch_threads']} thread(s), {m['date']}")
    s = r["same_answers"]
    print(f"same answers after 200 events: top-10 identical for {s['top10_identical_fraction']:.1%} of "
          f"{s['users']} users, max relative score difference {s['max_rel_score_diff']:.2e}")
    lat = r["single_user_latency"]
    for c in CLOCKS:
        print(f"one user, per event ({c}): observe p50 {lat[f'observe_{c}']['p50_ms']:.3f} ms / p99 "
              f"{lat[f'observe_{c}']['p99_ms']:.3f} ms; recommend p50 {lat[f'recommend_{c}']['p50_ms']:.3f} ms / "
              f"p99 {lat[f'recommend_{c}']['p99_ms']:.3f} ms")
    print(f"\n{'clock':>5} {'batch':>6} {'O(1) ev/s':>12} {'observe ev/s':>13} {'re-encode ev/s':>15} {'speed-up':>9}")
    for c in CLOCKS:
        for t in r["throughput"]:
            x = t[c]
            print(f"{c:>5} {t['batch']:>6} {x['o1_events_per_s']:>12,.0f} {x['o1_observe_only_events_per_s']:>13,.0f} "
                  f"{x['reencode200_events_per_s']:>15,.0f} {x['speedup']:>8.1f}×")
    print(f"\nO(1) pieces, CPU µs per call: batch 64 {r['breakdown_us_batch64']}; batch 1 {r['breakdown_us_batch1']}")
    for t in r["ttt_requests"]:
        print(f"recommend for {t['batch']} user(s), CPU ms: plain {t['cpu_ms']['plain']:.2f}, with a per-user "
              f"test-time step {t['cpu_ms']['adapted']:.2f} ({t['cpu_ms']['adapted'] / t['cpu_ms']['plain']:.0f}×)")
    mem = r["memory"]
    print(f"memory per cached user: {mem['cache_bytes_per_user']:,.0f} B in the cache for a "
          f"{mem['raw_vector_bytes']:,} B "
          f"vector ({mem['cache_overhead_ratio']:.3f}×; float16 cache {mem['cache_bytes_per_user_float16']:,.0f} B) "
          f"+ {mem['history_bytes_per_user']:,} B of history ring")


if __name__ == "__main__":
    sys.exit(main())
