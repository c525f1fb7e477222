"""serving/replay.py: replay() of an event log (the `t2arec serve-replay` command is tested in
tests/cli/test_serve_cmd.py)."""
import numpy as np

from t2arec_fast.serving import OnlineRecommender, replay

from .helpers import N_ITEMS, random_log, small_model


def test_replay_api_counts_and_bounds():
    rec = OnlineRecommender(small_model(), capacity_bytes=4 << 20)
    log = np.array(random_log())
    r = replay(rec, log[:, 0], log[:, 1], log[:, 2], k=10)
    assert r["events"] == 120 and r["cold_events"] == 8 and r["warm_events"] == 112
    assert 0 <= r["ndcg@10"] <= r["hit@10"] <= 1
    assert r["latency_ms"]["recommend"]["p50"] <= r["latency_ms"]["recommend"]["p99"]
    assert r["stats"]["events"] == 120
    everything = replay(OnlineRecommender(small_model(), capacity_bytes=4 << 20), log[:, 0], log[:, 1], log[:, 2],
                        k=N_ITEMS)
    assert everything["hit@40"] == 1.0                               # every item is in a full-length list


def test_replay_orders_by_time():
    log = np.array(random_log(40))
    shuffled = log[np.random.default_rng(1).permutation(len(log))]
    a = replay(OnlineRecommender(small_model(), 4 << 20), log[:, 0], log[:, 1], log[:, 2])
    b = replay(OnlineRecommender(small_model(), 4 << 20), shuffled[:, 0], shuffled[:, 1], shuffled[:, 2])
    assert a["hit@10"] == b["hit@10"] and a["ndcg@10"] == b["ndcg@10"]
