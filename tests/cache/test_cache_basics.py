"""StateCache behaviour: round trips, versions, LRU under the byte budget, counters, and bad input."""
import numpy as np
import pytest
import torch

import t2arec_fast
from t2arec_fast import _state_cache
from t2arec_fast.cache import StateCache

from .helpers import assert_same_state, cache_with_exactly, observable_state, rows_for


def test_package_exports_state_cache():
    assert t2arec_fast.StateCache is StateCache


# ---- round trips -------------------------------------------------------------------------------------------

def test_float32_round_trip_is_exact():
    rng = np.random.default_rng(0)
    cache = StateCache(100, 1 << 20)
    ids = rng.permutation(1000)[:50].astype(np.int64) - 500  # negative ids too
    states = rng.standard_normal((50, 100)).astype(np.float32)
    states[0, :3] = [np.float32(1e-40), -0.0, np.finfo(np.float32).max]  # denormal, signed zero, extreme
    cache.put(ids, states, version=3)
    found, out = cache.get(ids, 3)
    assert found.dtype == np.bool_ and found.all()
    assert out.dtype == np.float32 and out.shape == (50, 100)
    np.testing.assert_array_equal(out.view(np.uint32), states.view(np.uint32))  # bit-exact


def test_float16_round_trip_matches_numpy_rounding():
    rng = np.random.default_rng(1)
    cache = StateCache(64, 1 << 20, dtype="float16")
    states = np.clip(rng.standard_normal((20, 64)) * np.logspace(-9, 4.5, 64), -6e4, 6e4).astype(np.float32)
    ids = np.arange(20, dtype=np.int64)
    cache.put(ids, states, 1)
    found, out = cache.get(ids, 1)
    assert found.all() and out.dtype == np.float32
    np.testing.assert_array_equal(out, states.astype(np.float16).astype(np.float32))
    rel = np.abs(out - states) / np.maximum(np.abs(states), 2.0 ** -14)
    assert rel.max() <= 2.0 ** -11  # half precision: 11 significant bits


def test_half_conversion_agrees_with_numpy_everywhere():
    all_halves = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    finite = all_halves[np.isfinite(all_halves.view(np.float16))]
    np.testing.assert_array_equal(_state_cache._half_bits_to_float(finite),
                                  finite.view(np.float16).astype(np.float32))
    rng = np.random.default_rng(2)
    bits = rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32)
    floats = bits.view(np.float32)
    floats = floats[np.isfinite(floats) & (np.abs(floats) <= 65504)]
    np.testing.assert_array_equal(_state_cache._float_to_half_bits(floats), floats.astype(np.float16).view(np.uint16))


def test_torch_cpu_tensors_are_accepted_without_copies():
    cache = StateCache(8, 1 << 16)
    ids = torch.arange(4)
    states = torch.randn(4, 8, requires_grad=True)
    cache.put(ids, states, 1)
    out = torch.full((4, 8), -1.0)
    found = cache.get_into(ids, 1, out)  # writes straight into the tensor's memory
    assert found.all()
    torch.testing.assert_close(out, states.detach(), rtol=0, atol=0)


def test_get_into_leaves_miss_rows_untouched_and_get_zeroes_them():
    cache = StateCache(4, 1 << 16)
    cache.put([1], np.ones((1, 4), np.float32), 1)
    out = np.full((3, 4), 7.0, np.float32)
    found = cache.get_into(np.array([1, 2, 1]), 1, out)
    np.testing.assert_array_equal(found, [True, False, True])
    np.testing.assert_array_equal(out[1], 7.0)
    np.testing.assert_array_equal(out[[0, 2]], 1.0)
    found, states = cache.get([2, 1], 1)
    np.testing.assert_array_equal(states[0], 0.0)


