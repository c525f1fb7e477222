"""From raw interactions to a SequenceDataset: id maps, iterative k-core, chronological order, CSR layout.

Everything is a handful of whole-array numpy/pyarrow passes, so ten million interactions take seconds.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .dataset import SequenceDataset
from .errors import DataError
from .id_maps import UNKNOWN_IDS, ItemIdMap, UserIdMap
from .validate import integer_ids_if_canonical

RawIds = Union[np.ndarray, pa.Array]


@dataclass
class Interactions:
    """What every reader returns: one row per event, raw ids (tokens), int64 unix seconds, in file order."""
    users: RawIds
    items: RawIds
    timestamps: np.ndarray
    name: str
    format: str
    files: list = field(default_factory=list)          # on-disk paths the data came from (hashed for stats)
    extras: dict = field(default_factory=dict)         # optional per-event columns carried through (synthetic)
    subsecond: Optional[np.ndarray] = None             # time below a second, only to order same-second events
    time_unit: str = "s"                               # unit of the input's times: s, ms, us, ns
    time_unit_source: str = "given"                    # "detected" (by magnitude), "given", "date-time"
    ratings: Optional[np.ndarray] = None               # float64 per event; read only when a threshold needs it
    meta: dict = field(default_factory=dict)           # what the reader filtered: min_rating and rows it dropped

    def __len__(self) -> int:
        return len(self.timestamps)


def keep_min_rating(raw: Interactions, min_rating: float) -> Interactions:
    """The events rated at least `min_rating` (RecBole's `val_interval: {rating: "[min_rating,inf)"}`), in file
    order, with the threshold and the number of rows it dropped in `raw.meta` (docs/data.md, "Ratings").
    Applied before the k-core, so the k-core counts only the kept events.

    raw.ratings must be set (the readers parse the rating column when a threshold is given)."""
    keep = raw.ratings >= min_rating
    dropped = int(len(keep) - np.count_nonzero(keep))
    meta = {**raw.meta, "min_rating": float(min_rating), "rows_dropped_by_min_rating": dropped,
            "users_dropped_by_min_rating": 0, "items_dropped_by_min_rating": 0}
    if not dropped:
        return dataclasses.replace(raw, meta=meta)
    rows = np.flatnonzero(keep)
    kept = dataclasses.replace(
        raw, users=_take_ids(raw.users, rows), items=_take_ids(raw.items, rows), timestamps=raw.timestamps[rows],
        subsecond=None if raw.subsecond is None else raw.subsecond[rows], ratings=raw.ratings[rows],
        extras={key: value[rows] for key, value in raw.extras.items()}, meta=meta)
    meta["users_dropped_by_min_rating"] = _distinct(raw.users) - _distinct(kept.users)
    meta["items_dropped_by_min_rating"] = _distinct(raw.items) - _distinct(kept.items)
    return kept


def _distinct(ids: RawIds) -> int:
    """Distinct ids of a column; a dictionary-encoded one counts its indices (the readers' dictionaries hold each
    id once)."""
    if isinstance(ids, np.ndarray):
        return len(np.unique(ids))
    array = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    return pc.count_distinct(array.indices if pa.types.is_dictionary(array.type) else array).as_py()


def _take_ids(ids: RawIds, rows: np.ndarray) -> RawIds:
    """The given rows of an id column (numpy array or pyarrow array, dictionary-encoded or not). A dictionary is
    rebuilt from the rows kept: ids left without rows must not enter the vocabulary (factorize reads it), where
    the k-core report would count them as dropped by min_count."""
    if isinstance(ids, np.ndarray):
        return ids[rows]
    taken = ids.take(pa.array(rows))
    if isinstance(taken, pa.ChunkedArray):
        taken = taken.combine_chunks()
    return taken.dictionary_decode().dictionary_encode() if pa.types.is_dictionary(taken.type) else taken


def build_dataset(raw: Interactions, min_count: int = 10, default_max_len: Optional[int] = None,
                  id_maps: Optional[dict] = None, unknown_ids: str = "error") -> SequenceDataset:
    """k-core filter, contiguous ids (users 0..U-1 rows, items 1..I with 0 = padding) and per-user time order.

    id_maps:     a checkpoint's saved maps ({"item_ids": ..., "user_ids": ...}, model.id_maps): ids are numbered as
                 the model knows them instead of afresh, so the same raw id is the same model id (evaluation on
                 new or edited files); users of the map absent from the file get empty rows.
    unknown_ids: what to do with events whose item or user is not in `id_maps` (after the k-core): "error"
                 (refuse, naming how many and examples) or "drop" (remove them; counted in `ds.meta`).

    Raises:
        DataError: unknown ids with unknown_ids="error", or an unknown_ids value other than "error"/"drop".
    """
    user_codes, user_vocab = factorize(raw.users)
    item_codes, item_vocab = factorize(raw.items)
    rows = kcore_rows(user_codes, item_codes, len(user_vocab), len(item_vocab), min_count)
    timestamps, subsecond, extras = raw.timestamps, raw.subsecond, dict(raw.extras)
    if rows is not None:
        user_codes, item_codes, timestamps, subsecond, extras = _take(rows, user_codes, item_codes, timestamps,
                                                                      subsecond, extras)
    meta = {"time_unit": raw.time_unit, "time_unit_source": raw.time_unit_source, **raw.meta,
            **_kcore_report(raw, user_vocab, item_vocab, user_codes, item_codes, min_count)}
    user_codes, user_vocab = _compact(user_codes, user_vocab, first=0)
    item_codes, item_vocab = _compact(item_codes, item_vocab, first=1)
    if id_maps:
        user_codes, item_codes, user_vocab, item_ids, rows, meta["unknown_ids"] = through_saved_maps(
            user_codes, item_codes, user_vocab, item_vocab, id_maps, unknown_ids, raw.name)
        if rows is not None:
            user_codes, item_codes, timestamps, subsecond, extras = _take(rows, user_codes, item_codes, timestamps,
                                                                          subsecond, extras)
    else:
        item_ids = np.concatenate([_padding_placeholder(item_vocab), item_vocab])
    order = chronological_order(user_codes, timestamps, subsecond)
    if order is not None:
        user_codes, item_codes, timestamps, _, extras = _take(order, user_codes, item_codes, timestamps, None, extras)
    offsets = np.zeros(len(user_vocab) + 1, dtype=np.int64)
    np.cumsum(np.bincount(user_codes, minlength=len(user_vocab)), out=offsets[1:])
    return SequenceDataset(name=raw.name, offsets=offsets, items=item_codes.astype(np.int64), timestamps=timestamps,
                           user_ids=user_vocab, item_ids=item_ids, format=raw.format, files=list(raw.files),
                           min_count=min_count, default_max_len=default_max_len, extras=extras, meta=meta)


def _take(rows, users, items, timestamps, subsecond, extras) -> tuple:
    """The same rows of every per-event array."""
    return (users[rows], items[rows], timestamps[rows], None if subsecond is None else subsecond[rows],
            {key: value[rows] for key, value in extras.items()})


def through_saved_maps(user_codes, item_codes, user_vocab, item_vocab, id_maps: dict, unknown_ids: str,
                       name: str) -> tuple:
    """Renumber a file's users and items (codes into its own vocabularies; items from 1) as a checkpoint's saved
    maps number them. → (user rows, model item ids, user id map, item id map, rows kept or None, report).

    Raises:
        DataError: unknown ids and unknown_ids == "error"; a bad unknown_ids value.
    """
    if unknown_ids not in UNKNOWN_IDS:
        raise DataError(f"unknown_ids={unknown_ids!r}: expected one of {', '.join(UNKNOWN_IDS)}")
    item_of = ItemIdMap(id_maps["item_ids"]).to_model(item_vocab)            # per vocabulary entry; 0 = unknown
    items = item_of[item_codes - 1]
    if "user_ids" in id_maps:
        user_map = UserIdMap(id_maps["user_ids"])
        users, user_ids = user_map.to_model(user_vocab)[user_codes], user_map.raw_ids
    else:                                       # a checkpoint from before user maps were saved: rows as read
        users, user_ids = user_codes.astype(np.int64), user_vocab
    bad = (items == 0) | (users < 0)
    unknown_items = item_vocab[np.unique(item_codes[items == 0]) - 1]
    unknown_users = user_vocab[np.unique(user_codes[users < 0])]
    report = {"policy": unknown_ids, "items": len(unknown_items), "users": len(unknown_users),
              "events_dropped": int(bad.sum()) if unknown_ids == "drop" else 0}
    if bad.any() and unknown_ids == "error":
        raise DataError(f"{int(bad.sum()):,} events have ids the model was not trained on: {len(unknown_items):,} "
                        f"unknown items{_examples(unknown_items)} and {len(unknown_users):,} unknown users"
                        f"{_examples(unknown_users)}; drop those events with unknown_ids='drop' (Python) or "
                        f"--unknown-ids drop (command line)", name or None)
    rows = np.flatnonzero(~bad) if bad.any() else None
    return users, items, user_ids, np.asarray(id_maps["item_ids"]), rows, report


def _examples(ids: np.ndarray, limit: int = 3) -> str:
    if len(ids) == 0:
        return ""
    shown = ", ".join(repr(v) for v in ids[:limit].tolist())
    return f" ({shown}{', ...' if len(ids) > limit else ''})"


def _kcore_report(raw: Interactions, user_vocab, item_vocab, user_codes, item_codes, min_count: int) -> dict:
    """What the k-core removed (rows, users, items): reported in the statistics, never dropped silently. Rows read
    count the file's rows, also those a rating threshold dropped before the k-core (keep_min_rating)."""
    kept_users = np.count_nonzero(np.bincount(user_codes, minlength=len(user_vocab)))
    kept_items = np.count_nonzero(np.bincount(item_codes, minlength=len(item_vocab)))
    rows_read = len(raw) + raw.meta.get("rows_dropped_by_min_rating", 0)
    return {"rows_read": rows_read, "rows_dropped_by_min_count": len(raw) - len(user_codes),
            "users_dropped_by_min_count": len(user_vocab) - int(kept_users),
            "items_dropped_by_min_count": len(item_vocab) - int(kept_items)}


def factorize(raw: RawIds) -> tuple[np.ndarray, np.ndarray]:
    """(codes 0..K-1 (int32 when they fit), vocabulary of K raw ids in sorted order). Hash-based: linear time.

    Ids are compared as given (tokens): distinct tokens always get distinct codes. When every distinct token is a
    canonical decimal integer the vocabulary is int64 and numbered in numeric order, else text in text order.
    """
    array = raw if isinstance(raw, (pa.Array, pa.ChunkedArray)) else pa.array(raw)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    encoded = array if pa.types.is_dictionary(array.type) else array.dictionary_encode()
    dictionary = integer_ids_if_canonical(encoded.dictionary)
    order = pc.array_sort_indices(dictionary).to_numpy()
    code_type = np.int32 if len(order) < 2 ** 31 else np.int64   # half the memory traffic in the k-core passes
    rank = np.empty(len(order), dtype=code_type)
    rank[order] = np.arange(len(order), dtype=code_type)
    codes = rank[encoded.indices.to_numpy()]
    vocab = dictionary.take(pa.array(order)).to_numpy(zero_copy_only=False)
    return codes, vocab


def ids_as_numpy(raw: RawIds) -> np.ndarray:
    """Raw ids as one numpy array per row, by the rule of `factorize`: int64 when every distinct id is a canonical
    decimal integer, else the tokens (object array of str)."""
    if isinstance(raw, np.ndarray):
        return raw
    array = raw.combine_chunks() if isinstance(raw, pa.ChunkedArray) else raw
    encoded = array if pa.types.is_dictionary(array.type) else array.dictionary_encode()
    values = integer_ids_if_canonical(encoded.dictionary).to_numpy(zero_copy_only=False)
    return values[encoded.indices.to_numpy()]


def kcore_rows(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, k: int) -> Optional[np.ndarray]:
    """Indices of the rows kept by the iterative k-core (every user and item has >= k events), or None for all.

    Removing rare items can push users under k and the other way round, so repeat until nothing changes. The
    arrays shrink every round, so later rounds are cheap.
    """
    if k <= 1:
        return None
    kept = np.arange(len(users), dtype=np.int64)
    while True:
        user_ok = np.bincount(users, minlength=n_users) >= k
        item_ok = np.bincount(items, minlength=n_items) >= k
        ok = user_ok[users] & item_ok[items]
        if ok.all():
            return kept
        kept, users, items = kept[ok], users[ok], items[ok]


def chronological_order(users: np.ndarray, timestamps: np.ndarray,
                        subsecond: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """Stable order by (user, time), so ties keep file order; None when the data is already in that order.

    `subsecond` (the time below a second, from ms/us/ns or fractional input) orders events of the same second, so
    keeping whole seconds never reorders events."""
    if len(users) == 0:
        return None
    if subsecond is not None:  # least significant key first; the stable (user, second) sort keeps its order
        by_subsecond = np.argsort(subsecond, kind="stable")
        return by_subsecond[_stable_order(timestamps[by_subsecond] - timestamps.min(), users[by_subsecond])]
    same_user = users[1:] == users[:-1]
    if (np.all(users[1:] >= users[:-1])
            and np.all(timestamps[1:][same_user] >= timestamps[:-1][same_user])):
        return None
    return _stable_order(timestamps - timestamps.min(), users)


def _stable_order(time_offsets: np.ndarray, users: np.ndarray) -> np.ndarray:
    """argsort by (user, time), stable. np.lexsort does this but is slow; sorting int64 keys that carry the row
    index in their low bits is a plain (SIMD) value sort, unique keys make it stable, and it takes two passes:
    by time, then by user keeping that order. Falls back to lexsort when the keys would not fit in 63 bits."""
    n = len(users)
    row_bits = max(int(n - 1).bit_length(), 1)
    time_bits = int(time_offsets.max()).bit_length()
    user_bits = int(users.max()).bit_length()
    if max(time_bits, user_bits) + row_bits > 63:
        return np.lexsort((time_offsets, users))
    low = (1 << row_bits) - 1
    rows = np.arange(n, dtype=np.int64)
    by_time = np.sort((time_offsets << row_bits) | rows) & low
    by_user = np.sort((users[by_time].astype(np.int64) << row_bits) | rows) & low
    return by_time[by_user]


def _compact(codes: np.ndarray, vocab: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:
    """Renumber the codes still present as first, first+1, ... keeping vocabulary (sorted raw id) order."""
    present = np.bincount(codes, minlength=len(vocab)) > 0
    if present.all():
        return codes + first if first else codes, vocab
    new_code = (np.cumsum(present) - 1 + first).astype(codes.dtype)
    return new_code[codes], vocab[present]


def _padding_placeholder(vocab: np.ndarray) -> np.ndarray:
    """Raw id shown for item 0 (padding): 0 for integer ids, '[PAD]' for tokens."""
    if vocab.dtype.kind in "iu":
        return np.zeros(1, dtype=vocab.dtype)
    return np.array(["[PAD]"], dtype=vocab.dtype if vocab.dtype.kind == "U" else object)
