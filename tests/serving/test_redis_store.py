"""RedisStateStore against a real redis-server (tests/redis_server.py): layout, compare-and-set, idempotent retries,
corrupted values, outages. The recommender on top of it is tested in test_redis_serving.py."""
import time

import numpy as np
import pytest
import redis

from t2arec_fast.errors import InputError, StoreCorruptError, StoreUnavailableError
from t2arec_fast.serving.redis_store import RedisStateStore

SIZE = 6
LAYOUT = {"size": SIZE, "layout_version": 1}


def _store(url, **kw):
    kw.setdefault("history_len", 4)
    return RedisStateStore(url, **kw)


def _commit(store, version, users, expected, n_before, per_user_events, states, stamp=None, snapshot=None,
            meanwhile=None):
    """per_user_events: list (one per user) of [(item, time), ...] in call order."""
    users = np.asarray(users, np.int64)
    ev_user, ev_rank, items, times = [], [], [], []
    for u, events in enumerate(per_user_events):
        for r, (i, t) in enumerate(events):
            ev_user.append(u), ev_rank.append(r), items.append(i), times.append(t)
    counts = np.array([len(e) for e in per_user_events], np.int64)
    last = np.array([e[-1][1] for e in per_user_events], np.int64)
    return store.commit(users, version, np.asarray(expected, np.int64), np.asarray(n_before, np.int64), counts,
                        last, np.asarray(states, np.float32), np.array(ev_user), np.array(ev_rank),
                        np.array(items, np.int64), np.array(times, np.int64), stamp=stamp, snapshot=snapshot,
                        meanwhile=meanwhile)


def _states(*values):
    return np.array([[v] * SIZE for v in values], np.float32)


def _state_keys(url, user="*"):
    """The state keys (P:s:<user>:<version>:<stamp>) in Redis, sorted."""
    return sorted(k.decode() for k in redis.Redis.from_url(url).scan_iter(match=f"t2arec:s:{user}:*"))


def test_commit_then_read_returns_counts_stamps_state_and_ring_in_one_call(redis_url):
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)
    out = _commit(store, v, [7, 8], [0, 0], [0, 0], [[(3, 100), (4, 101)], [(5, 50)]], _states(1.5, 2.5))
    assert out.applied
    got = store.read(np.array([7, 8, 9]), v, rings="all")
    assert got.known.tolist() == [True, True, False]
    assert got.n_events.tolist()[:2] == [2, 1] and got.last_ts.tolist()[:2] == [101, 50]
    assert got.stamps[0] == got.stamps[1] == out.stamp
    assert got.shipped[:2].all() and not got.shipped[2]
    np.testing.assert_array_equal(got.states[:2], _states(1.5, 2.5))
    assert got.ring_items[0].tolist() == [3, 4, 0, 0] and got.ring_times[0].tolist() == [100, 101, 0, 0]


def test_a_commit_stores_only_the_states_it_is_told_and_readers_get_the_events_after_them(redis_url):
    """Between stored states a commit stores only the events: a reader gets the stored state and the events after
    it (here across the ring's end), or, holding an older copy of the same epoch, only the events it lacks."""
    store = _store(redis_url)                                        # history_len 4
    v = store.register_model("fp-a", LAYOUT)
    c1 = _commit(store, v, [7], [0], [0], [[(3, 1), (4, 2), (5, 3)]], _states(1), snapshot=[True])
    c2 = _commit(store, v, [7], [c1.stamp], [3], [[(6, 4), (7, 5), (8, 6)]], _states(2), snapshot=[False])
    assert _state_keys(redis_url) == [f"t2arec:s:7:{v}:{c1.stamp}"]                    # c2's state not stored
    got = store.read(np.array([7]), v)
    assert got.shipped[0] and got.snapshot_counts[0] == 3 and got.event_from[0] == 3 and got.epochs[0] == c1.stamp
    np.testing.assert_array_equal(got.states, _states(1))
    assert got.event_items.tolist() == [6, 7, 8] and got.event_times.tolist() == [4, 5, 6]   # slots 3, 0, 1
    assert got.event_user.tolist() == [0, 0, 0] and not got.has_ring[0]
    mine = dict(local_stamps=np.array([c1.stamp]), local_epochs=np.array([c1.stamp]), local_counts=np.array([3]))
    behind = store.read(np.array([7]), v, **mine)
    assert behind.replay_local[0] and not behind.shipped[0] and behind.event_items.tolist() == [6, 7, 8]
    current = store.read(np.array([7]), v, local_stamps=np.array([c2.stamp]), local_epochs=np.array([c1.stamp]),
                         local_counts=np.array([6]))
    assert current.local_current[0] and len(current.event_items) == 0
    other_epoch = store.read(np.array([7]), v, **{**mine, "local_epochs": np.array([12345])})
    assert other_epoch.shipped[0] and not other_epoch.replay_local[0]        # another life of the user: not its copy
    too_far = store.read(np.array([7]), v, **mine, replay_limit=2)           # 3 events behind, 2 allowed
    assert too_far.shipped[0] and too_far.event_items.tolist() == [6, 7, 8]
    assert store.snapshot_rows(np.array([0, 3, 3, 15]), np.array([3, 4, 7, 16])).tolist() == [False, True, True, True]


def test_events_to_replay_from_a_damaged_ring_are_refused_naming_the_key(redis_url):
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)
    c1 = _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1), snapshot=[True])
    _commit(store, v, [7], [c1.stamp], [1], [[(4, 2), (5, 3)]], _states(2), snapshot=[False])
    raw = redis.Redis.from_url(redis_url)
    raw.set("t2arec:r:7", raw.get("t2arec:r:7")[:20])                # cut inside the second event
    with pytest.raises(StoreCorruptError, match="t2arec:r:7 holds 20 bytes: not a ring of the 3 latest events"):
        store.read(np.array([7]), v)