def test_empty_batches_are_fine():
    cache = StateCache(4, 1 << 16)
    cache.put(np.empty(0, np.int64), np.empty((0, 4), np.float32), 1)
    found, states = cache.get([], 1)
    assert found.shape == (0,) and states.shape == (0, 4)
    assert cache.delete([]) == 0 and len(cache) == 0


# ---- versions, duplicates, delete/clear/len/contains ---------------------------------------------------------

def test_other_version_is_a_miss_and_put_replaces_it():
    cache = StateCache(4, 1 << 16)
    ids = np.arange(3)
    cache.put(ids, rows_for(ids, 4), version=1)
    found, states = cache.get(ids, 2)
    assert not found.any() and not states.any()
    s = cache.stats()
    assert (s["misses"], s["stale"], s["hits"]) == (3, 3, 0)
    cache.put(ids[:1], rows_for(ids[:1], 4, salt=9), version=2)  # rebuilt under the new version
    found, states = cache.get(ids, 2)
    np.testing.assert_array_equal(found, [True, False, False])
    np.testing.assert_array_equal(states[0], rows_for([0], 4, salt=9)[0])
    assert not cache.get([0], 1)[0].any()  # the old version is gone for that user


def test_duplicate_ids_in_one_put_last_row_wins():
    cache = StateCache(2, 1 << 16)
    cache.put([5, 6, 5], np.array([[1, 1], [2, 2], [3, 3]], np.float32), 1)
    assert len(cache) == 2
    np.testing.assert_array_equal(cache.get([5], 1)[1], [[3, 3]])


def test_delete_clear_len_contains_keys():
    cache = StateCache(4, 1 << 16)
    ids = np.arange(10, 20)
    cache.put(ids, rows_for(ids, 4), 1)
    assert len(cache) == 10 and 10 in cache and np.int64(19) in cache and 20 not in cache
    assert "10" not in cache and 2 ** 70 not in cache  # not ids: simply absent
    assert sorted(cache.keys().tolist()) == list(range(10, 20)) and cache.keys().dtype == np.int64
    assert cache.delete([10, 10, 11, 99]) == 2
    assert len(cache) == 8 and 10 not in cache and 11 not in cache
    bytes_full = cache.stats()["bytes"]
    cache.clear()
    assert len(cache) == 0 and cache.keys().size == 0 and cache.stats()["bytes"] < bytes_full
    cache.put(ids, rows_for(ids, 4), 1)  # usable again
    assert len(cache) == 10


def test_stats_count_every_operation():
    cache = StateCache(4, 1 << 16)
    cache.put([1, 2, 3], rows_for([1, 2, 3], 4), 1)
    cache.get([1, 2, 4], 1)
    cache.get([3], 2)
    s = cache.stats()
    assert (s["puts"], s["hits"], s["misses"], s["stale"], s["entries"], s["evictions"]) == (3, 2, 2, 1, 3, 0)
    assert s["capacity_bytes"] == 1 << 16 and 0 < s["bytes"] <= 1 << 16
    assert "entries=3" in repr(cache)


# ---- LRU under the byte budget ------------------------------------------------------------------------------

def test_least_recently_used_goes_first_and_get_refreshes():
    cache = cache_with_exactly(4, state_size=16)
    cache.put([1, 2, 3, 4], rows_for([1, 2, 3, 4], 16), 1)  # recency, oldest first: 1 2 3 4
    cache.get([1], 1)                                         # 2 3 4 1
    cache.put([3], rows_for([3], 16), 1)                      # 2 4 1 3
    cache.put([5], rows_for([5], 16), 1)                      # evicts 2
    assert 2 not in cache and all(k in cache for k in (1, 3, 4, 5))
    cache.get([9], 1)                                         # a miss refreshes nothing
    cache.put([6, 7], rows_for([6, 7], 16), 1)                # evicts 4 then 1
    assert sorted(cache.keys().tolist()) == [3, 5, 6, 7]
    assert cache.keys().tolist() == [3, 5, 6, 7]  # one shard: least recently used first
    assert cache.stats()["evictions"] == 3


