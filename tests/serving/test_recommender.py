"""serving/recommender.py: observe() then recommend() gives the full-sequence encoder's scores — event by event,
batched, across evictions and rebuilds, across save/load and across a model swap; recommend()'s arguments, cold
start and exclude_seen; runtime="onnx" answers as the PyTorch runtime. (Input checks of observe(): test_events.py;
the test-time step on request: test_ttt.py.)"""
import json
import tempfile

import numpy as np
import pytest
import torch

from t2arec_fast.cache import StateCache
from t2arec_fast.errors import InputError
from t2arec_fast.model import T2ARec
from t2arec_fast.serving import OnlineRecommender

from .helpers import (INT64_TIMES, N_ITEMS, assert_close_scores, interleaved, random_histories, reference_scores,
                      served_scores, small_model)


def observe_all(rec, histories, per_call=3, seed=1):
    for users, items, times in interleaved(histories, per_call=per_call, seed=seed):
        rec.observe(users, items, times)


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="module")
def histories():
    return random_histories(n_users=40, max_len=30)


def test_event_by_event_equals_full_sequence(model, histories):
    rec = OnlineRecommender(model, capacity_bytes=4 << 20, history_len=64)
    observe_all(rec, histories, per_call=1)
    users = list(histories)
    assert_close_scores(served_scores(rec, users), reference_scores(model, histories, users))
    assert rec.stats()["rebuilds"] == 0 and rec.stats()["events"] == sum(len(h[0]) for h in histories.values())


def test_several_events_per_user_in_one_call_apply_in_order(model, histories):
    one_by_one = OnlineRecommender(model, capacity_bytes=4 << 20, history_len=64)
    observe_all(one_by_one, histories, per_call=1)
    batched = OnlineRecommender(model, capacity_bytes=4 << 20, history_len=64)
    observe_all(batched, histories, per_call=5, seed=7)
    users = list(histories)
    np.testing.assert_allclose(served_scores(batched, users), served_scores(one_by_one, users), rtol=0, atol=1e-5)
    # one call holding a user's whole history, with other users' events interleaved
    u, v = users[:2]
    whole = OnlineRecommender(model, capacity_bytes=4 << 20, history_len=64)
    order = np.argsort(np.r_[np.arange(len(histories[u][0])) * 2.0, np.arange(len(histories[v][0])) * 2.0 + 1],
                       kind="stable")
    ids = np.r_[np.full(len(histories[u][0]), u), np.full(len(histories[v][0]), v)][order]
    whole.observe(ids, np.r_[histories[u][0], histories[v][0]][order], np.r_[histories[u][1], histories[v][1]][order])
    assert_close_scores(served_scores(whole, [u, v]), reference_scores(model, histories, [u, v]))


def test_eviction_then_rebuild_from_the_ring(model, histories):
    layout_size = OnlineRecommender(model, capacity_bytes=4 << 20).layout.size
    tiny = 3 * StateCache.min_capacity_bytes(layout_size)          # room for a handful of users
    rec = OnlineRecommender(model, capacity_bytes=tiny, history_len=64, shards=1)
    observe_all(rec, histories)
    assert rec.stats()["evictions"] > 0 and rec.stats()["rebuilds"] > 0
    users = list(histories)
    assert_close_scores(served_scores(rec, users), reference_scores(model, histories, users))
    # and stepping on from rebuilt states stays exact
    more = {u: (np.array([5, 6]), np.array([2_000_000_000, 2_000_000_001])) for u in users}
    rec.observe(np.repeat(users, 2), np.tile([5, 6], len(users)), np.tile([2_000_000_000, 2_000_000_001], len(users)))
    extended = {u: (np.r_[histories[u][0], more[u][0]], np.r_[histories[u][1], more[u][1]]) for u in users}
    assert_close_scores(served_scores(rec, users), reference_scores(model, extended, users))


