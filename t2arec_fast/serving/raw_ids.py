"""Raw ids at the serving boundary: users as any token, items as the data file names them.

The recommender keys users by int64 and scores the model's item ids 1..n_items. `UserKeys` turns raw user ids
(strings or numbers, as a data file has them) into int64 keys and is saved with the recommender, so that a user keeps
their key across a restart and a user never seen before gets a fresh key (a cold start) — before, string ids were
numbered per file, and a new user in a second file took over the state of the first user of the first.
`RawIdServing` (mixed into OnlineRecommender) adds `observe_raw` / `recommend_raw`, which map items through the
model's saved item map (`data.ItemIdMap`) and users through `UserKeys`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np

from t2arec_fast.errors import InputError

__all__ = ["UserKeys", "RawIdServing", "TOKEN_KEYS_FROM"]

# Keys of text ids start here. An integer id below it is its own key (what the int64 Python API has always used),
# so the two ranges never meet; an integer id at or above it is treated as text.
TOKEN_KEYS_FROM = 1 << 62
_CANONICAL_INTEGER = re.compile(r"^(0|-?[1-9][0-9]{0,18})$")


class UserKeys:
    """Raw user ids → int64 user keys, stable across save/load. A canonical decimal integer id (as a token: "12",
    not "012") in [−2^62, 2^62) is its own key; any other id gets the next free key from 2^62 up, remembered.

    store: a `RedisStateStore` whose prefix holds the text ids' keys for every serving process
    (`RedisStateStore.user_indices`: allocated atomically in Redis, so two processes give an id the same key);
    keys already seen are remembered here too (a key never changes). None: the keys are this object's own."""

    def __init__(self, tokens: Optional[np.ndarray] = None, keys: Optional[np.ndarray] = None, store=None):
        tokens = [] if tokens is None else [str(t) for t in tokens]
        keys = [] if keys is None else [int(k) for k in keys]
        self._key_of = dict(zip(tokens, keys))
        self._next = max(keys, default=TOKEN_KEYS_FROM - 1) + 1
        self._store = store

    def __len__(self) -> int:
        """How many text ids have a key."""
        return len(self._key_of)

    def keys_for(self, raw_ids) -> np.ndarray:
        """(n,) raw ids → (n,) int64 keys; a text id seen for the first time gets the next free key."""
        raw = np.asarray(raw_ids)
        if raw.dtype.kind in "iu" and (raw.size == 0 or (raw.min() >= -TOKEN_KEYS_FROM and raw.max() < TOKEN_KEYS_FROM)):
            return raw.astype(np.int64)
        tokens, inverse = np.unique(raw.astype(str), return_inverse=True)
        if self._store is not None:                   # new text ids get their keys from the shared store, at once
            new = [t for t in tokens.tolist() if not _is_own_key(t) and t not in self._key_of]
            self._key_of.update(zip(new, (TOKEN_KEYS_FROM + self._store.user_indices(new)).tolist()))
        keys = np.fromiter((self._key(t) for t in tokens.tolist()), np.int64, len(tokens))
        return keys[inverse.reshape(-1)]

    def _key(self, token: str) -> int:
        if _is_own_key(token):
            return int(token)
        key = self._key_of.get(token)
        if key is None:
            key = self._key_of[token] = self._next
            self._next += 1
        return key

    def save(self, path) -> None:
        """The text ids' keys as an npz (tokens, keys). Raises: InputError with a shared store (Redis holds them)."""
        if self._store is not None:
            raise InputError(f"UserKeys: the text user ids' keys live in {self._store!r}; there is nothing to save")
        tokens = np.array(list(self._key_of), dtype=str) if self._key_of else np.zeros(0, dtype="<U1")
        keys = np.fromiter(self._key_of.values(), np.int64, len(self._key_of))
        with open(path, "wb") as handle:
            np.savez(handle, tokens=tokens, keys=keys)

    @classmethod
    def load(cls, path) -> "UserKeys":
        """The saved keys, or an empty map when `path` does not exist (a folder saved before user keys were)."""
        if not Path(path).is_file():
            return cls()
        with np.load(path, allow_pickle=False) as arrays:
            return cls(arrays["tokens"], arrays["keys"])


