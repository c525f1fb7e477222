"""serving/history.py: per-user rings of the last history_len events, in time order, with counts and last times."""
import numpy as np
import pytest

from t2arec_fast.errors import InputError
from t2arec_fast.serving.events import group_events
from t2arec_fast.serving.history import HistoryStore


def observe(store, users, items, times):
    """What OnlineRecommender does with a checked observe() call: new users get rows, then the events land."""
    users, items, times = (np.asarray(a, np.int64) for a in (users, items, times))
    groups = group_events(users)
    rows = store.rows_of(groups.users)
    rows[rows < 0] = store.add(groups.users[rows < 0])
    store.append(rows[groups.member], groups.rank, groups.counts[groups.member], items, times)


def test_a_ring_keeps_the_last_events_in_time_order_across_calls():
    store = HistoryStore(3)
    observe(store, [7, 7, 8], [1, 2, 9], [10, 11, 12])
    observe(store, [7, 7, 7], [3, 4, 5], [13, 14, 15])                # user 7 wraps around its ring twice
    rows = store.rows_of(np.array([7, 8, 99]))
    assert rows[2] == -1                                              # never observed
    items, times = store.recent(rows[:2])
    np.testing.assert_array_equal(items, [[3, 4, 5], [0, 0, 9]])      # LEFT-padded to the longest ring
    np.testing.assert_array_equal(times, [[13, 14, 15], [0, 0, 12]])
    n_events, last_ts = store.lookup(rows)
    np.testing.assert_array_equal(n_events, [5, 1, 0])
    np.testing.assert_array_equal(last_ts, [15, 12, np.iinfo(np.int64).min])


def test_forget_frees_the_row_for_a_new_user_with_an_empty_ring():
    store = HistoryStore(4)
    observe(store, [1, 2], [5, 6], [10, 10])
    assert store.forget(np.array([1, 1, 42])) == 1 and 1 not in store and len(store) == 1
    observe(store, [3], [7], [20])
    items, _ = store.recent(store.rows_of(np.array([3])))
    np.testing.assert_array_equal(items, [[7]])                       # nothing of user 1 is left in the reused row


def test_arrays_round_trip():
    store = HistoryStore(2)
    observe(store, [1, 2, 1, 1], [5, 6, 7, 8], [10, 10, 11, 12])
    back = HistoryStore.from_arrays(store.to_arrays())
    users = np.array([1, 2])
    for a, b in zip(store.recent(store.rows_of(users)), back.recent(back.rows_of(users))):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(store.lookup(store.rows_of(users)), back.lookup(back.rows_of(users)))


def test_history_len_must_be_positive():
    with pytest.raises(InputError, match="history_len must be ≥ 1, got 0"):
        HistoryStore(0)