def test_rebuild_of_a_long_history_equals_encoding_its_last_history_len_events(model):
    histories = random_histories(n_users=6, max_len=60, seed=3)
    rec = OnlineRecommender(model, capacity_bytes=4 << 20, history_len=16)
    observe_all(rec, histories, per_call=7)
    users = list(histories)
    assert_close_scores(served_scores(rec, users), reference_scores(model, histories, users))   # never evicted
    rec.cache.clear()                                                                             # lose all states
    assert_close_scores(served_scores(rec, users), reference_scores(model, histories, users, last=16))


def test_save_load_resumes_with_identical_answers(model, histories, tmp_path):
    rec = OnlineRecommender(model, capacity_bytes=4 << 20, history_len=64)
    observe_all(rec, histories)
    users = np.array(list(histories) + [12345])                     # one unknown user: cold start survives too
    before = rec.recommend(users, k=10, exclude_seen=True)
    rec.save(tmp_path / "serve")
    rec.save(tmp_path / "serve")                                    # overwriting a saved folder works
    back = OnlineRecommender.load(tmp_path / "serve")
    after = back.recommend(users, k=10, exclude_seen=True)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert back.stats()["rebuilds"] == rec.stats()["rebuilds"]     # states came from the snapshot, not rebuilt
    # both go on identically
    u = users[:5]
    t = np.array([rec.history.last_ts[rec.history.rows_of(u)].max() + 10] * 5)
    for r in (rec, back):
        r.observe(u, np.array([1, 2, 3, 4, 5]), t)
    np.testing.assert_array_equal(rec.recommend(u)[1], back.recommend(u)[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serve"]  # no temporary folders left behind


def test_load_builds_through_the_constructor(model, histories, tmp_path):
    class Tagged(OnlineRecommender):                    # what a subclass sets up in __init__ survives load
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.tag = "constructed"

    rec = OnlineRecommender(model, capacity_bytes=4 << 20, history_len=64, dtype="float16", shards=2)
    observe_all(rec, histories)
    rec.save(tmp_path / "serve")
    back = Tagged.load(tmp_path / "serve")
    assert back.tag == "constructed"
    assert (back.capacity_bytes, back.dtype, back.shards, back.history.history_len) == (4 << 20, "float16", 2, 64)
    assert back.stats()["events"] == rec.stats()["events"] and len(back) == len(rec)


def test_model_swap_bumps_version_and_rebuilds_lazily(model, histories):
    rec = OnlineRecommender(model, capacity_bytes=4 << 20, history_len=64)
    observe_all(rec, histories)
    new_model = small_model(seed=1)
    rec.swap_model(new_model)
    assert rec.version == 2
    users = list(histories)
    rebuilds = rec.stats()["rebuilds"]
    assert_close_scores(served_scores(rec, users[:10]), reference_scores(new_model, histories, users[:10]))
    assert rec.stats()["rebuilds"] == rebuilds + 10                 # lazily: only the users asked for
    # observe after the swap steps from the rebuilt state, with the new model
    u = users[10]
    t = int(histories[u][1][-1]) + 1
    rec.observe([u], [7], [t])
    ext = {u: (np.r_[histories[u][0], 7], np.r_[histories[u][1], t])}
    assert_close_scores(served_scores(rec, [u]), reference_scores(new_model, ext, [u]))


def test_swap_to_a_model_with_another_state_size(model, histories):
    rec = OnlineRecommender(model, capacity_bytes=4 << 20, history_len=64)
    observe_all(rec, histories)
    one_block = small_model(seed=2, n_layers=1)
    rec.swap_model(one_block)
    assert rec.layout.size == rec.cache.state_size
    users = list(histories)[:5]
    assert_close_scores(served_scores(rec, users), reference_scores(one_block, histories, users))


def test_float16_cache_is_close(model, histories):
    rec = OnlineRecommender(model, capacity_bytes=4 << 20, history_len=64, dtype="float16")
    observe_all(rec, histories)
    users = list(histories)
    assert_close_scores(served_scores(rec, users), reference_scores(model, histories, users), rtol=2e-2)
    ts = rec.layout.read_header(rec.cache.get(users, rec.version)[1])[2]
    np.testing.assert_array_equal(ts, [histories[u][1][-1] for u in users])   # header exact even in float16


def test_forget_removes_state_and_history(model, histories):
    rec = OnlineRecommender(model, capacity_bytes=4 << 20, history_len=64)
    observe_all(rec, histories)
    u = list(histories)[0]
    assert u in rec and rec.forget([u, 99]) == 1
    assert u not in rec and u not in rec.cache
    items, _ = rec.recommend([u], k=3)
    np.testing.assert_array_equal(items[0], rec.recommend([424242], k=3)[0][0])   # cold start again
    rec.observe([u], [3], [0])                                        # its old last time no longer binds
    assert_close_scores(served_scores(rec, [u]), reference_scores(model, {u: (np.array([3]), np.array([0]))}, [u]))


def test_a_state_out_of_step_with_the_history_is_rebuilt_not_served(model, histories):
    rec = OnlineRecommender(model, capacity_bytes=4 << 20, history_len=64)
    observe_all(rec, histories)
    u = list(histories)[0]
    _, old = rec.cache.get([u], rec.version)                   # the state before one more event
    t = int(histories[u][1][-1]) + 1
    rec.observe([u], [9], [t])
    rec.cache.put([u], old, rec.version)                        # e.g. a snapshot older than the history store
    rebuilds = rec.stats()["rebuilds"]
    ext = {u: (np.r_[histories[u][0], 9], np.r_[histories[u][1], t])}
    assert_close_scores(served_scores(rec, [u]), reference_scores(model, ext, [u]))
    assert rec.stats()["rebuilds"] == rebuilds + 1


def _readout_model(readout: str):
    import torch
    from t2arec_fast.model import T2ARec
    torch.manual_seed(0)
    model = T2ARec(40, d=16, d_state=8, n_layers=2, readout=readout).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))              # trained-looking values: gap embedding ≠ 0
    return model