def test_stale_entry_does_not_get_refreshed_by_a_miss():
    cache = cache_with_exactly(2, state_size=4)
    cache.put([1, 2], rows_for([1, 2], 4), 1)
    cache.get([1], 2)  # stale: a miss, recency unchanged
    cache.put([3], rows_for([3], 4), 1)
    assert 1 not in cache and 2 in cache


@pytest.mark.parametrize("dtype,shards", [("float32", None), ("float16", None), ("float32", 3)])
def test_budget_counts_everything_and_is_never_exceeded(dtype, shards):
    state_size, capacity = 2500, 12 << 20
    cache = StateCache(state_size, capacity, dtype=dtype, shards=shards)
    rng = np.random.default_rng(3)
    states = rng.standard_normal((512, state_size)).astype(np.float32)
    for _ in range(8):  # 4096 distinct users: more than either dtype holds
        cache.put(rng.permutation(1 << 20)[:512], states, 1)
        assert cache.stats()["bytes"] <= capacity
    s = cache.stats()
    assert s["entries"] == s["max_entries"] and s["evictions"] > 0
    raw = state_size * (2 if dtype == "float16" else 4)
    assert s["bytes"] / s["entries"] <= 1.2 * raw  # memory per cached user vs the raw state
    assert s["max_entries"] >= 0.95 * capacity / raw  # and the budget is actually used


# ---- constructor errors ------------------------------------------------------------------------------------------

def test_capacity_edges():
    minimum = StateCache.min_capacity_bytes(100)
    assert StateCache(100, minimum).max_entries >= 1
    with pytest.raises(ValueError, match="smaller than one entry.*needs at least"):
        StateCache(100, minimum - 1)
    with pytest.raises(ValueError, match="capacity_bytes must be >= 0"):
        StateCache(100, -1)
    with pytest.raises(ValueError, match="smaller than one entry"):
        StateCache(100, 0)
    with pytest.raises(ValueError, match="no room for one entry per shard"):
        StateCache(100, minimum, shards=16)
    with pytest.raises(ValueError, match="state_size must be positive"):
        StateCache(0, 1 << 20)
    with pytest.raises(ValueError, match="dtype must be"):
        StateCache(4, 1 << 20, dtype="int8")
    with pytest.raises(TypeError, match="capacity_bytes must be an integer"):
        StateCache(4, 1e6)
    assert StateCache(4, 1 << 20, dtype=np.float16).dtype == "float16"
    assert StateCache(4, 1 << 20, dtype=torch.float16).dtype == "float16"


# ---- bad input leaves the cache unchanged ------------------------------------------------------------------------

STATE = 6
GOOD_IDS = np.array([100, 101, 102])


def _bad_calls():
    good = rows_for(GOOD_IDS, STATE)
    nan_last = good.copy()
    nan_last[2, 4] = np.nan
    inf_first = good.copy()
    inf_first[0, 0] = -np.inf
    wide = np.zeros((3, STATE * 2), np.float32)
    return {
        "float64 states": (lambda c: c.put(GOOD_IDS, good.astype(np.float64), 2), TypeError, "float32"),
        "int states": (lambda c: c.put(GOOD_IDS, good.astype(np.int32), 2), TypeError, "float32"),
        "list states": (lambda c: c.put(GOOD_IDS, good.tolist(), 2), TypeError, "numpy array"),
        "too few rows": (lambda c: c.put(GOOD_IDS, good[:2], 2), ValueError, r"shape \(3, 6\)"),
        "too many columns": (lambda c: c.put(GOOD_IDS, wide, 2), ValueError, "shape"),
        "1-D states": (lambda c: c.put(GOOD_IDS, good.ravel(), 2), ValueError, "shape"),
        "strided states": (lambda c: c.put(GOOD_IDS, wide[:, ::2], 2), ValueError, "C-contiguous"),
        "fortran states": (lambda c: c.put(GOOD_IDS, np.asfortranarray(good), 2), ValueError, "C-contiguous"),
        "NaN in last row": (lambda c: c.put(GOOD_IDS, nan_last, 2), ValueError, r"states\[2, 4\].*NaN"),
        "inf in first row": (lambda c: c.put(GOOD_IDS, inf_first, 2), ValueError, "infinite"),
        "float ids": (lambda c: c.put(GOOD_IDS.astype(float), good, 2), TypeError, "integers"),
        "2-D ids": (lambda c: c.put(GOOD_IDS[None], good, 2), ValueError, "1-D"),
        "float version": (lambda c: c.put(GOOD_IDS, good, 2.0), TypeError, "version"),
        "huge version": (lambda c: c.put(GOOD_IDS, good, 2 ** 63), ValueError, "int64"),
        "get float version": (lambda c: c.get(GOOD_IDS, "1"), TypeError, "version"),
        "delete float ids": (lambda c: c.delete([1.5]), TypeError, "integers"),
    }


