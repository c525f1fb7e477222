"""serving/events.py: bad observe() input is refused with InputError naming it and changes nothing; torch, list and
empty input; equal timestamps."""
import numpy as np
import pytest
import torch

from t2arec_fast.errors import InputError

from .helpers import N_ITEMS


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