def test_the_extrapolated_readout_is_one_step_past_the_cached_state(histories):
    """readout='extrapolated': recommend() scores one extra step fed with o_n from the cached state — the full
    encoder's scores — and needs no request time."""
    model = _readout_model("extrapolated")
    users = list(histories)
    rec = OnlineRecommender(model, capacity_bytes=4 << 20, history_len=64)
    observe_all(rec, histories, per_call=3)
    assert_close_scores(served_scores(rec, users), reference_scores(model, histories, users))
    repeated = users[:3] + users[:3]                     # a user twice in one request
    assert_close_scores(served_scores(rec, repeated), reference_scores(model, histories, repeated))


def test_a_readout_at_the_request_time_is_one_step_past_the_cached_state(histories):
    """readout='request_gap': recommend(at_time) scores one extra step from the cached state at the request gap —
    the full encoder's scores(items, times, request_times) — and refuses requests without a time."""
    from t2arec_fast.errors import InputError
    model = _readout_model("request_gap")
    users = list(histories)
    rng = np.random.default_rng(3)
    at_time = np.array([histories[u][1][-1] for u in users]) + rng.integers(0, 40 * 86_400, len(users))
    want = reference_scores(model, histories, users, request_times=at_time)
    rec = OnlineRecommender(model, capacity_bytes=4 << 20, history_len=64)
    observe_all(rec, histories, per_call=3)
    assert_close_scores(served_scores(rec, users, at_time), want)
    repeated = users[:3] + users[:3]                     # one user twice in a request, at two different times
    twice = np.concatenate([at_time[:3], at_time[:3] + 86_400 * 365])
    served = served_scores(rec, repeated, twice)
    assert_close_scores(served, reference_scores(model, histories, repeated, request_times=twice))
    assert not np.allclose(served[:3, 1:], served[3:, 1:])   # the request time matters
    with pytest.raises(InputError, match="pass at_time"):
        rec.recommend(np.array(users[:2]), k=5)
    with pytest.raises(InputError, match="before user"):
        rec.recommend(np.array(users[:1]), k=5, at_time=int(histories[users[0]][1][-1]) - 1)


