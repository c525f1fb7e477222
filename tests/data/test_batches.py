"""data/batches.py: left-padded training windows and prefixes, evaluation batches, sharding over ranks."""
import numpy as np
import pytest

from t2arec_fast.data import eval_batches, leave_one_out, train_batches, training_windows
from t2arec_fast.data.batches import training_prefixes

from .helpers import dataset, five_users, raw_items


def test_training_windows_use_every_target_once_and_end_complete():
    ds = five_users()
    split = leave_one_out(ds)
    starts, lengths, users = training_windows(split, max_len=4)
    covered = np.concatenate([np.arange(s + 1, s + 1 + n) for s, n in zip(starts, lengths)])
    assert sorted(covered.tolist()) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14]     # every training target once
    assert users.tolist() == [0, 0, 0, 1] and lengths.tolist() == [4, 4, 1, 2]  # most recent window is full


def test_train_batch_is_left_padded_with_next_items():
    ds = five_users()
    batch = next(iter(train_batches(leave_one_out(ds), max_len=4, batch_size=8, shuffle=False)))
    assert batch.items.shape == (4, 4) and batch.lengths.tolist() == [4, 4, 1, 2]
    assert raw_items(ds, batch.items).tolist() == [[105, 106, 107, 108], [101, 102, 103, 104], [0, 0, 0, 100],
                                                   [0, 0, 200, 201]]
    assert raw_items(ds, batch.next_items).tolist() == [[106, 107, 108, 109], [102, 103, 104, 105],
                                                        [0, 0, 0, 101], [0, 0, 201, 202]]
    assert np.array_equal(batch.next_items[:, -1], batch.targets)
    assert batch.times[2].tolist() == [0, 0, 0, 0] and batch.times[3].tolist() == [0, 0, 1000, 1010]
    assert batch.target_times.tolist() == [90, 50, 10, 1020]
    for name in ("items", "times", "lengths", "next_items", "targets", "target_times", "users"):
        assert getattr(batch, name).dtype == np.int64


def test_training_prefixes_make_every_target_its_own_sample():
    """RecBole's augmentation: one sample per training target, the ≤ max_len events before it."""
    ds = five_users()
    starts, lengths, users = training_prefixes(leave_one_out(ds), max_len=4)
    assert sorted((starts + lengths).tolist()) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14]   # every target once
    assert users.tolist() == [0] * 9 + [1, 1]
    assert lengths.tolist() == [1, 2, 3, 4, 4, 4, 4, 4, 4, 1, 2]


def test_prefix_batches_have_a_target_at_the_last_position_only():
    ds = five_users()
    batches = list(train_batches(leave_one_out(ds), max_len=4, batch_size=20, shuffle=False, samples="prefixes"))
    batch = batches[0]
    assert len(batches) == 1 and batch.items.shape == (11, 4)
    assert raw_items(ds, batch.items[3]).tolist() == [100, 101, 102, 103]
    assert raw_items(ds, batch.next_items[3]).tolist() == [0, 0, 0, 104]
    assert (batch.next_items[:, :-1] == 0).all() and np.array_equal(batch.next_items[:, -1], batch.targets)
    with pytest.raises(ValueError, match="train_samples must be one of"):
        train_batches(leave_one_out(ds), max_len=4, batch_size=2, samples="users")


def test_eval_batches_take_the_last_max_len_events():
    ds = five_users()
    split = leave_one_out(ds)
    test = next(iter(eval_batches(split, "test", max_len=3, batch_size=10)))
    assert raw_items(ds, test.items).tolist() == [[108, 109, 110], [201, 202, 203], [0, 300, 301], [0, 0, 400]]
    assert raw_items(ds, test.targets).tolist() == [111, 204, 302, 401]
    assert test.target_times.tolist() == [110, 1040, 2020, 3010]
    valid = next(iter(eval_batches(split, "valid", max_len=50, batch_size=10)))
    assert valid.lengths.tolist() == [10, 3, 1] and raw_items(ds, valid.targets).tolist() == [110, 203, 301]
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


def test_to_torch():
    torch = pytest.importorskip("torch")
    batch = next(iter(eval_batches(leave_one_out(five_users()), "test", 4, 2))).to_torch("cpu")
    assert isinstance(batch.items, torch.Tensor) and batch.items.dtype == torch.int64
    assert batch.target_times.tolist() == [110, 1040]