@pytest.mark.parametrize("case", list(_bad_calls()))
def test_bad_input_is_refused_and_changes_nothing(case):
    call, error, message = _bad_calls()[case]
    cache = StateCache(STATE, 1 << 16)
    old = np.array([1, 2, 100])  # 100 is also in the refused batch: its old row must survive
    cache.put(old, rows_for(old, STATE), 1)
    probe = np.concatenate([old, GOOD_IDS])
    before = observable_state(cache, probe)
    with pytest.raises(error, match=message):
        call(cache)
    assert_same_state(before, observable_state(cache, probe))


def test_float16_range_is_checked_before_anything_is_stored():
    cache = StateCache(4, 1 << 16, dtype="float16")
    states = np.ones((3, 4), np.float32)
    states[1, 2] = 70000.0  # would become inf as a half
    with pytest.raises(ValueError, match="outside the float16 range"):
        cache.put([1, 2, 3], states, 1)
    assert len(cache) == 0 and cache.stats()["puts"] == 0
    cache.put([1], np.full((1, 4), 65504.0, np.float32), 1)  # the largest half is fine
    np.testing.assert_array_equal(cache.get([1], 1)[1], 65504.0)


@pytest.mark.parametrize("bad_out,error,message", [
    (np.zeros((2, 4), np.float64), TypeError, "float32"),
    (np.zeros((3, 4), np.float32), ValueError, "shape"),
    (np.zeros((4, 2), np.float32).T, ValueError, "C-contiguous"),
    ("readonly", ValueError, "read-only"),
])
def test_get_into_refuses_bad_out_buffers(bad_out, error, message):
    cache = StateCache(4, 1 << 16)
    cache.put([1, 2], np.ones((2, 4), np.float32), 1)
    if isinstance(bad_out, str):
        bad_out = np.zeros((2, 4), np.float32)
        bad_out.flags.writeable = False
    snapshot = bad_out.copy()
    with pytest.raises(error, match=message):
        cache.get_into([1, 2], 1, bad_out)
    np.testing.assert_array_equal(bad_out, snapshot)
    assert cache.stats()["hits"] == 0


def test_user_ids_are_converted_when_cheap():
    cache = StateCache(2, 1 << 16)
    cache.put(np.array([1, 2, 3], np.int32), np.ones((3, 2), np.float32), 1)  # other integer dtype
    cache.put(np.arange(10)[::5], np.full((2, 2), 2, np.float32), 1)  # strided view of ids
    assert sorted(cache.keys().tolist()) == [0, 1, 2, 3, 5]
    with pytest.raises(ValueError, match="wrap a single id"):
        cache.get(3, 1)


def test_cannot_be_pickled():
    import pickle
    with pytest.raises(TypeError, match="save"):
        pickle.dumps(StateCache(2, 1 << 16))