def test_bad_recommend_arguments(rec):
    with pytest.raises(InputError, match="k must be"):
        rec.recommend([1], k=0)
    with pytest.raises(InputError, match="k must be"):
        rec.recommend([1], k=N_ITEMS + 1)
    with pytest.raises(InputError, match="at_time has 2 entries"):
        rec.recommend([1], at_time=[1, 2])
    with pytest.raises(InputError, match="must be integers"):
        rec.recommend([1], at_time=np.array([1.5]))
    assert rec.recommend([], k=3)[0].shape == (0, 3)


def test_at_time_without_ttt_does_not_change_scores(rec):
    a = rec.recommend([1, 2], k=5)
    b = rec.recommend([1, 2], k=5, at_time=10**12)
    np.testing.assert_array_equal(a[1], b[1])


def test_int64_timestamps_round_trip_exactly(tmp_path):
    rec = OnlineRecommender(small_model(), capacity_bytes=4 << 20, history_len=4)
    users = np.arange(len(INT64_TIMES)) + 10
    rec.observe(users, np.ones(len(INT64_TIMES), np.int64), np.array(INT64_TIMES, np.int64))
    np.testing.assert_array_equal(rec.history.last_ts[rec.history.rows_of(users)], INT64_TIMES)
    readable, n_events, last_ts = rec.layout.read_header(rec.cache.get(users, rec.version)[1])
    assert readable.all() and (n_events == 1).all()
    np.testing.assert_array_equal(last_ts, INT64_TIMES)
    rec.save(tmp_path / "s")
    back = OnlineRecommender.load(tmp_path / "s")
    np.testing.assert_array_equal(back.history.times[back.history.rows_of(users), 0], INT64_TIMES)
    with pytest.raises(InputError, match="earlier"):                  # one second earlier is still caught
        back.observe([users[-1]], [1], [INT64_TIMES[-1] - 1])
    back.observe([users[-1]], [1], [INT64_TIMES[-1]])


def test_cold_start_is_most_observed_items():
    rec = OnlineRecommender(small_model(), capacity_bytes=4 << 20)
    items, scores = rec.recommend([1, 2], k=3)
    np.testing.assert_array_equal(items, [[1, 2, 3], [1, 2, 3]])      # nothing observed: ids 1..k, score 0
    assert (scores == 0).all()
    rec.observe([7, 8, 9, 7], [30, 30, 12, 30], [1, 1, 1, 2])
    items, scores = rec.recommend([100, 7], k=3)
    np.testing.assert_array_equal(items[0], [30, 12, 1])
    np.testing.assert_array_equal(scores[0], [3, 1, 0])
    assert_close_scores(served_scores(rec, [7])[:, :], reference_scores(
        rec.model, {7: (np.array([30, 30]), np.array([1, 2]))}, [7]))  # known users get model scores
    assert rec.stats()["cold_starts"] == 3


def test_exclude_seen_drops_ring_items():
    rec = OnlineRecommender(small_model(), capacity_bytes=4 << 20, history_len=3)
    rec.observe([1] * 5, [1, 2, 3, 4, 5], [1, 2, 3, 4, 5])
    items, scores = rec.recommend([1, 1], k=N_ITEMS - 3, exclude_seen=True)
    assert not np.isin(items, [3, 4, 5]).any()                        # the ring holds the last 3 events
    assert np.isin([1, 2], items[0]).all() and np.isfinite(scores).all()


# -- runtime="onnx" ------------------------------------------------------------------------------------------------
def _model():
    torch.manual_seed(0)
    return T2ARec(40, d=16, d_state=8, dropout=0.0).eval()


def test_onnx_runtime_matches_torch_runtime(tmp_path):
    model = _model()
    rng = np.random.default_rng(0)
    users = rng.integers(0, 6, 60)
    items = rng.integers(1, 41, 60)
    times = 1_700_000_000 + np.arange(60) * 60
    answers = []
    for runtime in ("torch", "onnx"):
        rec = OnlineRecommender(model, capacity_bytes=1 << 20, history_len=20, runtime=runtime)
        rec.observe(users, items, times)
        answers.append(rec.recommend(np.arange(6), k=5))
    assert np.array_equal(answers[0][0], answers[1][0])
    np.testing.assert_allclose(answers[0][1], answers[1][1], rtol=1e-4, atol=1e-5)
    assert type(rec.model).__name__ == "OnnxStepModel"
    rec.save(tmp_path / "serve")
    again = OnlineRecommender.load(tmp_path / "serve")
    assert again.runtime == "onnx"
    assert np.array_equal(again.recommend(np.arange(6), k=5)[0], answers[1][0])


