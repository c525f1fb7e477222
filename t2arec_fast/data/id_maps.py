"""Raw ids from a data file ↔ the model's contiguous ids (the layout of a checkpoint's id_maps; see
data/dataset.py: `item_ids[i]` is the raw id of model item i, index 0 the padding placeholder)."""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["ItemIdMap"]


class ItemIdMap:
    """Raw item ids (from the data file) ↔ model ids 1..n_items, from an array whose index i holds the raw id of
    model id i (index 0 = padding placeholder) — the layout of a checkpoint's id_maps["item_ids"]."""

    def __init__(self, raw_ids: np.ndarray):
        self.raw_ids = np.asarray(raw_ids)
        body = self.raw_ids[1:]
        self._order = np.argsort(body, kind="stable")
        self._sorted = body[self._order]

    @classmethod
    def from_model(cls, model) -> Optional["ItemIdMap"]:
        maps = model.id_maps or {}
        return cls(maps["item_ids"]) if "item_ids" in maps else None

    def to_model(self, raw: np.ndarray) -> np.ndarray:
        """(m,) raw ids → int64 model ids; 0 for ids the model does not know. Text and numbers compare as text when
        either side is text (a CSV may give 12 where the map holds "12"), else as numbers of a common type."""
        raw = np.asarray(raw)
        keys = self._sorted
        if keys.dtype.kind in "USO" or raw.dtype.kind in "USO":
            keys, raw = keys.astype(str), raw.astype(str)     # unsized str: no truncation to the map's width
        else:
            common = np.result_type(keys.dtype, raw.dtype)
            keys, raw = keys.astype(common), raw.astype(common)
        if len(keys) == 0:
            return np.zeros(len(raw), np.int64)
        at = np.searchsorted(keys, raw).clip(0, len(keys) - 1)
        return np.where(keys[at] == raw, self._order[at] + 1, 0).astype(np.int64)

    def to_raw(self, ids: np.ndarray) -> np.ndarray:
        return self.raw_ids[np.asarray(ids)]
