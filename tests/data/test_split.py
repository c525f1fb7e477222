"""Leave-one-out and global-time splits; left-padded training windows and evaluation batches; sharding."""
import numpy as np
import pytest

from t2arec_fast.data import (eval_batches, global_time_split, leave_one_out, time_segments, train_batches,
                              training_windows)
from t2arec_fast.data.batches import training_prefixes

from .helpers import dataset


def _ds():
    # user 0: 12 events, user 1: 5, user 2: 3, user 3: 2, user 4: 1; items are (user+1)*100 + position
    rows = [(u, (u + 1) * 100 + k, 1000 * u + 10 * k) for u, n in enumerate([12, 5, 3, 2, 1]) for k in range(n)]
    return dataset(rows)


def _raw(ds, ids):
    return np.where(ids > 0, ds.item_ids[ids], 0)


def test_leave_one_out():
    ds = _ds()
    split = leave_one_out(ds)
    assert split.valid.users.tolist() == [0, 1, 2] and split.test.users.tolist() == [0, 1, 2, 3]
    users, targets, times = split.targets("test")
    assert _raw(ds, targets).tolist() == [111, 204, 302, 401]
    assert _raw(ds, split.targets("valid")[1]).tolist() == [110, 203, 301]
    assert (split.train_stop - ds.offsets[:-1]).tolist() == [10, 3, 1, 0, 0]
    assert split.sizes() == {"split": "loo", "train_users": 2, "train_targets": 9 + 2, "valid_users": 3,
                             "test_users": 4}


def test_training_windows_use_every_target_once_and_end_complete():
    ds = _ds()
    split = leave_one_out(ds)
    starts, lengths, users = training_windows(split, max_len=4)
    covered = np.concatenate([np.arange(s + 1, s + 1 + n) for s, n in zip(starts, lengths)])
    assert sorted(covered.tolist()) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14]     # every training target once
    assert users.tolist() == [0, 0, 0, 1] and lengths.tolist() == [4, 4, 1, 2]  # most recent window is full


def test_train_batch_is_left_padded_with_next_items():
    ds = _ds()
    batch = next(iter(train_batches(leave_one_out(ds), max_len=4, batch_size=8, shuffle=False)))
    assert batch.items.shape == (4, 4) and batch.lengths.tolist() == [4, 4, 1, 2]
    assert _raw(ds, batch.items).tolist() == [[105, 106, 107, 108], [101, 102, 103, 104], [0, 0, 0, 100],
                                              [0, 0, 200, 201]]
    assert _raw(ds, batch.next_items).tolist() == [[106, 107, 108, 109], [102, 103, 104, 105], [0, 0, 0, 101],
                                                   [0, 0, 201, 202]]
    assert np.array_equal(batch.next_items[:, -1], batch.targets)
    assert batch.times[2].tolist() == [0, 0, 0, 0] and batch.times[3].tolist() == [0, 0, 1000, 1010]
    assert batch.target_times.tolist() == [90, 50, 10, 1020]
    for name in ("items", "times", "lengths", "next_items", "targets", "target_times", "users"):
        assert getattr(batch, name).dtype == np.int64


def test_training_prefixes_make_every_target_its_own_sample():
    """RecBole's augmentation: one sample per training target, the ≤ max_len events before it."""
    ds = _ds()
    starts, lengths, users = training_prefixes(leave_one_out(ds), max_len=4)
    assert sorted((starts + lengths).tolist()) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14]   # every target once
    assert users.tolist() == [0] * 9 + [1, 1]
    assert lengths.tolist() == [1, 2, 3, 4, 4, 4, 4, 4, 4, 1, 2]


def test_prefix_batches_have_a_target_at_the_last_position_only():
    ds = _ds()
    batches = list(train_batches(leave_one_out(ds), max_len=4, batch_size=20, shuffle=False, samples="prefixes"))
    batch = batches[0]
    assert len(batches) == 1 and batch.items.shape == (11, 4)
    assert _raw(ds, batch.items[3]).tolist() == [100, 101, 102, 103]
    assert _raw(ds, batch.next_items[3]).tolist() == [0, 0, 0, 104]
    assert (batch.next_items[:, :-1] == 0).all() and np.array_equal(batch.next_items[:, -1], batch.targets)
    with pytest.raises(ValueError, match="train_samples must be one of"):
        train_batches(leave_one_out(ds), max_len=4, batch_size=2, samples="users")


def test_eval_batches_take_the_last_max_len_events():
    ds = _ds()
    split = leave_one_out(ds)
    test = next(iter(eval_batches(split, "test", max_len=3, batch_size=10)))
    assert _raw(ds, test.items).tolist() == [[108, 109, 110], [201, 202, 203], [0, 300, 301], [0, 0, 400]]
    assert _raw(ds, test.targets).tolist() == [111, 204, 302, 401]
    assert test.target_times.tolist() == [110, 1040, 2020, 3010]
    valid = next(iter(eval_batches(split, "valid", max_len=50, batch_size=10)))
    assert valid.lengths.tolist() == [10, 3, 1] and _raw(ds, valid.targets).tolist() == [110, 203, 301]
    assert valid.items.shape == (3, 10)                                   # L = longest input in the batch


def test_sharding_covers_the_same_global_batches():
    """w ranks at batch_size b read, together, exactly the batches of one process at batch_size w·b (DDP)."""
    ds = dataset([(u, k % 9 + 1, k) for u in range(20) for k in range(u % 7 + 3)])
    split = leave_one_out(ds)
    one = [b.users.tolist() for b in train_batches(split, 3, 12, seed=5, epoch=2)]
    ranks = [[b.users.tolist() for b in train_batches(split, 3, 4, seed=5, epoch=2, rank=r, world_size=3)]
             for r in range(3)]
    for step, global_batch in enumerate(one):
        pieces = [ranks[r][step] for r in range(3) if step < len(ranks[r])]
        assert sum(pieces, []) == global_batch
    assert sum(len(b) for r in ranks for b in r) == sum(len(b) for b in one)
    again = [b.users.tolist() for b in train_batches(split, 3, 12, seed=5, epoch=2)]
    other_epoch = [b.users.tolist() for b in train_batches(split, 3, 12, seed=5, epoch=3)]
    assert one == again and one != other_epoch


def test_global_time_split():
    ds = _ds()
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


def test_to_torch():
    torch = pytest.importorskip("torch")
    batch = next(iter(eval_batches(leave_one_out(_ds()), "test", 4, 2))).to_torch("cpu")
    assert isinstance(batch.items, torch.Tensor) and batch.items.dtype == torch.int64
    assert batch.target_times.tolist() == [110, 1040]
