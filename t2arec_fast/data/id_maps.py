"""Raw ids from a data file ↔ the model's contiguous ids (the layout of a checkpoint's id_maps; see
data/dataset.py: `item_ids[i]` is the raw id of model item i, index 0 the padding placeholder; `user_ids[u]` the raw
id of user row u). Raw ids compare as tokens (docs/data.md, "Ids"): "007" is not 7, "12" is 12.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["IdMap", "ItemIdMap", "UserIdMap", "UNKNOWN_IDS"]

# what reading data through a model's maps does with ids the model does not know (load_dataset(unknown_ids=...),
# --unknown-ids): refuse, naming them, or drop their events and count them
UNKNOWN_IDS = ("error", "drop")


class IdMap:
    """Raw ids ↔ contiguous ids `first`, `first` + 1, ... from an array whose index i holds the raw id of id i
    (indices below `first` are placeholders). Unknown raw ids map to `first` − 1 (0 for items, −1 for users)."""

    first = 0
    saved_as = ""                 # the key of this map in a checkpoint's id_maps

    def __init__(self, raw_ids: np.ndarray):
        self.raw_ids = np.asarray(raw_ids)
        body = self.raw_ids[self.first:]
        self._order = np.argsort(body, kind="stable")
        self._sorted = body[self._order]

    def __len__(self) -> int:
        return len(self._sorted)

    @classmethod
    def from_model(cls, model) -> Optional["IdMap"]:
        """The map saved with `model`'s checkpoint, or None when it has none."""
        maps = model.id_maps or {}
        return cls(maps[cls.saved_as]) if cls.saved_as in maps else None

    def to_model(self, raw: np.ndarray) -> np.ndarray:
        """(m,) raw ids → int64 ids; `first` − 1 for ids not in the map. Text and numbers compare as text when
        either side is text (a CSV may give 12 where the map holds "12"), else as numbers of a common type."""
        raw = np.asarray(raw)
        keys = self._sorted
        if keys.dtype.kind in "USO" or raw.dtype.kind in "USO":
            keys, raw = keys.astype(str), raw.astype(str)     # unsized str: no truncation to the map's width
        else:
            common = np.result_type(keys.dtype, raw.dtype)
            keys, raw = keys.astype(common), raw.astype(common)
        if len(keys) == 0:
            return np.full(len(raw), self.first - 1, np.int64)
        at = np.searchsorted(keys, raw).clip(0, len(keys) - 1)
        return np.where(keys[at] == raw, self._order[at] + self.first, self.first - 1).astype(np.int64)

    def to_raw(self, ids: np.ndarray) -> np.ndarray:
        """(m,) int model ids → their raw ids (IndexError for an id outside the map)."""
        return self.raw_ids[np.asarray(ids)]


class ItemIdMap(IdMap):
    """Raw item ids ↔ model item ids 1..n_items (0 = padding; also what an unknown raw id maps to)."""

    first = 1
    saved_as = "item_ids"


class UserIdMap(IdMap):
    """Raw user ids ↔ the user rows 0..n_users−1 of the data set a model was trained on (−1 = unknown)."""

    first = 0
    saved_as = "user_ids"
