"""Helpers shared by the state-cache tests (imported by name: pytest puts this folder on sys.path)."""
import numpy as np

from t2arec_fast.cache import StateCache


def rows_for(ids, state_size, salt=0.0):
    """Deterministic float32 rows that differ per id and per column."""
    ids = np.asarray(ids, dtype=np.int64)
    return (ids[:, None] * 0.5 + np.arange(state_size)[None, :] + salt).astype(np.float32)


def cache_with_exactly(entries, state_size, dtype="float32"):
    """A one-shard cache whose budget holds exactly `entries` entries (found by growing the budget)."""
    capacity = StateCache.min_capacity_bytes(state_size, dtype)
    while StateCache(state_size, capacity, dtype, shards=1).max_entries < entries:
        capacity += 8
    cache = StateCache(state_size, capacity, dtype, shards=1)
    assert cache.max_entries == entries
    return cache


def observable_state(cache, probe_ids, version=1):
    """What a caller can observe, for "nothing changed" checks: write-side counters, sorted keys, and the
    found flags and rows of probe_ids (reading them changes only hit/miss counters, which are left out)."""
    stats = {k: v for k, v in cache.stats().items() if k not in ("hits", "misses", "stale")}
    found, rows = cache.get(probe_ids, version)
    return stats, np.sort(cache.keys()), found, rows


def assert_same_state(before, after):
    assert before[0] == after[0]
    for a, b in zip(before[1:], after[1:]):
        np.testing.assert_array_equal(a, b)