def test_a_stored_state_lives_as_long_as_its_user_when_later_commits_store_only_events(redis_url):
    store = _store(redis_url, ttl_s=30)
    v = store.register_model("fp-a", LAYOUT)
    c1 = _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1), snapshot=[True])
    raw = redis.Redis.from_url(redis_url)
    raw.pexpire(f"t2arec:s:7:{v}:{c1.stamp}", 1_000)
    _commit(store, v, [7], [c1.stamp], [1], [[(4, 2)]], _states(2), snapshot=[False])
    assert raw.pttl(f"t2arec:s:7:{v}:{c1.stamp}") > 20_000 and raw.pttl("t2arec:u:7") > 20_000


def test_ring_keeps_the_last_history_len_events_across_wraparound(redis_url):
    store = _store(redis_url)                                    # history_len 4
    v = store.register_model("fp-a", LAYOUT)
    first = _commit(store, v, [1], [0], [0], [[(i, 10 + i) for i in range(1, 4)]], _states(0))      # events 0..2
    _commit(store, v, [1], [first.stamp], [3], [[(i, 10 + i) for i in range(4, 10)]], _states(0))  # 3..8
    got = store.read(np.array([1]), v, rings="all")
    # events 5..8 (items 6..9) at slots 5%4=1, 2, 3, 0
    assert got.n_events[0] == 9
    assert got.ring_items[0].tolist() == [9, 6, 7, 8]
    assert got.ring_times[0].tolist() == [19, 16, 17, 18]


def test_a_current_local_copy_is_not_shipped_again(redis_url):
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)
    out = _commit(store, v, [7, 8], [0, 0], [0, 0], [[(3, 1)], [(4, 1)]], _states(1, 2))
    got = store.read(np.array([7, 8]), v, local_stamps=np.array([out.stamp, 12345]))
    assert got.local_current.tolist() == [True, False]
    assert got.shipped.tolist() == [False, True]
    assert not got.has_ring.any()                               # a current state exists: no rebuild needed


def test_compare_and_set_refuses_the_whole_batch_when_one_user_moved_on(redis_url):
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)
    a = _commit(store, v, [7, 8], [0, 0], [0, 0], [[(3, 1)], [(4, 1)]], _states(1, 2))
    moved = _commit(store, v, [8], [a.stamp], [1], [[(5, 2)]], _states(3))        # another process moves user 8
    assert moved.applied
    stale = _commit(store, v, [7, 8], [a.stamp, a.stamp], [1, 1], [[(6, 3)], [(6, 3)]], _states(9, 9))
    assert not stale.applied and stale.lost.tolist() == [1]
    got = store.read(np.array([7, 8]), v, rings="all")
    assert got.n_events.tolist() == [1, 2]                      # user 7 did not move either: all or nothing
    assert got.stamps.tolist() == [a.stamp, moved.stamp]
    np.testing.assert_array_equal(got.states, _states(1, 3))
    assert store.counters["cas_conflicts"] == 1


def test_a_new_user_expected_by_two_writers_is_created_once(redis_url):
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)
    assert _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1)).applied
    assert not _commit(store, v, [7], [0], [0], [[(4, 1)]], _states(2)).applied


def test_a_retried_commit_is_applied_once(redis_url):
    """A commit whose reply was lost is retried with the same stamp: it reports success and changes nothing."""
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)
    first = _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1))
    again = _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1), stamp=first.stamp)
    assert again.applied
    got = store.read(np.array([7]), v, rings="all")
    assert got.n_events[0] == 1 and got.ring_items[0].tolist() == [3, 0, 0, 0]
    np.testing.assert_array_equal(got.states, _states(1))
    # retried again after the user moved on: its state, already replaced, is not brought back as a stray key
    moved = _commit(store, v, [7], [first.stamp], [1], [[(4, 2)]], _states(2))
    assert _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1), stamp=first.stamp).applied
    assert _state_keys(redis_url) == [f"t2arec:s:7:{v}:{moved.stamp}"]


def test_states_of_another_model_version_are_not_served_and_the_ring_comes_for_the_rebuild(redis_url):
    store = _store(redis_url)
    v1 = store.register_model("fp-a", LAYOUT)
    v2 = store.register_model("fp-b", {"size": 3, "layout_version": 1})
    assert (v1, v2) == (1, 2)
    _commit(store, v1, [8], [0], [0], [[(3, 1), (4, 2)]], _states(1))
    small = store.read(np.array([8]), v2)          # 2 events, no state of v2: step them from an empty state
    assert small.replay_empty[0] and not small.has_ring[0] and small.event_items.tolist() == [3, 4]
    _commit(store, v1, [7], [0], [0], [[(3, 1), (4, 2), (5, 3), (6, 4), (7, 5)]], _states(1))
    got = store.read(np.array([7]), v2)            # 5 events, the ring holds 4: rebuild from it
    assert got.known[0] and not got.shipped[0] and not got.replay_empty[0] and got.has_ring[0]
    assert got.ring_items[0].tolist() == [7, 4, 5, 6]                  # event j at slot j % 4
    assert store.put_states(np.array([7]), v2, got.stamps, np.ones((1, 3), np.float32)) == 1
    assert store.put_states(np.array([7]), v2, got.stamps, np.zeros((1, 3), np.float32)) == 0   # once per stamp
    again = store.read(np.array([7]), v2)
    assert again.shipped[0] and again.states[0].tolist() == [1, 1, 1]
    assert store.read(np.array([7]), v1).shipped[0]             # the old version's state stays for old servers


