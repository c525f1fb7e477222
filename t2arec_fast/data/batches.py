"""Left-padded mini-batches for training and evaluation, gathered from the CSR arrays in one numpy pass each.

Padding goes on the LEFT so the last column is every user's most recent event (docs/model.md §2): the model reads the
final state after the last column, with no per-sequence offsets.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Iterator, Optional

import numpy as np

from .dataset import SequenceDataset
from .split import Split


@dataclass
class Batch:
    """One mini-batch; numpy arrays (or torch tensors after `to_torch`). B users, L = longest input in the batch.

    items (B, L) input item ids, 0 = padding on the left;  times (B, L) their unix seconds, 0 at pads;
    lengths (B,) real inputs per row;  next_items (B, L) the item following each input position, 0 at pads
    (its last column equals targets);  targets (B,) the item after the last input;  target_times (B,) its
    timestamp t_{n+1};  users (B,) user rows.
    """
    items: np.ndarray
    times: np.ndarray
    lengths: np.ndarray
    next_items: Optional[np.ndarray]
    targets: np.ndarray
    target_times: np.ndarray
    users: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    def to_torch(self, device=None, non_blocking: bool = False) -> "Batch":
        """The same batch as torch tensors (int64, as the arrays) on `device`."""
        import torch
        moved = {f.name: None if getattr(self, f.name) is None
                 else torch.as_tensor(getattr(self, f.name)).to(device, non_blocking=non_blocking)
                 for f in fields(self)}
        return replace(self, **moved)


class Batches:
    """A re-iterable, sized sequence of batches (len() works, e.g. for progress bars)."""

    def __init__(self, ds: SequenceDataset, starts: np.ndarray, lengths: np.ndarray, users: np.ndarray,
                 batch_size: int, rank: int = 0, world_size: int = 1, last_target_only: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..world_size-1, got rank={rank}, world_size={world_size}")
        self.ds, self.starts, self.lengths, self.users = ds, starts, lengths, users
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.last_target_only = last_target_only
        self.n_global = -(-len(starts) // batch_size)

    def __len__(self) -> int:
        return len(range(self.rank, self.n_global, self.world_size))

    @property
    def n_targets(self) -> int:
        """Training targets over all ranks' batches: one per input of a window, one per prefix sample."""
        return len(self.starts) if self.last_target_only else int(self.lengths.sum())

    def __iter__(self) -> Iterator[Batch]:
        # rank r of w takes global batches r, r+w, ...: together the ranks see exactly the batches of one process
        for b in range(self.rank, self.n_global, self.world_size):
            chosen = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield gather(self.ds, self.starts[chosen], self.lengths[chosen], self.users[chosen],
                         self.last_target_only)


TRAIN_SAMPLES = ("windows", "prefixes")


def train_batches(split: Split, max_len: int, batch_size: int, shuffle: bool = True, seed: int = 0, epoch: int = 0,
                  rank: int = 0, world_size: int = 1, bucket: bool = True, samples: str = "windows") -> Batches:
    """Training samples of at most max_len inputs, each training target used once per epoch.

    A training sequence of m events has m-1 targets. samples="windows": one sample per user (longer sequences are
    cut into windows from the end, so the most recent window is complete) with a target at every position — one
    causal pass serves them all. samples="prefixes" (RecBole's augmentation): every target is its own sample, the
    ≤ max_len events before it, with a target at the last position only (`next_items` is 0 elsewhere); batches
    then hold `batch_size` targets from many users, each with its own dropout, at ≈ mean-length times the
    compute. With shuffle the order depends on (seed, epoch) only, identical on every rank; `bucket` groups samples
    of similar length into the same batch (less padding) before the batches are shuffled.

    Raises:
        ValueError: unknown `samples`, batch_size < 1 or max_len < 1.
    """
    if samples not in TRAIN_SAMPLES:
        raise ValueError(f"train_samples must be one of {TRAIN_SAMPLES}, got {samples!r}")
    starts, lengths, users = (training_windows if samples == "windows" else training_prefixes)(split, max_len)
    if shuffle:
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(starts))
        if bucket:
            # buckets of global batches (batch_size · world_size rows): the same rows as one process would use
            order = order[_length_buckets(lengths[order], batch_size * world_size, rng)]
        starts, lengths, users = starts[order], lengths[order], users[order]
    return Batches(split.dataset, starts, lengths, users, batch_size, rank, world_size,
                   last_target_only=samples == "prefixes")


