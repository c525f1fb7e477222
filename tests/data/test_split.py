"""data/split.py: leave-one-out and global-time splits, time segments."""
import numpy as np
import pytest

from t2arec_fast.data import global_time_split, leave_one_out, time_segments

from .helpers import five_users, raw_items


def test_leave_one_out():
    ds = five_users()
    split = leave_one_out(ds)
    assert split.valid.users.tolist() == [0, 1, 2] and split.test.users.tolist() == [0, 1, 2, 3]
    users, targets, times = split.targets("test")
    assert raw_items(ds, targets).tolist() == [111, 204, 302, 401]
    assert raw_items(ds, split.targets("valid")[1]).tolist() == [110, 203, 301]
    assert (split.train_stop - ds.offsets[:-1]).tolist() == [10, 3, 1, 0, 0]
    assert split.sizes() == {"split": "loo", "train_users": 2, "train_targets": 9 + 2, "valid_users": 3,
                             "test_users": 4}


def test_global_time_split():
    ds = five_users()
    split = global_time_split(ds, valid_frac=0.2, test_frac=0.2)
    t = ds.timestamps
    for part in (split.valid, split.test):
        assert (part.stops > ds.offsets[part.users]).all()              # some history before every target
    valid_cut = t[split.valid.stops].min()
    assert (t[np.concatenate([np.arange(a, b) for a, b in zip(ds.offsets[:-1], split.train_stop)])] < valid_cut).all()
    assert (t[split.test.stops] >= t[split.valid.stops].max()).all()
    with pytest.raises(ValueError):
        global_time_split(ds, 0.6, 0.5)


def test_time_segments_equal_sizes_by_time():
    times = np.array([50, 10, 40, 30, 20, 60, 70, 80])
    assert time_segments(times, 4).tolist() == [2, 0, 1, 1, 0, 2, 3, 3]
    seg = time_segments(np.random.default_rng(0).integers(0, 5, 103), 4)
    assert sorted(np.bincount(seg).tolist()) == [25, 26, 26, 26]