def test_versions_older_than_the_previous_one_are_dropped_on_write(redis_url):
    store = _store(redis_url)
    versions = [store.register_model(f"fp-{i}", LAYOUT) for i in range(3)]
    stamp = 0
    for n, v in enumerate(versions):
        stamp = _commit(store, v, [7], [stamp], [n], [[(3, n + 1)]], _states(n)).stamp
    fields = sorted(f.decode() for f in redis.Redis.from_url(redis_url).hkeys("t2arec:u:7"))
    assert fields == sorted(["n", "t", "w", "e", "sw:2", "sn:2", "sw:3", "sn:3"])
    assert [k.split(":")[3] for k in _state_keys(redis_url)] == ["2", "3"]       # version 1's state deleted
    # the same when the first state of a newer version is a rebuilt one, written back by put_states
    versions = [store.register_model(f"fp-{i}", LAYOUT) for i in range(3, 5)]
    for v in versions:
        assert store.put_states(np.array([7]), v, np.array([stamp]), _states(v)) == 1
    fields = sorted(f.decode() for f in redis.Redis.from_url(redis_url).hkeys("t2arec:u:7"))
    assert fields == sorted(["n", "t", "w", "e", "sw:4", "sn:4", "sw:5", "sn:5"])
    assert _state_keys(redis_url) == [f"t2arec:s:7:{v}:{stamp}" for v in versions]


def test_one_state_per_user_and_version_is_kept_and_a_lost_commit_leaves_none(redis_url):
    """States are written ahead of the commit script under the commit's stamp: an applied commit makes its states
    permanent and deletes the ones they replace; a commit that loses its compare-and-set deletes its own."""
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)
    stamp = 0
    for n in range(3):
        stamp = _commit(store, v, [7, 8], [stamp, stamp], [n, n], [[(3, n + 1)], [(4, n + 1)]], _states(n, n)).stamp
    assert _state_keys(redis_url) == [f"t2arec:s:{u}:{v}:{stamp}" for u in (7, 8)]
    raw = redis.Redis.from_url(redis_url)
    assert raw.pttl(f"t2arec:s:7:{v}:{stamp}") == -1                 # adopted: no expiry left
    lost = _commit(store, v, [7, 9], [12345, 0], [3, 0], [[(3, 9)], [(3, 9)]], _states(5, 5))
    assert not lost.applied and lost.lost.tolist() == [0]
    assert _state_keys(redis_url) == [f"t2arec:s:{u}:{v}:{stamp}" for u in (7, 8)]


def test_states_expire_with_their_user_under_a_ttl(redis_url):
    store = _store(redis_url, ttl_s=30)
    v = store.register_model("fp-a", LAYOUT)
    stamp = _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1)).stamp
    ttl_ms = redis.Redis.from_url(redis_url).pttl(f"t2arec:s:7:{v}:{stamp}")
    assert 20_000 < ttl_ms <= 30_000                                # the user's TTL


def test_rebuilt_states_are_adopted_once_and_a_stale_one_leaves_no_key(redis_url):
    store = _store(redis_url)
    v1 = store.register_model("fp-a", LAYOUT)
    first = _commit(store, v1, [7, 8], [0, 0], [0, 0], [[(3, 1)], [(4, 1)]], _states(1, 2))
    v2 = store.register_model("fp-b", LAYOUT)
    stale = np.array([first.stamp, 99], np.int64)                 # user 8 is not at stamp 99: not adopted
    assert store.put_states(np.array([7, 8]), v2, stale, _states(5, 6)) == 1
    assert _state_keys(redis_url, 8) == [f"t2arec:s:8:{v1}:{first.stamp}"]
    # another process rebuilding user 7 for the same stamp finds the state there: nothing written, nothing deleted
    assert store.put_states(np.array([7]), v2, stale[:1], _states(9)) == 0
    assert store.read(np.array([7]), v2).states[0].tolist() == [5.0] * SIZE


def test_a_batch_of_states_goes_out_in_one_buffer_per_command():
    """redis-py sends each argument over 6,000 bytes with its own sendall(); the store's packer joins them."""
    from redis.connection import Connection
    from t2arec_fast.serving.redis_store import _one_buffer_packer
    rows = [memoryview(np.full(2560, i, np.float32).view(np.uint8)) for i in range(64)]
    args = ("MSETNX", *[x for i, row in enumerate(rows) for x in (f"k{i}", row)])
    packed = _one_buffer_packer(redis).pack(*args)
    assert len(packed) == 1 and b"".join(Connection().pack_command(*args)) == packed[0]


def test_a_prefix_in_an_older_key_layout_is_refused_with_what_to_do(redis_url):
    redis.Redis.from_url(redis_url).hset("old:config", "history_len", 4)      # layout 1 wrote no format field
    with pytest.raises(InputError, match=r"prefix 'old' .* layout 1 .*this version reads layout 3.*old:\*"):
        _store(redis_url, prefix="old")


def test_the_same_model_gets_the_same_version_in_every_process(redis_url):
    a, b = _store(redis_url), _store(redis_url)
    assert a.register_model("fp-a", LAYOUT) == b.register_model("fp-a", LAYOUT) == 1
    assert b.register_model("fp-b", LAYOUT) == 2
    with pytest.raises(InputError, match="another state layout"):
        a.register_model("fp-a", {"size": SIZE + 1, "layout_version": 1})


def test_an_unregistered_model_version_is_refused_by_name(redis_url):
    store = _store(redis_url)
    store.register_model("fp-a", LAYOUT)
    with pytest.raises(InputError, match=r"model version 5 is not registered in t2arec:layouts .*registered: \[1\]"):
        store.read(np.array([1]), 5)


