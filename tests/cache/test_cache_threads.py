"""Eight Python threads hammer one StateCache: no lost update, no torn or misrouted row, nothing crashes.

Batch work runs with the GIL released, so the C++ parts of these calls really overlap."""
import threading
import time

import numpy as np

from t2arec_fast.cache import StateCache

THREADS = 8
STATE = 256
OWNED = 64       # keys per thread, whose rows hold a counter only that thread increments
SHARED = 64      # keys every thread writes, reads and deletes
BATCH = 16       # big enough that threads overlap inside the C++ calls (the GIL is released there)
SECONDS = 2.0


def _run_threads(target):
    errors = []

    def guarded(t):
        try:
            target(t)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors


def _shared_row(key, version, writer, seq):
    """A self-consistent row: [key, version, tag, tag, ...]; a torn or misrouted row breaks the pattern."""
    row = np.full(STATE, writer * 1_000_000 + seq % 1_000_000, np.float32)
    row[0], row[1] = key, version
    return row


def _check_shared(keys, version, found, rows):
    for key, hit, row in zip(keys, found, rows):
        if hit:
            assert row[0] == key and row[1] == version, (key, version, row[:3])
            assert (row[2:] == row[2]).all(), row


def test_mixed_get_put_delete_loses_no_update():
    cache = StateCache(STATE, 16 << 20, shards=4)
    assert cache.max_entries > THREADS * OWNED + SHARED  # no eviction: every owned key must survive
    deadline = time.monotonic() + SECONDS
    final_counters = {}
    gets = [0] * THREADS

    def worker(t):
        rng = np.random.default_rng(t)
        mine = np.arange(OWNED, dtype=np.int64) + 1000 * (t + 1)
        counters = np.zeros(OWNED, np.int64)  # 0: never written or deleted by this thread
        seq = 0
        while time.monotonic() < deadline:
            seq += 1
            pick = rng.choice(OWNED, BATCH, replace=False)
            found, rows = cache.get(mine[pick], 1)
            gets[t] += len(pick)
            expected_found = counters[pick] > 0
            assert (found == expected_found).all(), "an owned key vanished or reappeared"
            assert (rows[:, 0] == np.where(expected_found, counters[pick], 0)).all(), "lost update"
            if seq % 17 == 0:  # delete one owned key now and then
                cache.delete(mine[pick[:1]])
                counters[pick[0]] = 0
            else:
                counters[pick] += 1
                cache.put(mine[pick], np.repeat(counters[pick, None], STATE, 1).astype(np.float32), 1)

            keys = rng.integers(0, SHARED, BATCH)
            version = int(rng.integers(1, 3))
            op = rng.random()
            if op < 0.45:
                rows = np.stack([_shared_row(k, version, t, seq) for k in keys])
                cache.put(keys, rows, version)  # duplicates possible: the last one wins
            elif op < 0.9:
                out = np.full((BATCH, STATE), -1.0, np.float32)
                found = cache.get_into(keys, version, out)
                gets[t] += BATCH
                _check_shared(keys, version, found, out)
            else:
                cache.delete(keys[:2])
        final_counters[t] = (mine, counters)

    _run_threads(worker)

    for mine, counters in final_counters.values():
        found, rows = cache.get(mine, 1)
        np.testing.assert_array_equal(found, counters > 0)
        np.testing.assert_array_equal(rows[:, 0], np.where(counters > 0, counters, 0))
        assert (rows == rows[:, :1]).all()
    s = cache.stats()
    assert s["hits"] + s["misses"] == sum(gets) + THREADS * OWNED
    assert s["evictions"] == 0 and s["bytes"] <= cache.capacity_bytes


def test_threads_under_eviction_pressure_keep_rows_consistent():
    cache = StateCache(STATE, 64 * 1024, dtype="float16", shards=2)
    deadline = time.monotonic() + SECONDS / 2

    def worker(t):
        rng = np.random.default_rng(100 + t)
        while time.monotonic() < deadline:
            keys = rng.integers(0, 3000, 64)
            version = int(rng.integers(1, 3))
            if rng.random() < 0.5:
                rows = np.repeat((keys % 2048 + version * 10000.0)[:, None], STATE, 1).astype(np.float32)
                cache.put(keys, rows, version)
            else:
                found, rows = cache.get(keys, version)
                expect = (keys % 2048 + version * 10000.0).astype(np.float16).astype(np.float32)
                assert (rows[found] == expect[found, None]).all()
                assert (rows[~found] == 0).all()

    _run_threads(worker)
    s = cache.stats()
    assert s["evictions"] > 0 and s["bytes"] <= 64 * 1024 and len(cache) == s["entries"] <= s["max_entries"]