def test_graphs_exported_for_the_onnx_runtime_leave_no_temporary_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))          # where temporary folders are made
    rec = OnlineRecommender(_model(), capacity_bytes=1 << 20, history_len=20, runtime="onnx")
    assert list(tmp_path.iterdir()) == []
    rec.observe(np.array([1, 2]), np.array([3, 4]), np.array([10, 11]))     # the sessions no longer need the files
    assert rec.recommend(np.array([1, 2]), k=3)[0].shape == (2, 3)


def test_onnx_threads_reach_the_runtime_sessions_and_survive_save_and_load(tmp_path):
    rec = OnlineRecommender(_model(), capacity_bytes=1 << 20, history_len=20, runtime="onnx", onnx_threads=1)
    threads = lambda r: {s.get_session_options().intra_op_num_threads for s in r.model.encoder.sessions.values()}  # noqa: E731
    assert threads(rec) == {1}
    rec.save(tmp_path / "serve")
    assert OnlineRecommender.load(tmp_path / "serve").onnx_threads == 1
    assert threads(OnlineRecommender.load(tmp_path / "serve")) == {1}


def test_unknown_runtime_is_refused():
    with pytest.raises(InputError, match="runtime must be one of"):
        OnlineRecommender(_model(), runtime="tensorrt")


def test_a_folder_saved_with_the_old_key_backend_loads(tmp_path):
    """Serving folders written before the engine was called `runtime` stored it as `backend`."""
    rec = OnlineRecommender(_model(), capacity_bytes=1 << 20, history_len=20)
    rec.save(tmp_path / "serve")
    meta_path = tmp_path / "serve" / "serving.json"
    meta = json.loads(meta_path.read_text())
    meta["backend"] = meta.pop("runtime")
    meta_path.write_text(json.dumps(meta))
    assert OnlineRecommender.load(tmp_path / "serve").runtime == "torch"


def test_a_failed_swap_leaves_the_served_model_and_version(tmp_path, redis_url):
    """swap_model to a model whose graphs are not in onnx_dir fails (OnnxModelError) — in-process and with a store,
    where the new model used to be registered (the version moved on) before the graphs were checked."""
    from t2arec_fast.export import export_onnx
    from t2arec_fast.export.runtime import OnnxModelError
    model = _model()
    export_onnx(model, tmp_path / "onnx", kinds=("encode", "step"))
    for store in (None, redis_url):
        rec = OnlineRecommender(model, capacity_bytes=1 << 20, history_len=20, runtime="onnx",
                                onnx_dir=tmp_path / "onnx", store=store)
        rec.observe(np.array([1, 2]), np.array([3, 4]), np.array([10, 11]))
        before = rec.version, rec.model, rec.recommend(np.array([1, 2]), k=5)
        with pytest.raises(OnnxModelError, match="exported from another model"):
            rec.swap_model(small_model(seed=3, n_layers=1))
        assert (rec.version, rec.model) == before[:2]
        after = rec.recommend(np.array([1, 2]), k=5)
        np.testing.assert_array_equal(after[0], before[2][0])