def test_processes_must_agree_on_history_len(redis_url):
    _store(redis_url, history_len=4)
    with pytest.raises(InputError, match="t2arec:config says history_len=4"):
        _store(redis_url, history_len=8)
    _store(redis_url, history_len=8, prefix="other")              # another prefix is another deployment


def test_popularity_orders_by_count_then_by_lower_id(redis_url):
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)
    _commit(store, v, [1, 2], [0, 0], [0, 0], [[(12, 1), (3, 2), (12, 3)], [(3, 1), (100, 2), (9, 3)]],
            _states(0, 0))
    items, counts = store.top_items(4)
    assert items.tolist() == [3, 12, 9, 100] and counts.tolist() == [2, 2, 1, 1]
    got = store.read(np.array([1]), v, top_k=2)
    assert got.popular[0].tolist() == [3, 12]


def test_a_large_batch_is_one_round_trip_and_counts_every_item_and_every_ring(redis_url):
    """2,500 distinct items in one commit (the script updates popularity in chunks of 1,000), users whose events
    wrap their ring within the call, and one read of them all: exact counts, rings, states; two round trips."""
    store = _store(redis_url)                                    # history_len 4
    v = store.register_model("fp-a", LAYOUT)
    users = np.arange(600, dtype=np.int64) * 3 + 1
    events = [[(1 + (5 * u + j) % 2500, 100 + j) for j in range(u % 7 + 1)] for u in range(len(users))]
    events[0] = [(i, 100) for i in range(1, 2501)]                # every item once, ring wrapped many times
    before = store.counters["round_trips"]
    assert _commit(store, v, users, np.zeros(len(users)), np.zeros(len(users)), events,
                   _states(*range(len(users)))).applied
    got = store.read(users, v, rings="all", top_k=3000)
    assert store.counters["round_trips"] - before == 2
    want = np.zeros(2501, np.int64)
    for per_user in events:
        for item, _ in per_user:
            want[item] += 1
    items, counts = got.popular
    assert len(items) == 2500 and (counts == want[items]).all() and (np.diff(counts) <= 0).all()
    assert got.n_events.tolist() == [len(e) for e in events]
    np.testing.assert_array_equal(got.states, _states(*range(len(users))))
    for u, per_user in enumerate(events):
        n = len(per_user)
        for j in range(max(0, n - 4), n):                        # the last 4 events, event j at slot j % 4
            assert (got.ring_items[u, j % 4], got.ring_times[u, j % 4]) == per_user[j]


def test_forget_and_ttl_remove_a_user_whole(redis_url):
    store = _store(redis_url, ttl_s=0.3)
    v = store.register_model("fp-a", LAYOUT)
    _commit(store, v, [1, 2], [0, 0], [0, 0], [[(3, 1)], [(4, 1)]], _states(0, 0))
    assert store.forget(np.array([1, 5])) == 1
    assert store.read(np.array([1, 2]), v).known.tolist() == [False, True]
    assert _state_keys(redis_url, 1) == [] and len(_state_keys(redis_url, 2)) == 1
    time.sleep(0.6)
    assert not store.read(np.array([2]), v).known[0]
    assert store.n_users() == 0 and _state_keys(redis_url) == []


def test_forget_of_a_user_whose_hash_was_overwritten_removes_its_states_too(redis_url):
    """The hash names the user's state keys; when something overwrote it, forget finds them by name."""
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)
    _commit(store, v, [1, 12], [0, 0], [0, 0], [[(3, 1)], [(4, 1)]], _states(0, 0))
    redis.Redis.from_url(redis_url).set("t2arec:u:1", "not a hash")
    assert store.forget(np.array([1])) == 1
    assert _state_keys(redis_url, 1) == [] and len(_state_keys(redis_url, 12)) == 1   # user 12 untouched
    assert store.read(np.array([12]), v).known.tolist() == [True]


@pytest.mark.parametrize("field, value, message", [
    ("n", "seven", r"t2arec:u:7 field 'n' holds b'seven', not an int64"),
    ("w", "-3", r"t2arec:u:7 field 'w' holds b'-3'"),
    ("t", "1" * 25, r"t2arec:u:7 field 't' holds 25 bytes, not an int64"),
    ("t", "99999999999999999999", r"t2arec:u:7 field 't' holds b'99999999999999999999', not an int64"),
])
def test_corrupted_values_are_refused_naming_the_key(redis_url, field, value, message):
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)
    _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1))
    redis.Redis.from_url(redis_url).hset("t2arec:u:7", field, value)
    with pytest.raises(StoreCorruptError, match=message):
        store.read(np.array([7]), v)


