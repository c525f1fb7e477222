"""SequenceDataset: every user's events in time order, stored as one CSR layout of numpy arrays."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

# Data with long dense histories (MovieLens-like) gets windows of 200 events, sparse data (Amazon, Yelp) 50, as in
# the paper. "Long" means a mean history of at least this many events.
LONG_HISTORY_MEAN = 50
LONG_MAX_LEN, SHORT_MAX_LEN = 200, 50


@dataclass
class SequenceDataset:
    """Users' chronological (item, timestamp) sequences.

    Row u holds items[offsets[u]:offsets[u+1]] and the same slice of timestamps (int64 unix seconds), sorted by
    time, ties in file order. Items are contiguous 1..n_items; 0 is padding. `user_ids[u]` and `item_ids[i]` give
    the raw ids back (item_ids[0] is a placeholder for padding), e.g. for export and serving.
    """
    name: str
    offsets: np.ndarray                    # int64 (n_users + 1,)
    items: np.ndarray                      # int64 (n_interactions,)
    timestamps: np.ndarray                 # int64 (n_interactions,)
    user_ids: np.ndarray                   # (n_users,) raw user ids
    item_ids: np.ndarray                   # (n_items + 1,) raw item ids, index 0 = padding placeholder
    format: str = "unknown"
    files: list = field(default_factory=list)
    min_count: int = 0
    default_max_len: Optional[int] = None  # None: chosen from the mean history length
    shift_times: Optional[list] = None     # synthetic data: per user, int64 times at which interests shifted
    extras: dict = field(default_factory=dict)   # optional per-event arrays in CSR order (synthetic ground truth)
    meta: dict = field(default_factory=dict)     # anything else a source knows (generator settings, item clusters)

    def __post_init__(self):
        if self.default_max_len is None:
            self.default_max_len = LONG_MAX_LEN if self.mean_length >= LONG_HISTORY_MEAN else SHORT_MAX_LEN
        self._stats_cache: Optional[dict] = None

    @property
    def n_users(self) -> int:
        """Users (rows)."""
        return len(self.offsets) - 1

    @property
    def n_items(self) -> int:
        """Real items; model ids are 1..n_items."""
        return len(self.item_ids) - 1

    @property
    def n_interactions(self) -> int:
        """Events over all users."""
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        """int64 (n_users,) events per user."""
        return np.diff(self.offsets)

    @property
    def mean_length(self) -> float:
        """Mean events per user (0.0 without users)."""
        return float(self.n_interactions / self.n_users) if self.n_users else 0.0

    def user_of_event(self) -> np.ndarray:
        """(n_interactions,) the row of the user each event belongs to."""
        return np.repeat(np.arange(self.n_users, dtype=np.int64), self.lengths)

    def sequence(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        """(items, timestamps) of user row u, as views."""
        start, stop = self.offsets[u], self.offsets[u + 1]
        return self.items[start:stop], self.timestamps[start:stop]

    def stats(self, with_hash: bool = True) -> dict:
        """Users, items, interactions, length and time statistics, sha256 of the input files (see data.stats)."""
        from .stats import dataset_stats
        if self._stats_cache is None or (with_hash and self._stats_cache.get("files") is None):
            self._stats_cache = dataset_stats(self, with_hash=with_hash)
        return dict(self._stats_cache)

    def __repr__(self) -> str:
        return (f"SequenceDataset({self.name!r}, users={self.n_users:,}, items={self.n_items:,}, "
                f"interactions={self.n_interactions:,})")
