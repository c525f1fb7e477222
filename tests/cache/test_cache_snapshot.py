"""StateCache snapshots: round trip, and refusal of flipped, truncated or mismatched files; atomic saves."""
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from t2arec_fast.cache import SnapshotError, StateCache, snapshot_info

from .helpers import rows_for


def _filled_cache(state_size=5, dtype="float32", shards=2, n=7):
    cache = StateCache(state_size, 1 << 16, dtype=dtype, shards=shards)
    ids = np.arange(n, dtype=np.int64) * 7 - 10
    cache.put(ids[: n // 2], rows_for(ids[: n // 2], state_size), version=4)
    cache.put(ids[n // 2:], rows_for(ids[n // 2:], state_size, salt=0.25), version=5)
    cache.get(ids[:1], 4)  # change recency so that LRU order is not insertion order
    return cache, ids


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip_keeps_entries_versions_and_recency(tmp_path, dtype):
    cache, ids = _filled_cache(dtype=dtype)
    path = tmp_path / "cache.snap"
    cache.save(path)
    loaded = StateCache.load(path)
    assert (loaded.state_size, loaded.dtype, loaded.shards, loaded.capacity_bytes) == \
        (cache.state_size, cache.dtype, cache.shards, cache.capacity_bytes)
    np.testing.assert_array_equal(loaded.keys(), cache.keys())  # same shards, same LRU order
    for version in (4, 5):
        f0, s0 = cache.get(ids, version)
        f1, s1 = loaded.get(ids, version)
        np.testing.assert_array_equal(f0, f1)
        np.testing.assert_array_equal(s0, s1)
    assert loaded.stats()["hits"] == len(ids)  # counters start at zero after a load
    info = snapshot_info(path)
    assert info["entry_count"] == len(ids) and (info["min_version"], info["max_version"]) == (4, 5)
    assert info["dtype"] == dtype and info["file_bytes"] == os.path.getsize(path)
    assert [p.name for p in tmp_path.iterdir()] == ["cache.snap"]  # no temporary file left behind


def test_load_into_a_smaller_budget_keeps_the_most_recent(tmp_path):
    cache = StateCache(8, 1 << 20, shards=1)
    ids = np.arange(100)
    cache.put(ids, rows_for(ids, 8), 1)
    cache.get([3], 1)  # now the most recent
    cache.save(tmp_path / "c.snap")
    small = StateCache.load(tmp_path / "c.snap", capacity_bytes=StateCache.min_capacity_bytes(8) + 512)
    assert 0 < len(small) < 100 and 3 in small and 99 in small and 0 not in small
    assert small.stats()["evictions"] == 100 - len(small)


def test_every_flipped_byte_is_refused(tmp_path):
    cache, _ = _filled_cache(state_size=3, n=4)
    good = tmp_path / "good.snap"
    cache.save(good)
    data = good.read_bytes()
    bad = tmp_path / "bad.snap"
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        bad.write_bytes(bytes(flipped))
        with pytest.raises(SnapshotError, match="bad.snap"):
            StateCache.load(bad)
    # the errors say what is wrong
    flipped = bytearray(data)
    flipped[-1] ^= 0x40
    bad.write_bytes(bytes(flipped))
    with pytest.raises(SnapshotError, match="corrupted: checksum"):
        StateCache.load(bad)
    flipped = bytearray(data)
    flipped[20] ^= 0x40
    bad.write_bytes(bytes(flipped))
    with pytest.raises(SnapshotError, match="header is corrupted"):
        StateCache.load(bad)


def test_truncated_or_padded_snapshot_is_refused(tmp_path):
    cache, _ = _filled_cache()
    good = tmp_path / "good.snap"
    cache.save(good)
    data = good.read_bytes()
    bad = tmp_path / "cut.snap"
    for length in (0, 10, 87, 88, len(data) - 17, len(data) - 1):
        bad.write_bytes(data[:length])
        with pytest.raises(SnapshotError, match=r"cut\.snap.*truncated"):
            StateCache.load(bad)
    bad.write_bytes(data + b"\0")
    with pytest.raises(SnapshotError, match="unexpected bytes"):
        StateCache.load(bad)
    bad.write_bytes(b"not a snapshot at all" * 10)
    with pytest.raises(SnapshotError, match="not a t2arec state-cache snapshot"):
        StateCache.load(bad)


def test_snapshot_of_another_layout_is_refused(tmp_path):
    cache, _ = _filled_cache(state_size=5, dtype="float16")
    path = tmp_path / "c.snap"
    cache.save(path)
    with pytest.raises(SnapshotError, match="state_size 5, expected 6"):
        StateCache.load(path, state_size=6)
    with pytest.raises(SnapshotError, match="stores float16, expected float32"):
        StateCache.load(path, dtype="float32")
    assert len(StateCache.load(path, state_size=5, dtype="float16")) == len(cache)


def test_io_errors_are_oserrors_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.snap"):
        StateCache.load(tmp_path / "missing.snap")
    cache, _ = _filled_cache()
    with pytest.raises(FileNotFoundError, match="no_dir"):
        cache.save(tmp_path / "no_dir" / "c.snap")
    with pytest.raises(OSError):
        cache.save(tmp_path)  # a directory is in the way: the rename fails
    assert list(tmp_path.iterdir()) == []


def test_failed_save_leaves_the_previous_snapshot_intact(tmp_path):
    path = tmp_path / "c.snap"
    small, _ = _filled_cache()
    small.save(path)
    previous = path.read_bytes()
    big = StateCache(1000, 16 << 20)
    big.put(np.arange(500), np.ones((500, 1000), np.float32), 1)
    # Simulate a full disk: the kernel refuses to grow any file past 64 kB (EFBIG) while the save runs.
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(OSError, match="cannot write"):
            big.save(path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert path.read_bytes() == previous
    assert [p.name for p in tmp_path.iterdir()] == ["c.snap"]  # the temporary file was removed
    assert len(StateCache.load(path)) == len(small)


_SAVE_FOREVER = textwrap.dedent("""
    import sys, numpy as np
    from t2arec_fast.cache import StateCache
    cache = StateCache(2000, 64 << 20)
    ids = np.arange(2000)
    version = 0
    while True:
        version += 1
        cache.put(ids, np.full((2000, 2000), float(version), np.float32), version)
        cache.save(sys.argv[1])
        print(version, flush=True)
""")


def test_killed_mid_save_leaves_a_complete_snapshot(tmp_path):
    """SIGKILL while saves run back to back: the path always holds one complete snapshot."""
    path = tmp_path / "c.snap"
    proc = subprocess.Popen([sys.executable, "-c", _SAVE_FOREVER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "1"  # one save completed
        time.sleep(0.15)  # now well inside a later put/save
    finally:
        proc.kill()
        proc.wait()
    loaded = StateCache.load(path)
    version = snapshot_info(path)["max_version"]
    assert len(loaded) == 2000 and version >= 1
    found, states = loaded.get(np.arange(2000), version)
    assert found.all() and (states == float(version)).all()
