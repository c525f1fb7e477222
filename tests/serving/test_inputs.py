"""Bad input is refused with InputError and changes nothing; int64 times round-trip exactly; cold start;
exclude_seen; the flat state layout."""
import numpy as np
import pytest
import torch

from t2arec_fast.errors import InputError
from t2arec_fast.serving import HEADER_WORDS, LAYOUT_VERSION, OnlineRecommender, int64_to_words, words_to_int64

from .helpers import N_ITEMS, assert_close_scores, reference_scores, served_scores, small_model


@pytest.fixture
def rec():
    r = OnlineRecommender(small_model(), capacity_bytes=4 << 20, history_len=8)
    r.observe([1, 2, 1], [3, 4, 5], [100, 200, 300])
    return r


def snapshot(rec):
    """Everything observe() may change."""
    users = np.array([1, 2, 3])
    found, states = rec.cache.get(users, rec.version)
    h = rec.history
    return (found, states, h.items.copy(), h.times.copy(), h.n_events.copy(), h.last_ts.copy(), len(h),
            rec.popularity.copy(), rec.stats()["events"], rec.stats()["puts"])


def assert_unchanged(before, after):
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


BAD_OBSERVES = {
    "earlier than stored": ([3, 1], [1, 2], [500, 250], "earlier than that user's last event"),
    "backwards within call": ([3, 3], [1, 2], [500, 499], "go backwards for user 3"),
    "float timestamps": ([3], [1], [500.0], "must be integers"),
    "nan timestamps": ([3], [1], [float("nan")], "must be integers"),
    "unknown item": ([3, 1], [1, N_ITEMS + 1], [500, 500], "not a model item id"),
    "padding item": ([3], [0], [500], "not a model item id"),
    "length mismatch": ([3, 1], [1], [500, 600], "differ in length"),
    "2-D users": ([[3]], [1], [500], "must be 1-D"),
    "bool items": ([3], [True], [500], "must be integers"),
}


@pytest.mark.parametrize("case", sorted(BAD_OBSERVES))
def test_bad_observe_is_refused_and_stores_nothing(rec, case):
    users, items, times, message = BAD_OBSERVES[case]
    before = snapshot(rec)
    with pytest.raises(InputError, match=message):
        rec.observe(np.array(users), np.array(items), np.array(times))
    assert_unchanged(before, snapshot(rec))


def test_torch_and_list_inputs_are_accepted(rec):
    rec.observe(torch.tensor([1]), torch.tensor([7]), torch.tensor([400]))
    rec.observe([2], [8], [400])
    rec.observe(np.array([], np.int64), np.array([], np.int64), np.array([], np.int64))   # empty: a no-op
    assert rec.stats()["events"] == 5


def test_equal_timestamps_are_allowed(rec):
    rec.observe([1, 1], [6, 7], [300, 300])
    assert rec.history.n_events[rec.history.rows_of(np.array([1]))][0] == 4


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


TIMES = [2**31 - 1, 2**31, 2**31 + 5,            # the 2038 boundary
         0x7FC00000, 0xFF800001,                 # low words that are float32 NaN patterns if bit-cast
         2**40 + 1, 2**53 + 1, 2**62 + 3]        # beyond float64's exact integers too


def test_int64_timestamps_round_trip_exactly(tmp_path):
    rec = OnlineRecommender(small_model(), capacity_bytes=4 << 20, history_len=4)
    users = np.arange(len(TIMES)) + 10
    rec.observe(users, np.ones(len(TIMES), np.int64), np.array(TIMES, np.int64))
    np.testing.assert_array_equal(rec.history.last_ts[rec.history.rows_of(users)], TIMES)
    readable, n_events, last_ts = rec.layout.read_header(rec.cache.get(users, rec.version)[1])
    assert readable.all() and (n_events == 1).all()
    np.testing.assert_array_equal(last_ts, TIMES)
    rec.save(tmp_path / "s")
    back = OnlineRecommender.load(tmp_path / "s")
    np.testing.assert_array_equal(back.history.times[back.history.rows_of(users), 0], TIMES)
    with pytest.raises(InputError, match="earlier"):                  # one second earlier is still caught
        back.observe([users[-1]], [1], [TIMES[-1] - 1])
    back.observe([users[-1]], [1], [TIMES[-1]])


def test_int64_words_encoding():
    values = np.array([0, -1, 1, np.iinfo(np.int64).min, np.iinfo(np.int64).max, *TIMES], np.int64)
    words = int64_to_words(values)
    assert words.dtype == np.float32 and np.isfinite(words).all() and words.max() <= 255
    np.testing.assert_array_equal(words_to_int64(words), values)
    np.testing.assert_array_equal(words_to_int64(words.astype(np.float16)), values)   # a float16 cache keeps them


def test_layout_header_and_views():
    model = small_model()
    rec = OnlineRecommender(model, capacity_bytes=4 << 20)
    rec.observe([5], [9], [123])
    _, flat = rec.cache.get([5], rec.version)
    assert flat[0, 0] == LAYOUT_VERSION and flat[0, 1] == HEADER_WORDS
    states, o = rec.layout.views(torch.from_numpy(flat))
    o_ref, states_ref = model.encode(torch.tensor([[9]]), torch.tensor([[123]]))
    torch.testing.assert_close(o, o_ref, rtol=1e-5, atol=1e-6)
    for got, want in zip(states, states_ref):
        torch.testing.assert_close(got.conv, want.conv, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got.ssm, want.ssm, rtol=1e-5, atol=1e-6)
    expect = 20 + sum(s.conv[0].numel() + s.ssm[0].numel() for s in states_ref) + model.config.d
    assert rec.layout.size == expect == rec.cache.state_size


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