def test_a_non_finite_state_a_bad_ring_and_a_wrong_key_type_are_refused_naming_the_key(redis_url):
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)
    stamp = _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1)).stamp
    raw = redis.Redis.from_url(redis_url)
    state = f"t2arec:s:7:{v}:{stamp}"
    raw.set(state, np.full(SIZE, np.nan, np.float32).tobytes())
    with pytest.raises(StoreCorruptError, match=f"{state} holds a non-finite value at position 0"):
        store.read(np.array([7]), v)
    raw.set(state, b"short")
    with pytest.raises(StoreCorruptError, match=rf"{state} \(the state t2arec:u:7 field 'sw:1' names\) holds 5 "
                                                r"bytes, expected 24"):
        store.read(np.array([7]), v)
    raw.delete(state)
    raw.rpush(state, "a list")
    with pytest.raises(StoreCorruptError, match=f"{state} is not a string"):
        store.read(np.array([7]), v)
    raw.delete(state)
    raw.set(state, _states(1).tobytes())
    raw.set("t2arec:r:7", b"x" * 13)
    with pytest.raises(StoreCorruptError, match="t2arec:r:7 holds 13 bytes"):
        store.read(np.array([7]), v, rings="all")
    raw.delete("t2arec:u:8")
    raw.rpush("t2arec:u:8", "not a hash")
    with pytest.raises(StoreCorruptError, match="t2arec:u:8 is not a hash"):
        store.read(np.array([8]), v)
    with pytest.raises(StoreCorruptError, match="t2arec:u:8 is not a hash"):
        _commit(store, v, [7, 8], [stamp, 0], [1, 0], [[(3, 2)], [(3, 2)]], _states(1, 1))
    assert store.read(np.array([7]), v).n_events[0] == 1           # the refused commit wrote nothing
    assert _state_keys(redis_url) == [state]                        # not even the states it sent ahead
    raw.delete("t2arec:u:8")
    raw.rpush("t2arec:r:8", "not a string")
    with pytest.raises(StoreCorruptError, match="t2arec:r:8 is not a string"):
        _commit(store, v, [7, 8], [stamp, 0], [1, 0], [[(3, 2)], [(3, 2)]], _states(1, 1))
    assert store.read(np.array([7]), v).n_events[0] == 1 and _state_keys(redis_url) == [state]


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/0", "127.0.0.1:6379", "redis://127.0.0.1:6379/notadb", 7])
def test_bad_urls_are_refused_naming_the_url(url):
    with pytest.raises(InputError, match="URL|not a Redis URL"):
        RedisStateStore(url)


def test_nothing_listening_fails_fast_with_the_address(redis_binary):
    from redis_server import free_loopback_port
    port = free_loopback_port()
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=f"redis://127.0.0.1:{port}/0 did not answer"):
        RedisStateStore(f"redis://127.0.0.1:{port}/0", connect_timeout_s=0.2, retries=1, retry_backoff_s=0.01)
    assert time.monotonic() - start < 3


def test_redis_down_fails_fast_then_the_store_recovers_when_it_returns(redis_server):
    store = _store(redis_server.url, connect_timeout_s=0.2, socket_timeout_s=0.5, retries=1,
                   retry_backoff_s=0.01)
    v = store.register_model("fp-a", LAYOUT)
    first = _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1))
    redis_server.kill()
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="did not answer"):
        _commit(store, v, [7], [first.stamp], [1], [[(4, 2)]], _states(2))
    with pytest.raises(StoreUnavailableError):
        store.read(np.array([7]), v)
    assert time.monotonic() - start < 5
    redis_server.start()                                          # same folder and port: the AOF is replayed
    got = store.read(np.array([7]), v)
    assert got.n_events[0] == 1 and got.stamps[0] == first.stamp   # the acknowledged commit survived SIGKILL
    assert _commit(store, v, [7], [first.stamp], [1], [[(4, 2)]], _states(2)).applied


# -- found by a review that tried to break the state keys (each failed before its fix) ------------------------------
def test_a_retry_that_finds_no_done_marker_keeps_the_state_its_user_points_at(redis_url):
    """The done-marker expires (10 min) or is evicted; a retry after that is a lost compare-and-set, and the
    states it sent again — under the names its first try's states have — must not be deleted with it."""
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)
    first = _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1))
    redis.Redis.from_url(redis_url).delete(f"t2arec:done:{first.stamp}")
    again = _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1), stamp=first.stamp)
    assert not again.applied
    assert _state_keys(redis_url) == [f"t2arec:s:7:{v}:{first.stamp}"]
    np.testing.assert_array_equal(store.read(np.array([7]), v).states, _states(1))


def test_a_retry_after_the_user_was_forgotten_is_not_applied_again(redis_url):
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)
    first = _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1))
    store.forget(np.array([7]))
    assert _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1), stamp=first.stamp).applied
    assert not store.read(np.array([7]), v).known[0]
    assert store.top_items(1)[1].tolist() == [1] and _state_keys(redis_url) == []    # counted once


def test_put_states_with_a_bad_key_anywhere_in_the_batch_writes_nothing(redis_url):
    store = _store(redis_url)
    v1 = store.register_model("fp-a", LAYOUT)
    first = _commit(store, v1, [7, 9], [0, 0], [0, 0], [[(3, 1)], [(3, 1)]], _states(1, 1))
    v2 = store.register_model("fp-b", LAYOUT)
    raw = redis.Redis.from_url(redis_url)
    raw.set("t2arec:u:8", "not a hash")
    before = sorted(raw.keys("t2arec:*"))
    with pytest.raises(StoreCorruptError, match="t2arec:u:8 is not a hash"):
        store.put_states(np.array([7, 8, 9]), v2, np.array([first.stamp] * 3), _states(5, 6, 7))
    assert sorted(raw.keys("t2arec:*")) == before
    raw.delete("t2arec:u:8")
    raw.rpush(f"t2arec:s:7:{v2}:{first.stamp}", "a list where the rebuilt state goes")
    before = sorted(raw.keys("t2arec:*"))
    with pytest.raises(StoreCorruptError, match=f"t2arec:s:7:{v2}:{first.stamp} is not a string"):
        store.put_states(np.array([7, 9]), v2, np.array([first.stamp] * 2), _states(5, 7))
    assert sorted(raw.keys("t2arec:*")) == before


