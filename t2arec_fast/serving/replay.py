"""Offline replay of an event log (what `t2arec serve-replay` runs): recommend before each event, then observe it."""
from __future__ import annotations

import time

import numpy as np

from t2arec_fast.errors import InputError
from t2arec_fast.metrics import metrics_from_ranks
from t2arec_fast.progress import progress_bar

from .events import int64_array
from .recommender import OnlineRecommender

__all__ = ["replay"]


def replay(recommender: OnlineRecommender, user_ids, item_ids, timestamps, k: int = 10, exclude_seen: bool = False,
           progress: bool = False) -> dict:
    """Replay events in timestamp order (ties in the given order), one at a time, as a live system would see them:
    recommend for the event's user first, score whether the true item is in the top-k, then observe the event.

    user_ids, item_ids (model ids), timestamps (unix seconds): (n,) int64. Returns hit rate@k and NDCG@10 over all
    events, over "warm" events (the user had history) and the number of cold ones, plus per-event latency
    percentiles (ms) of recommend and observe, events per second and the recommender's stats(). Source:
    docs/serving.md, "`t2arec serve-replay`".

    Raises:
        InputError: arrays of different lengths or empty, or anything observe() / recommend() refuses.
    """
    users = int64_array(user_ids, "user_ids")
    items = int64_array(item_ids, "item_ids")
    times = int64_array(timestamps, "timestamps")
    if not (len(users) == len(items) == len(times)) or len(users) == 0:
        raise InputError(f"replay: need equal, non-zero numbers of users, items and timestamps "
                         f"({len(users)}, {len(items)}, {len(times)})")
    order = np.argsort(times, kind="stable")
    depth = max(k, 10)
    ranks = np.full(len(order), depth, np.int64)            # depth = "not in the list"
    warm = np.zeros(len(order), bool)
    t_rec = np.empty(len(order))
    t_obs = np.empty(len(order))
    clock = time.perf_counter
    for n, e in enumerate(_progress(order, progress)):
        u, i, t = users[e:e + 1], items[e:e + 1], times[e:e + 1]
        warm[n] = u[0] in recommender
        start = clock()
        top, _ = recommender.recommend(u, k=depth, exclude_seen=exclude_seen, at_time=int(t[0]))
        t_rec[n] = clock() - start
        start = clock()
        recommender.observe(u, i, t)
        t_obs[n] = clock() - start
        where = np.flatnonzero(top[0] == i[0])
        if len(where):
            ranks[n] = where[0]
    return {"events": len(order), "k": k, "exclude_seen": exclude_seen,
            **_replay_metrics(ranks, k, ""), **_replay_metrics(ranks[warm], k, "warm_"),
            "warm_events": int(warm.sum()), "cold_events": int((~warm).sum()),
            "latency_ms": {"recommend": _percentiles(t_rec), "observe": _percentiles(t_obs)},
            "events_per_s": len(order) / float(t_rec.sum() + t_obs.sum()), "stats": recommender.stats()}


def _replay_metrics(ranks: np.ndarray, k: int, prefix: str) -> dict:
    """hit@k (= Recall@k: one true item per event) and NDCG@10 from 0-based ranks, by metrics.py (NaN if none)."""
    m = metrics_from_ranks(ranks, ks=sorted({k, 10}))
    return {f"{prefix}hit@{k}": m[f"recall@{k}"], f"{prefix}ndcg@10": m["ndcg@10"]}


def _percentiles(seconds: np.ndarray) -> dict:
    ms = seconds * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean())}


def _progress(iterable, enabled: bool):
    if not enabled:
        return iterable
    return progress_bar(iterable, "replay", unit="event")
