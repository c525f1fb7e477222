"""Per-user recurrent-state cache: the Python face of the C++ extension ``t2arec_fast._state_cache``.

The cache maps an int64 user id to ``state_size`` float32 values plus the int64 model version that wrote them.
It knows nothing of models: the serving layer packs a user's state (conv windows, SSM states, last output, last
timestamp, ring of recent events) into one flat vector. See docs/state_cache.md for the design and the numbers.

Rules worth knowing (all enforced in C++, with the GIL released during batch work):

* ``states`` and ``out`` must be C-contiguous float32 arrays of shape ``(len(user_ids), state_size)`` — numpy
  arrays or CPU torch tensors (shared, not copied). Anything else is refused with TypeError/ValueError; the
  state buffers are never silently copied. ``user_ids`` are converted to a contiguous int64 array (lists, other
  integer dtypes and strided views are accepted; that copy is 8 bytes per id).
* ``put`` validates the whole batch first: a NaN or inf (or, for ``dtype="float16"``, a value beyond +-65504)
  anywhere refuses the batch and stores nothing. Duplicate ids in one put: the last row wins.
* ``get`` of an entry written under another version is a miss (counted in ``stats()["stale"]`` too). Hits move
  the entry to the most recently used end; when a shard is full its least recently used entry is evicted.
* Every byte the cache allocates (payload, 24-byte slot metadata, index, bookkeeping) counts against
  ``capacity_bytes``; ``stats()["bytes"]`` reports it and never exceeds the capacity. LRU order is exact within
  a shard; ids hash to shards, so across shards it is approximate (pass ``shards=1`` for exact global LRU).
* ``save`` is atomic and durable (temporary file, fsync, rename); ``load`` refuses a truncated, corrupted or
  mismatched snapshot with :class:`SnapshotError` (a ValueError) naming the file, and builds nothing.
"""
from __future__ import annotations

import operator
import os
from typing import Any

import numpy as np

from . import _state_cache as _native

SnapshotError = _native.SnapshotError
FORMAT_VERSION = _native.FORMAT_VERSION

_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1
_DTYPES = ("float32", "float16")

__all__ = ["StateCache", "SnapshotError", "FORMAT_VERSION", "snapshot_info"]


def _cpu_numpy(x: Any, name: str) -> Any:
    """A torch tensor becomes the numpy array sharing its memory; anything else is returned unchanged."""
    if isinstance(x, np.ndarray):
        return x
    device = getattr(x, "device", None)
    if device is not None and hasattr(x, "numpy") and hasattr(x, "detach"):
        if device.type != "cpu":
            raise TypeError(f"{name} is a tensor on {device}; the state cache takes CPU memory: call .cpu() first")
        return x.detach().numpy()
    return x


_INT64_DTYPE = np.dtype(np.int64)


def _user_ids(user_ids: Any) -> np.ndarray:
    if type(user_ids) is np.ndarray and user_ids.dtype is _INT64_DTYPE:
        return user_ids  # the hot path; shape is checked (and a strided view copied) in C++
    ids = _cpu_numpy(user_ids, "user_ids")
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"user_ids must be a 1-D sequence of ids, got shape {arr.shape}"
                         + (" (wrap a single id in a list)" if arr.ndim == 0 else ""))
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"user_ids must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and int(arr.max()) > _INT64_MAX:
        raise ValueError("user_ids must fit in int64")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _version(version: Any) -> int:
    if type(version) is int and _INT64_MIN <= version <= _INT64_MAX:
        return version  # the hot path
    try:
        v = operator.index(version)
    except TypeError:
        raise TypeError(f"version must be an integer (a model version counter), got {type(version).__name__}") \
            from None
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise ValueError(f"version must fit in int64, got {v}")
    return v


def _positive_int(value: Any, name: str, allow_zero: bool = False) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else 'positive'}, got {v}")
    if v > _INT64_MAX:
        raise ValueError(f"{name} must fit in int64, got {v}")
    return v


def _dtype_name(dtype: Any) -> str:
    name = getattr(dtype, "__name__", None) or str(dtype)
    name = {"float": "float32", "half": "float16", "torch.float32": "float32", "torch.float16": "float16"}.get(
        name, name)
    if name not in _DTYPES:
        raise ValueError(f'dtype must be "float32" or "float16", got {dtype!r}')
    return name


def snapshot_info(path: str | os.PathLike) -> dict:
    """Header of a snapshot file (format_version, dtype, state_size, entry_count, capacity_bytes, shards,
    min_version, max_version, file_bytes), checked for magic, header checksum and size; records not read."""
    return _native.StateCacheCore.read_snapshot_header(os.fspath(path))