def test_a_state_key_lost_alone_is_rebuilt_from_the_ring_and_written_again(redis_url):
    """A state key can go without its user (eviction under an allkeys-*/volatile-* maxmemory-policy, a manual
    delete): the user then has no usable state; with more events than the ring holds the ring comes for a
    rebuild, and the rebuilt state is written under the name the user already points at (the latest commit
    stored it). With fewer, all its events come, to step from an empty state."""
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)
    first = _commit(store, v, [7], [0], [0], [[(3, t) for t in range(1, 6)]], _states(1))
    redis.Redis.from_url(redis_url).delete(f"t2arec:s:7:{v}:{first.stamp}")
    got = store.read(np.array([7]), v)
    assert got.known[0] and not got.shipped[0] and not got.replay_empty[0] and got.has_ring[0]
    assert store.put_states(np.array([7]), v, got.stamps, _states(4)) == 0      # nothing to adopt: already named
    np.testing.assert_array_equal(store.read(np.array([7]), v).states, _states(4))
    few = _commit(store, v, [8], [0], [0], [[(3, 1), (4, 2)]], _states(1))
    redis.Redis.from_url(redis_url).delete(f"t2arec:s:8:{v}:{few.stamp}")
    stepped = store.read(np.array([8]), v)
    assert stepped.replay_empty[0] and stepped.event_items.tolist() == [3, 4] and not stepped.has_ring[0]


def test_a_rebuilt_state_expires_with_its_user(redis_url):
    store = _store(redis_url, ttl_s=30)
    v1 = store.register_model("fp-a", LAYOUT)
    first = _commit(store, v1, [7], [0], [0], [[(3, 1)]], _states(1))
    raw = redis.Redis.from_url(redis_url)
    raw.pexpire("t2arec:u:7", 5_000)                                 # the user's time is running out
    v2 = store.register_model("fp-b", LAYOUT)
    assert store.put_states(np.array([7]), v2, np.array([first.stamp]), _states(5)) == 1
    assert 0 < raw.pttl(f"t2arec:s:7:{v2}:{first.stamp}") <= 5_000


def test_an_empty_commit_is_a_no_op_and_a_stamp_out_of_range_is_refused(redis_url):
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)
    z = np.zeros(0, np.int64)
    assert store.commit(z, v, z, z, z, z, np.zeros((0, SIZE), np.float32), z, z, z, z).applied
    for stamp in (-5, 2 ** 63, 1.5):
        with pytest.raises(InputError, match="stamp must be an integer in 1 .. 2\\*\\*63 - 1"):
            _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1), stamp=stamp)
    assert store.n_users() == 0


def test_a_config_that_is_not_a_number_is_refused_naming_the_key(redis_url):
    raw = redis.Redis.from_url(redis_url)
    raw.hset("t2arec:config", mapping={"history_len": 4, "format": "two"})
    with pytest.raises(InputError, match="t2arec:config field 'format'"):
        _store(redis_url)
    raw.hset("t2arec:config", mapping={"history_len": "four", "format": 2})
    with pytest.raises(StoreCorruptError, match="t2arec:config field 'history_len' holds b'four'"):
        _store(redis_url)


@pytest.mark.parametrize("prefix", ["a*", "a?b", "x[1]", "back\\slash"])
def test_a_prefix_with_scan_pattern_characters_is_refused(prefix):
    with pytest.raises(InputError, match="prefix must be"):
        RedisStateStore("redis://127.0.0.1:1/0", prefix=prefix)


def _all_consistent(url, prefix):
    """-> (the state keys there are, the state keys the users' hashes name): equal when no state is stray or
    missing."""
    raw = redis.Redis.from_url(url)
    keys = {k.decode() for k in raw.scan_iter(match=f"{prefix}:*")}
    states = {k for k in keys if k.startswith(f"{prefix}:s:")}
    pointed = set()
    for h in [k for k in keys if k.startswith(f"{prefix}:u:")]:
        user = h[len(prefix) + 3:]
        for f, w in raw.hgetall(h).items():
            if f.startswith(b"sw:"):
                pointed.add(f"{prefix}:s:{user}:{f[3:].decode()}:{w.decode()}")
    return states, pointed


@pytest.mark.parametrize("prefix", ["a:u:b", "x%.^$(", "p:s:1", "ü:u:"])   # Lua pattern characters too
@pytest.mark.parametrize("users", [[-5, 7], [2**63 - 1, -(2**63)]])
def test_no_state_is_stray_or_missing_through_a_lifecycle_under_odd_prefixes_and_ids(redis_url, prefix, users):
    store = _store(redis_url, prefix=prefix)
    v1 = store.register_model("fp-a", LAYOUT)
    a = _commit(store, v1, users, [0, 0], [0, 0], [[(3, 1)], [(4, 1)]], _states(1, 2))
    b = _commit(store, v1, users, [a.stamp] * 2, [1, 1], [[(3, 2)], [(4, 2)]], _states(3, 4))
    v2 = store.register_model("fp-b", LAYOUT)
    assert store.put_states(np.array(users), v2, np.array([b.stamp] * 2), _states(5, 6)) == 2
    v3 = store.register_model("fp-c", LAYOUT)
    c = _commit(store, v3, users, [b.stamp] * 2, [2, 2], [[(3, 3)], [(4, 3)]], _states(7, 8))
    states, pointed = _all_consistent(redis_url, prefix)
    assert states == pointed and len(states) == 4
    np.testing.assert_array_equal(store.read(np.array(users), v3).states, _states(7, 8))
    assert store.forget(np.array(users)) == 2
    assert _all_consistent(redis_url, prefix) == (set(), set())
    d = _commit(store, v3, users, [0, 0], [0, 0], [[(3, 9)], [(4, 9)]], _states(1, 1))
    assert d.applied and _all_consistent(redis_url, prefix)[0] == _all_consistent(redis_url, prefix)[1]
    store.clear()


