"""Iterative k-core, contiguous ids with 0 = padding, chronological CSR layout, statistics."""
import numpy as np

from t2arec_fast.data.preprocess import chronological_order, factorize, kcore_rows

from .helpers import EXPECTED, ROWS, dataset, sequences


def test_csr_layout_and_id_maps():
    ds = dataset(ROWS)
    assert ds.offsets.dtype == ds.items.dtype == ds.timestamps.dtype == np.int64
    assert ds.offsets.tolist() == [0, 3, 6, 9]
    assert ds.items.min() == 1 and ds.items.max() == ds.n_items          # contiguous 1..n_items, 0 is padding
    assert ds.item_ids.tolist() == [0, 10, 20, 30] and ds.user_ids.tolist() == [1, 2, 3]
    assert sequences(ds) == EXPECTED


def test_kcore_is_iterative():
    # k=2: item 9 has one event -> removed -> user 3 falls to one event -> removed -> item 8 falls to one -> removed
    rows = [(1, 7, 1), (1, 8, 2), (2, 7, 3), (2, 8, 4), (2, 6, 5), (1, 6, 6), (3, 8, 7), (3, 9, 8), (4, 8, 9),
            (4, 7, 10)]
    ds = dataset(rows, min_count=2)
    counts = np.bincount(ds.items)
    assert counts[1:].min() >= 2 and ds.lengths.min() >= 2
    assert sequences(ds) == {1: [(7, 1), (8, 2), (6, 6)], 2: [(7, 3), (8, 4), (6, 5)], 4: [(8, 9), (7, 10)]}


def test_kcore_matches_a_slow_reference():
    rng = np.random.default_rng(1)
    users, items = rng.integers(0, 60, 3000), rng.zipf(1.6, 3000) % 200
    kept = kcore_rows(users, items, 60, 200, 5)
    u, i = users.copy(), items.copy()
    alive = np.ones(len(u), dtype=bool)
    changed = True
    while changed:                                          # remove one offending event class at a time
        cu, ci = np.bincount(u[alive], minlength=60), np.bincount(i[alive], minlength=200)
        bad = alive & ((cu[u] < 5) | (ci[i] < 5))
        changed = bad.any()
        alive &= ~bad
    assert np.array_equal(kept, np.flatnonzero(alive))
    assert kcore_rows(users, items, 60, 200, 1) is None


def test_factorize_sorts_raw_ids():
    codes, vocab = factorize(np.array([30, 10, 30, 20]))
    assert codes.tolist() == [2, 0, 2, 1] and vocab.tolist() == [10, 20, 30]
    codes, vocab = factorize(np.array(["b", "a", "b"], dtype=object))
    assert codes.tolist() == [1, 0, 1] and vocab.tolist() == ["a", "b"]


def test_chronological_order_is_stable_and_skips_sorted_input():
    users = np.array([1, 0, 1, 1, 0])
    times = np.array([5, 9, 5, 1, 9])
    assert chronological_order(users, times).tolist() == [1, 4, 3, 0, 2]
    assert chronological_order(np.array([0, 0, 1]), np.array([1, 2, 0])) is None


def test_stats_dict():
    ds = dataset(ROWS + [(3, 10, 70)])
    stats = ds.stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (3, 3, 10)
    assert stats["median_length"] == 3.0 and stats["max_length"] == 4
    assert stats["zero_gap_share"] == round(2 / 7, 4)                   # user 1 at t=200 twice, user 3 at t=70
    assert stats["sparsity"] == round(1 - 10 / 9, 6)
    assert stats["time_first"].startswith("1970-01-01") and stats["files"] == []


def test_stats_spread_the_last_events_over_request_gap_bins():
    stats = dataset(ROWS + [(2, 20, 500 + 2 * 86_400)]).stats()     # user 2 comes back after two days
    shares = {k.split(" ", 1)[1]: v for k, v in stats.items() if k.startswith("last_gap_share")}
    assert shares == {"< 1 h": round(2 / 3, 4), "1 h – 1 d": 0.0, "1 d – 1 w": round(1 / 3, 4), "1 w – 30 d": 0.0,
                      "≥ 30 d": 0.0}


def test_default_max_len_follows_history_length():
    short = dataset(ROWS)
    long = dataset([(1, i % 7 + 1, t) for i, t in enumerate(range(60))])
    assert (short.default_max_len, long.default_max_len) == (50, 200)


def test_fast_stable_sort_matches_lexsort_including_the_fallback():
    from t2arec_fast.data.preprocess import _stable_order
    rng = np.random.default_rng(0)
    users, times = rng.integers(0, 7, 5000), rng.integers(0, 5, 5000)      # many ties
    assert np.array_equal(_stable_order(times, users), np.lexsort((times, users)))
    huge = times + (1 << 60)                                                # keys would overflow: lexsort path
    assert np.array_equal(_stable_order(huge, users), np.lexsort((huge, users)))