def test_an_onnx_step_model_serves_from_a_shared_store(tmp_path, redis_url):
    """An OnnxStepModel passed as the model (runtime "torch" serves it as given) registers in the store by its
    weights' fingerprint, like the T2ARec it wraps, and answers as the in-process PyTorch path."""
    from t2arec_fast.export import export_onnx
    from t2arec_fast.export.runtime import OnnxStepModel
    model = _model()
    export_onnx(model, tmp_path / "onnx", kinds=("encode", "step"))
    shared = OnlineRecommender(OnnxStepModel(model, tmp_path / "onnx"), capacity_bytes=1 << 20, history_len=20,
                               store=redis_url)
    here = OnlineRecommender(model, capacity_bytes=1 << 20, history_len=20)
    users, items, times = np.array([1, 2, 1]), np.array([3, 4, 5]), np.array([10, 11, 12])
    answers = []
    for rec in (shared, here):
        rec.observe(users, items, times)
        answers.append(rec.recommend(np.array([1, 2]), k=5))
    np.testing.assert_array_equal(answers[0][0], answers[1][0])
    np.testing.assert_allclose(answers[0][1], answers[1][1], rtol=1e-4, atol=1e-5)



def test_steps_in_fixed_chunks_do_not_depend_on_the_other_rows_or_the_place_in_the_chunk():
    """What lets any process of a Redis-backed deployment replay a user's events bit for bit (docs/serving.md,
    "Why replays give the same bits"): with step_rows=64 a user's new state is the same bits whoever steps with it
    and wherever it sits, also for batches above 64 (several chunks, the last one padded); it equals the one-step
    path to float rounding."""
    from t2arec_fast.serving.events import group_events
    from t2arec_fast.serving.shared import STEP_ROWS
    torch.manual_seed(0)
    rec = OnlineRecommender(T2ARec(300, d=32, d_state=8, n_layers=2).eval(), capacity_bytes=1 << 20)
    rng = np.random.default_rng(0)
    pool = (rng.standard_normal((200, rec.layout.size)) * 0.1).astype(np.float32)
    items = rng.integers(1, 301, 200)

    def step(rows, step_rows, events=1):
        ids = np.repeat(np.arange(len(rows)), events)           # `events` events per user, in one call
        groups = group_events(ids)
        order = groups.users
        out = rec._advance(groups, pool[rows][order], np.zeros(len(rows), np.int64),
                           np.repeat(items[rows], events), np.zeros(len(ids), np.int64), step_rows)
        back = np.empty_like(out)
        back[order] = out
        return back

    want = step(np.array([7]), STEP_ROWS, events=2)[0]
    for size in (1, 5, 64, 65, 150):
        rows = rng.choice(np.r_[0:7, 8:200], size, replace=False)
        rows[rng.integers(size)] = 7
        got = step(rows, STEP_ROWS, events=2)[rows == 7][0]
        assert got.tobytes() == want.tobytes(), size
        np.testing.assert_allclose(step(rows, None, events=2)[rows == 7][0], want, rtol=1e-5, atol=1e-6)


def test_observe_and_recommend_equals_observe_then_recommend(model, histories):
    """One answer row per event row (duplicates and new users included), the same bits as the two calls; the
    counters count both; exclude_seen too."""
    fused = OnlineRecommender(model, capacity_bytes=4 << 20, history_len=8)
    twin = OnlineRecommender(model, capacity_bytes=4 << 20, history_len=8)
    for i, (users, items, times) in enumerate(interleaved(histories, per_call=3)):
        got = fused.observe_and_recommend(users, items, times, k=6, exclude_seen=i % 2 == 1)
        twin.observe(users, items, times)
        want = twin.recommend(users, k=6, exclude_seen=i % 2 == 1)
        assert got[0].shape == (len(users), 6)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    assert fused.stats()["events"] == twin.stats()["events"] and fused.stats()["requests"] == twin.stats()["requests"]


def test_bad_observe_and_recommend_arguments_store_nothing(rec):
    before = rec.stats()["events"]
    for call, message in ((lambda: rec.observe_and_recommend([1], [2], [400], k=0), "k must be"),
                          (lambda: rec.observe_and_recommend([1, 2], [2], [400], k=3), "differ in length"),
                          (lambda: rec.observe_and_recommend([1], [N_ITEMS + 1], [400]), "item"),
                          (lambda: rec.observe_and_recommend([1], [2], [50]), "earlier|before|older")):
        with pytest.raises(InputError, match=message):
            call()
    assert rec.stats()["events"] == before
    empty = rec.observe_and_recommend([], [], [], k=3)
    assert empty[0].shape == (0, 3) and empty[1].dtype == np.float32