def _length_buckets(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                    batches_per_bucket: int = 16) -> np.ndarray:
    """A reordering of already-shuffled windows so that each batch holds windows of similar length.

    Windows are sorted by length inside buckets of `batches_per_bucket` batches, cut into batches, and the batches
    are shuffled. Real data has many short histories: without this, over half of a batch's columns are padding
    that the scan still processes (ml-100k, L = 200: 56%).
    """
    span = batch_size * batches_per_bucket
    position = np.arange(len(lengths))
    bucket = position // span
    within = np.lexsort((position, -lengths, bucket))               # by bucket, then longest first, stable
    batch_of = np.arange(len(lengths)) // batch_size
    batch_rank = rng.permutation(batch_of[-1] + 1) if len(lengths) else batch_of
    return within[np.argsort(batch_rank[batch_of], kind="stable")]


def eval_batches(split: Split, part: str, max_len: int, batch_size: int, rank: int = 0,
                 world_size: int = 1, order: Optional[np.ndarray] = None) -> Batches:
    """Validation or test examples in user order (or in `order`: a permutation of the indices of
    split.part(part)): the last max_len events before each target (`Batch`, whose next_items is 0 except its last
    column).

    Raises:
        ValueError: `part` not "valid" or "test", batch_size < 1, a rank outside 0..world_size−1, or an `order`
            that is not a permutation of the part's examples.
    """
    examples = split.part(part)
    first = split.dataset.offsets[examples.users]
    starts = np.maximum(first, examples.stops - max_len)
    lengths, users = examples.stops - starts, examples.users
    if order is not None:
        order = np.asarray(order)
        if order.shape != users.shape or not np.array_equal(np.sort(order), np.arange(len(users))):
            raise ValueError(f"order must be a permutation of the {len(users)} {part} examples")
        starts, lengths, users = starts[order], lengths[order], users[order]
    return Batches(split.dataset, starts, lengths, users, batch_size, rank, world_size)


def training_windows(split: Split, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input start, input length, user) of every training window, int64 (n_windows,) each (start: an index
    into the dataset's CSR arrays); window j counts back from the end.

    Raises:
        ValueError: max_len < 1.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    first = split.dataset.offsets[:-1]
    stop = split.train_stop
    n_targets = np.maximum(stop - first - 1, 0)
    n_windows = -(-n_targets // max_len)
    users = np.repeat(np.arange(len(first), dtype=np.int64), n_windows)
    window = np.arange(len(users), dtype=np.int64) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
    target_end = stop[users] - window * max_len                   # exclusive end of this window's targets
    target_start = np.maximum(first[users] + 1, target_end - max_len)
    return target_start - 1, target_end - target_start, users


def training_prefixes(split: Split, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input start, input length, user), int64 (n_targets,) each, with one sample per training target: the
    ≤ max_len events before it.

    Raises:
        ValueError: max_len < 1.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    first = split.dataset.offsets[:-1]
    n_targets = np.maximum(split.train_stop - first - 1, 0)
    users = np.repeat(np.arange(len(first), dtype=np.int64), n_targets)
    nth = np.arange(len(users), dtype=np.int64) - np.repeat(np.cumsum(n_targets) - n_targets, n_targets)
    target = first[users] + 1 + nth
    starts = np.maximum(first[users], target - max_len)
    return starts, target - starts, users


def gather(ds: SequenceDataset, starts: np.ndarray, lengths: np.ndarray, users: np.ndarray,
           last_target_only: bool = False) -> Batch:
    """Left-padded batch of inputs items[start:start+length]; the target is the event right after.
    `last_target_only`: next_items holds the target in the last column only (0 elsewhere)."""
    width = int(lengths.max()) if len(lengths) else 0
    pads = width - lengths
    column = np.arange(width, dtype=np.int64)
    real = column[None, :] >= pads[:, None]
    position = np.where(real, starts[:, None] + column[None, :] - pads[:, None], 0)
    after = starts + lengths
    has_target = real & (column[None, :] == width - 1) if last_target_only else real
    return Batch(items=np.where(real, ds.items[position], 0),
                 times=np.where(real, ds.timestamps[position], 0),
                 lengths=lengths.astype(np.int64, copy=False),
                 next_items=np.where(has_target, ds.items[np.minimum(position + 1, len(ds.items) - 1)], 0),
                 targets=ds.items[after],
                 target_times=ds.timestamps[after],
                 users=users.astype(np.int64, copy=False))