def test_every_call_works_after_the_server_lost_its_script_cache(redis_url):
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)
    a = _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1))
    raw = redis.Redis.from_url(redis_url)
    for call in range(4):
        raw.script_flush()
        if call == 0:
            assert store.read(np.array([7]), v).shipped[0]
        elif call == 1:
            a = _commit(store, v, [7], [a.stamp], [1], [[(3, 2)]], _states(2))
            assert a.applied
        elif call == 2:
            v2 = store.register_model("fp-b", LAYOUT)
            assert store.put_states(np.array([7]), v2, np.array([a.stamp]), _states(3)) == 1
        else:
            assert store.forget(np.array([7])) == 1
    assert not list(raw.scan_iter(match="t2arec:s:*"))


def test_a_commit_refused_for_a_corrupt_ring_pop_or_hash_leaves_the_keyspace_as_it_was(redis_url):
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)
    raw = redis.Redis.from_url(redis_url)
    raw.rpush("t2arec:r:8", "x")
    before = sorted(raw.keys("*"))
    with pytest.raises(StoreCorruptError, match="t2arec:r:8"):
        _commit(store, v, [7, 8], [0, 0], [0, 0], [[(3, 1)], [(4, 1)]], _states(1, 2))
    assert sorted(raw.keys("*")) == before
    raw.delete("t2arec:r:8"); raw.set("t2arec:pop", "x"); raw.hset("t2arec:u:9", "w", 1)
    raw.delete("t2arec:u:9"); raw.set("t2arec:u:9", "s")
    for users in ([7], [7, 9]):
        before = sorted(raw.keys("*"))
        with pytest.raises(StoreCorruptError, match="t2arec:(pop|u:9)"):
            _commit(store, v, users, [0] * len(users), [0] * len(users), [[(3, 1)]] * len(users),
                    _states(*[1] * len(users)))
        assert sorted(raw.keys("*")) == before


def test_a_rebuild_that_lands_after_its_user_moved_on_leaves_no_state(redis_url):
    store = _store(redis_url)
    v1 = store.register_model("fp-a", LAYOUT)
    a = _commit(store, v1, [7], [0], [0], [[(3, 1)]], _states(1))
    v2 = store.register_model("fp-b", LAYOUT)
    b = _commit(store, v2, [7], [a.stamp], [1], [[(3, 2)]], _states(2))   # moved on before the rebuild lands
    assert store.put_states(np.array([7]), v2, np.array([a.stamp]), _states(9)) == 0
    assert store.put_states(np.array([7]), v1, np.array([a.stamp]), _states(9)) == 0
    states, pointed = _all_consistent(redis_url, "t2arec")
    assert states == pointed


def test_snapshot_every_is_a_setting_of_the_prefix(redis_url):
    """Where states are stored must be the same in every process (a reader's choice between stepping and
    rebuilding depends on it): another value is refused, None takes the prefix's."""
    first = _store(redis_url, history_len=8, snapshot_every=2)
    joined = _store(redis_url, history_len=8)
    assert first.snapshot_every == joined.snapshot_every == joined.describe()["snapshot_every"] == 2
    with pytest.raises(InputError, match="t2arec:config says snapshot_every=2; this store was opened with "
                                         "snapshot_every=4"):
        _store(redis_url, history_len=8, snapshot_every=4)
    assert _store(redis_url, prefix="fresh", history_len=8).snapshot_every == 8     # min(16, history_len)
    with pytest.raises(InputError, match="snapshot_every=9 exceeds history_len=8"):
        _store(redis_url, prefix="other", history_len=8, snapshot_every=9)


@pytest.mark.parametrize("field, value, message", [
    ("e", None, "field 'e' is missing"),
    ("sw:1", None, "fields 'sw:1' and 'sn:1' come together: one is missing"),
    ("sw:1", "x1", "field 'sw:1' is not a stamp"),
    ("sn:1", "-2", "field 'sn:1' holds -2, not an event count of at most n = 1"),
])
def test_corrupted_epochs_and_stored_state_fields_are_refused_naming_the_key(redis_url, field, value, message):
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)
    _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1))
    raw = redis.Redis.from_url(redis_url)
    if value is None:
        raw.hdel("t2arec:u:7", field)
    else:
        raw.hset("t2arec:u:7", field, value)
    with pytest.raises(StoreCorruptError, match=f"t2arec:u:7 {message}"):
        store.read(np.array([7]), v)



@pytest.mark.parametrize("n", [1, 15, 16, 3000, 70000], ids=lambda n: f"{n}-values")
def test_per_user_numbers_reach_the_script_as_every_decimal_in_order(redis_url, n):
    """The scripts unpack per-user numbers with Redis' own cmsgpack: every value must arrive as its decimal string,
    extreme values included, whatever the array's size (MessagePack's three array headers: < 16, < 2^16, more); a
    (users, fields) array goes user by user; records of decimal fields too; an empty field is refused."""
    from t2arec_fast.serving.redis_store import _LOCAL_RECORD, _msgpack_decimals

    unpack = redis.Redis.from_url(redis_url).register_script("return cmsgpack.unpack(ARGV[1])")
    extremes = np.array([0, 1, -1, 2 ** 63 - 1, -2 ** 63, 12], np.int64)
    values = np.resize(extremes, n) * (np.arange(n) % 3 != 2) + np.arange(n) * (np.arange(n) % 3 == 2)
    assert unpack(args=[_msgpack_decimals(values)]) == [str(v).encode() for v in values.tolist()]
    per_user = np.array([[0, 1, 2, 3, 4, 5], [10 ** 18 + j for j in range(6)]], np.int64)
    assert [int(x) for x in unpack(args=[_msgpack_decimals(per_user)])] == [0, 1, 2, 3, 4, 5] + [10 ** 18 + j
                                                                                        for j in range(6)]
    records = np.zeros(2, _LOCAL_RECORD)
    for j, name in enumerate(_LOCAL_RECORD.names):
        records[name] = np.array([j, 10 ** 18 + j]).astype(_LOCAL_RECORD[name])
    assert [int(x) for x in unpack(args=[_msgpack_decimals(records)])] == [0, 1, 2] + [10 ** 18 + j for j in range(3)]
    records["e"][1] = b""
    with pytest.raises(ValueError, match="empty field"):
        _msgpack_decimals(records)