def _is_own_key(token: str) -> bool:
    """A canonical decimal integer in [−2^62, 2^62): the id is its own key."""
    return bool(_CANONICAL_INTEGER.match(token)) and -TOKEN_KEYS_FROM <= int(token) < TOKEN_KEYS_FROM


class RawIdServing:
    """observe / recommend with the ids of a data file (mixed into OnlineRecommender; docs/serving.md)."""

    def item_ids_of(self, raw_items) -> np.ndarray:
        """(n,) raw item ids → model item ids (0 where the model does not know the item).

        Raises:
            InputError: the model was saved without an item id map.
        """
        from t2arec_fast.data.id_maps import ItemIdMap
        item_map = ItemIdMap.from_model(self.model)
        if item_map is None:
            raise InputError("the model has no item id map (id_maps.npz in its checkpoint), so raw item ids cannot "
                             "be read; pass model item ids to observe/recommend instead")
        return item_map.to_model(np.asarray(raw_items))

    def user_keys_of(self, raw_users) -> np.ndarray:
        """(n,) raw user ids → int64 user keys through `self.user_keys` (new text ids get new keys; with a shared
        store, keys shared by every process on it).

        Raises:
            StoreUnavailableError, StoreCorruptError: with a shared store, when new text ids' keys cannot be had.
        """
        return self.user_keys.keys_for(raw_users)

    def observe_raw(self, user_ids, item_ids, timestamps, unknown_items: str = "error") -> int:
        """observe() with raw ids: users through `self.user_keys` (new users get new keys), items through the
        model's saved map; user_ids, item_ids (n,) raw ids, timestamps (n,) int64 unix seconds.
        unknown_items: "error" (refuse the call, nothing observed) or "drop" (skip those events).
        → how many events were dropped.

        Raises:
            InputError: arrays of different lengths, an unknown_items other than "error" / "drop", an unknown item
                with unknown_items="error" (naming it), or any observe() error; nothing is stored then.
        """
        from t2arec_fast.data.id_maps import UNKNOWN_IDS   # the data readers' choice for unknown ids, the same two
        if unknown_items not in UNKNOWN_IDS:
            raise InputError(f"observe_raw: unknown_items must be 'error' or 'drop', got {unknown_items!r}")
        users, raw_items, times = np.asarray(user_ids), np.asarray(item_ids), np.asarray(timestamps)
        if not (len(users) == len(raw_items) == len(times)):
            raise InputError(f"observe_raw: user_ids, item_ids and timestamps differ in length "
                             f"({len(users)}, {len(raw_items)}, {len(times)})")
        items = self.item_ids_of(raw_items)
        unknown = items == 0
        if unknown.any() and unknown_items == "error":
            first = int(np.flatnonzero(unknown)[0])
            raise InputError(f"observe_raw: item {raw_items[first].item()!r} is not in the model's item map "
                             f"({int(unknown.sum())} such events; unknown_items='drop' skips them)")
        keep = ~unknown
        self.observe(self.user_keys_of(users[keep]), items[keep], times[keep])
        return int(unknown.sum())

    def recommend_raw(self, user_ids, k: int = 10, **options):
        """recommend() for raw user ids, answering raw item ids: → ((n, k) raw item ids, (n, k) float32 scores).
        A user never observed is a cold start (the most observed items), as in recommend()."""
        from t2arec_fast.data.id_maps import ItemIdMap
        items, scores = self.recommend(self.user_keys_of(user_ids), k=k, **options)
        item_map = ItemIdMap.from_model(self.model)
        return (items if item_map is None else item_map.to_raw(items)), scores