class StateCache:
    """Thread-safe LRU cache of one float32 vector per user, tagged with a model version.

    Args:
        state_size: floats per user (the serving layer's packed state length).
        capacity_bytes: memory budget, all overhead included. ``StateCache.min_capacity_bytes`` gives the
            smallest that holds one entry.
        dtype: storage precision, ``"float32"`` (exact) or ``"float16"`` (half the memory; values round to
            nearest half, must lie within +-65504). ``get`` always returns float32.
        shards: lock stripes; ``None`` picks up to 16 while each shard still holds at least 64 entries.

    Raises (constructor):
        TypeError: a size, capacity or shard count that is not an integer.
        ValueError: state_size or shards ≤ 0, a negative capacity, a value beyond int64, or another dtype.
    """

    def __init__(self, state_size: int, capacity_bytes: int, dtype: str = "float32", shards: int | None = None):
        self._core = _native.StateCacheCore(
            _positive_int(state_size, "state_size"), _positive_int(capacity_bytes, "capacity_bytes", allow_zero=True),
            _dtype_name(dtype), 0 if shards is None else _positive_int(shards, "shards"))

    @classmethod
    def _wrap(cls, core: Any) -> "StateCache":
        obj = cls.__new__(cls)
        obj._core = core
        return obj

    # ---- batch operations ----------------------------------------------------------------------------------

    def put(self, user_ids: Any, states: Any, version: int) -> None:
        """Store ``states[i]`` for ``user_ids[i]`` under ``version``. user_ids: (n,) int64; states: (n, state_size)
        float32, C-contiguous (numpy or a CPU tensor).

        Raises:
            TypeError: states not a C-contiguous float32 array, a CUDA tensor, non-integer ids or version.
            ValueError: a shape other than (n, state_size), ids beyond int64, a NaN/inf (or, float16, a value beyond
                ±65504) anywhere in states (nothing is stored then).
        """
        self._core.put(_user_ids(user_ids), _cpu_numpy(states, "states"), _version(version))

    def get(self, user_ids: Any, version: int) -> tuple[np.ndarray, np.ndarray]:
        """Returns ``(found, states)`` for user_ids (n,) int64: found (n,) bool; states (n, state_size) float32, zero
        rows for misses and for entries written under another version.

        Raises:
            TypeError, ValueError: ids that are not 1-D integers within int64, a version that is not one.
        """
        return self._core.get(_user_ids(user_ids), _version(version))

    def get_into(self, user_ids: Any, version: int, out: Any) -> np.ndarray:
        """Like :meth:`get` but writes hits into ``out`` (n, state_size) float32 (numpy or CPU tensor) and leaves
        rows of misses untouched. Returns found (n,) bool."""
        return self._core.get_into(_user_ids(user_ids), _version(version), _cpu_numpy(out, "out"))

    def delete(self, user_ids: Any) -> int:
        """Removes the given users (any version); returns how many were present."""
        return self._core.delete(_user_ids(user_ids))

    def clear(self) -> None:
        """Removes every entry and frees the payload memory; the counters in stats() are kept."""
        self._core.clear()

    # ---- inspection ----------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._core)

    def __contains__(self, user_id: Any) -> bool:
        """True when an entry exists for the user under any version; does not count as a get."""
        try:
            key = operator.index(user_id)
        except TypeError:
            return False
        return _INT64_MIN <= key <= _INT64_MAX and self._core.contains(key)

    def keys(self) -> np.ndarray:
        """int64 ids of all entries (shard by shard, least recently used first within a shard)."""
        return self._core.keys()

    def stats(self) -> dict:
        """hits, misses (stale included), stale, evictions, puts, entries, max_entries, bytes, capacity_bytes."""
        return self._core.stats()

    @property
    def state_size(self) -> int:
        return self._core.state_size

    @property
    def dtype(self) -> str:
        return self._core.dtype

    @property
    def capacity_bytes(self) -> int:
        return self._core.capacity_bytes

    @property
    def shards(self) -> int:
        return self._core.shards

    @property
    def max_entries(self) -> int:
        return self._core.max_entries

    @staticmethod
    def min_capacity_bytes(state_size: int, dtype: str = "float32") -> int:
        return _native.StateCacheCore.min_capacity_bytes(_positive_int(state_size, "state_size"), _dtype_name(dtype))

    def __repr__(self) -> str:
        s = self.stats()
        return (f"StateCache(state_size={self.state_size}, dtype={self.dtype!r}, shards={self.shards}, "
                f"entries={s['entries']}/{s['max_entries']}, bytes={s['bytes']}/{s['capacity_bytes']})")

    # ---- snapshots -----------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Writes a snapshot atomically: ``path`` holds either the previous file or the complete new one.

        Raises:
            OSError: the file cannot be written (the previous one is left as it was).
        """
        self._core.save(os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike, capacity_bytes: int | None = None, *, state_size: int | None = None,
             dtype: str | None = None, shards: int | None = None) -> "StateCache":
        """A new cache holding a snapshot's entries (versions and per-shard recency kept; hit/miss counters 0).

        capacity_bytes: None keeps the saved cache's capacity (and shard count); a smaller budget keeps the
        most recently used entries of each shard. state_size/dtype: when given, a snapshot of another layout
        is refused. Raises SnapshotError (a ValueError) naming the file for a bad snapshot, OSError for I/O.
        """
        core = _native.StateCacheCore.load(
            os.fspath(path),
            -1 if capacity_bytes is None else _positive_int(capacity_bytes, "capacity_bytes", allow_zero=True),
            0 if shards is None else _positive_int(shards, "shards"),
            0 if state_size is None else _positive_int(state_size, "state_size"),
            "" if dtype is None else _dtype_name(dtype))
        return cls._wrap(core)

    def __reduce__(self):
        raise TypeError("StateCache cannot be pickled; use save(path) and StateCache.load(path)")