def test_popularity_members_are_zero_padded_to_the_item_digits():
    """Redis orders equal scores lexically: members must be fixed-width for that order to be the numeric one."""
    from t2arec_fast.serving.redis_store import _ITEM_DIGITS, _zero_padded

    items = np.array([1, 7, 42, 10 ** _ITEM_DIGITS - 1, 1682], np.int64)
    assert _zero_padded(items).tolist() == [str(i).zfill(_ITEM_DIGITS).encode() for i in items.tolist()]


# -- commit(meanwhile=...): the caller computes while Redis applies the commit --------------------------------------
def _count_in_redis_becomes(url, user, count, timeout_s=5.0):
    """Poll another connection until the user's hash says `count` events -> True, or False after timeout_s."""
    raw = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if raw.hget(f"t2arec:u:{user}", "n") == str(count).encode():
            return True
        time.sleep(0.001)
    return False


def test_meanwhile_runs_in_the_calling_thread_while_redis_applies_the_commit(redis_url):
    """The commit is in Redis while meanwhile() is still running (sent before it, its reply read after): without
    the overlap the poll would time out, because the commit would only go out after meanwhile returned."""
    import threading
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)
    first = _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1))
    seen = {}

    def meanwhile():
        seen["thread"] = threading.get_ident()
        return _count_in_redis_becomes(redis_url, 7, 2)

    out = _commit(store, v, [7], [first.stamp], [1], [[(4, 2)]], _states(2), meanwhile=meanwhile)
    assert out.applied and out.meanwhile_result is True
    assert seen["thread"] == threading.get_ident()
    assert store.read(np.array([7]), v).n_events[0] == 2
    assert _commit(store, v, [8], [0], [0], [[(3, 1)]], _states(1), meanwhile=lambda: "x").meanwhile_result == "x"


def test_a_lost_compare_and_set_still_returns_what_meanwhile_computed(redis_url):
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)
    first = _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1))
    _commit(store, v, [7], [first.stamp], [1], [[(4, 2)]], _states(2))               # another process moved it
    stale = _commit(store, v, [7], [first.stamp], [1], [[(5, 3)]], _states(3), meanwhile=lambda: "answer")
    assert not stale.applied and stale.lost.tolist() == [0] and stale.meanwhile_result == "answer"
    assert store.read(np.array([7]), v).n_events[0] == 2


def test_an_error_in_meanwhile_comes_back_with_the_commits_outcome_and_the_connection_stays_usable(redis_url):
    """meanwhile's error is not raised by commit(): the caller must learn whether the batch was applied (here it
    was). Its own redis errors are not mistaken for the store's outage (found by a break-review, 2026-12-02: a
    ConnectionError of meanwhile's own lookup came out as "commit: Redis at <the store> did not answer ...
    nothing of this call was written" while the batch was stored). The reply was read: the next call on the pooled
    connection gets its own."""
    from redis_server import free_loopback_port
    store = _store(redis_url)
    v = store.register_model("fp-a", LAYOUT)

    def fails():
        raise ValueError("scoring failed")

    out = _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1), meanwhile=fails)
    assert out.applied and isinstance(out.meanwhile_error, ValueError) and out.meanwhile_result is None
    elsewhere = redis.Redis(host="127.0.0.1", port=free_loopback_port(), socket_connect_timeout=0.2)
    commits = store.counters["commits"]
    out = _commit(store, v, [7], [out.stamp], [1], [[(4, 2)]], _states(2),
                  meanwhile=lambda: elsewhere.get("side-data"))      # nothing listens there
    assert out.applied and isinstance(out.meanwhile_error, redis.exceptions.ConnectionError)
    assert store.counters["commits"] == commits + 1
    assert store.read(np.array([7]), v).n_events[0] == 2


def test_redis_down_during_an_overlapped_commit_fails_fast_and_the_store_recovers(redis_server):
    store = _store(redis_server.url, connect_timeout_s=0.2, socket_timeout_s=0.5, retries=1,
                   retry_backoff_s=0.01)
    v = store.register_model("fp-a", LAYOUT)
    first = _commit(store, v, [7], [0], [0], [[(3, 1)]], _states(1), meanwhile=lambda: 1)
    redis_server.kill()
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="commit: Redis at .* did not answer"):
        _commit(store, v, [7], [first.stamp], [1], [[(4, 2)]], _states(2), meanwhile=lambda: 2)
    assert time.monotonic() - start < 5
    redis_server.start()
    assert store.read(np.array([7]), v).n_events[0] == 1
    assert _commit(store, v, [7], [first.stamp], [1], [[(4, 2)]], _states(2), meanwhile=lambda: 3).applied


def test_a_command_refused_when_queued_aborts_the_transaction_with_its_error_and_the_connection_stays_usable(
        redis_url):
    """A transaction's replies are read by the store itself (not by redis-py's pipeline): Redis' EXECABORT is
    reported with the refusal that caused it, nothing of the transaction runs, and the next call reads its own
    replies."""
    from t2arec_fast.errors import StoreError
    store = _store(redis_url)
    with pytest.raises(StoreError, match="wrong number of arguments"):
        store._call("test", store._transaction, [("SET", "t2arec:x", "1"), ("SET", "t2arec:only-a-key")], None)
    assert redis.Redis.from_url(redis_url).get("t2arec:x") is None
    assert store.ping()