def test_exclude_seen_must_be_a_bool_and_nothing_is_stored_otherwise(rec):
    """A per-row array or a truthy list must not pass for True (found by a break-review: the fused call stored the
    events, then failed)."""
    before = rec.stats()["events"]
    for bad in (np.array([True, False]), [True, False], "yes", 1, None):
        with pytest.raises(InputError, match="exclude_seen must be True or False"):
            rec.observe_and_recommend([1, 2], [2, 3], [400, 400], exclude_seen=bad)
        with pytest.raises(InputError, match="exclude_seen must be True or False"):
            rec.recommend([1], exclude_seen=bad)
    assert rec.stats()["events"] == before
    assert rec.recommend([1], k=2, exclude_seen=np.bool_(True))[0].shape == (1, 2)


def test_a_swap_to_a_request_time_model_while_the_call_waits_refuses_it_with_nothing_stored(model):
    """The request-time check runs under the lock: a swap_model that lands while the call waits for the lock is
    seen (found by a break-review: the events were committed, then scoring refused)."""
    import threading
    rec = OnlineRecommender(model, capacity_bytes=4 << 20, history_len=8)
    outcome = {}

    def call():
        try:
            rec.observe_and_recommend([7], [3], [100], k=2)
            outcome["error"] = None
        except InputError as exc:
            outcome["error"] = exc

    with rec._lock:                           # the call waits here while the model is swapped
        worker = threading.Thread(target=call)
        worker.start()
        worker.join(0.2)
        rec.swap_model(T2ARec(N_ITEMS, d=16, d_state=8, n_layers=1, readout="request_gap").eval())
    worker.join()
    assert isinstance(outcome["error"], InputError) and "request time" in str(outcome["error"])
    assert 7 not in rec and rec.stats()["events"] == 0


def test_a_cache_write_failing_part_way_leaves_the_batch_unstored():
    """Found while reviewing the shared tier's local write (2026-12-02): the cache stores shard by shard, so running
    out of memory in a later shard leaves earlier rows written. The history is untouched then, so those rows say a
    count it does not have: they are never served, the users answer as before the call, and the batch can be
    observed again."""
    model = small_model()
    rec, twin = OnlineRecommender(model, history_len=16), OnlineRecommender(model, history_len=16)
    for r in (rec, twin):
        r.observe([1, 2], [3, 4], [100, 100])
    put = rec.cache.put

    def first_row_then_out_of_memory(users, states, version):
        put(users[:1], np.ascontiguousarray(states[:1]), version)
        raise MemoryError("the cache could not grow")

    rec.cache.put = first_row_then_out_of_memory
    with pytest.raises(MemoryError):
        rec.observe([1, 2], [5, 6], [200, 200])
    rec.cache.put = put
    assert rec.stats()["events"] == 2
    assert_close_scores(served_scores(rec, [1, 2]), served_scores(twin, [1, 2]))   # (user 1 rebuilt from the
    for r in (rec, twin):                                                            # history: float rounding)
        r.observe([1, 2], [5, 6], [200, 200])
    assert_close_scores(served_scores(rec, [1, 2]), served_scores(twin, [1, 2]))


def test_a_model_not_in_float32_is_refused_up_front_naming_its_dtype():
    """Noticed by break-review 29: a float64 model failed inside the step (a dtype mismatch in bmm); serving keeps
    float32 states, so it is refused when given, with what to do — and a swap to one leaves the old model."""
    model = small_model()
    with pytest.raises(InputError, match="float32.*weights are torch.float64; serve model.float\\(\\)"):
        OnlineRecommender(small_model().double(), history_len=8)
    rec = OnlineRecommender(model, history_len=8)
    rec.observe([1], [2], [100])
    with pytest.raises(InputError, match="torch.float64"):
        rec.swap_model(small_model(seed=1).double())
    assert rec.model is model and rec.recommend([1], k=3)[0].shape == (1, 3)
