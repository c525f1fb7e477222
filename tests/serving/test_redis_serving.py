"""OnlineRecommender(model, store=redis://...) against a real redis-server: the same answers as the in-process path
and the full encoder, several recommenders on one store, the local tier never served stale, lazy rebuilds after a
model swap, bad input and outages."""
import numpy as np
import pytest
import redis
import torch

from t2arec_fast.errors import (InputError, StoreConflictError, StoreCorruptError, StoredWithoutAnswerError,
                                StoreUnavailableError)
from t2arec_fast.serving import OnlineRecommender
from t2arec_fast.serving.redis_store import RedisStateStore

from .helpers import assert_close_scores, interleaved, random_histories, reference_scores, served_scores, small_model


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="module")
def histories():
    return random_histories(n_users=30, max_len=25)


def _shared(model, url, snapshot_every=None, prefix="t2arec", ttl_s=None, **kw):
    kw.setdefault("history_len", 64)
    kw.setdefault("capacity_bytes", 4 << 20)
    store = RedisStateStore(url, prefix=prefix, history_len=kw["history_len"], snapshot_every=snapshot_every,
                            ttl_s=ttl_s)
    return OnlineRecommender(model, store=store, **kw)


@pytest.mark.parametrize("capacity_bytes", [4 << 20, 0], ids=["with-local-tier", "redis-only"])
@pytest.mark.parametrize("per_call", [1, 4])
@pytest.mark.parametrize("snapshot_every", [1, None], ids=["every-commit", "default"])
def test_the_redis_tier_answers_like_the_in_process_path_and_the_full_encoder(model, histories, redis_url,
                                                                             capacity_bytes, per_call, snapshot_every):
    """The Redis tier steps in 64-row chunks (what lets any process replay a user's events bit for bit): the same
    bits as another Redis-tier process that took the calls (with or without a local tier, states stored every 16
    events or on every commit), and the in-process answers to float rounding."""
    here = OnlineRecommender(model, capacity_bytes=4 << 20, history_len=64)
    shared = _shared(model, redis_url, snapshot_every, capacity_bytes=capacity_bytes)
    twin = _shared(model, redis_url, snapshot_every, prefix="twin")          # another store, local tier on
    for users, items, times in interleaved(histories, per_call=per_call):
        here.observe(users, items, times)
        shared.observe(users, items, times)
        twin.observe(users, items, times)
    users = list(histories) + [12345]                                   # and one cold-start user
    got, want = served_scores(shared, users), served_scores(here, users)
    np.testing.assert_array_equal(got, served_scores(twin, users))      # the same steps: bitwise
    assert_close_scores(got, want, rtol=1e-6)
    assert_close_scores(got[:-1], reference_scores(model, histories, users[:-1]))
    for exclude_seen in (False, True):
        a, b = twin.recommend(np.array(users), k=7, exclude_seen=exclude_seen), \
            shared.recommend(np.array(users), k=7, exclude_seen=exclude_seen)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0], here.recommend(np.array(users), k=7, exclude_seen=exclude_seen)[0])
    stats = shared.stats()
    assert stats["events"] == here.stats()["events"] and stats["rebuilds"] == 0 and stats["cas_retries"] == 0
    if snapshot_every is None and not capacity_bytes:                  # every call replayed what it lacked
        assert stats["events_replayed"] > 0 and stats["states_stored"] < stats["events"]


def test_two_processes_on_one_store_see_each_others_events_and_never_a_stale_local_copy(model, histories, redis_url):
    """a and b take turns; each catches up on the other's events (stepping its local copy through them): both
    answer with the bits of one recommender that took every call."""
    here = _shared(model, redis_url, prefix="one")
    a, b = _shared(model, redis_url), _shared(model, redis_url)
    assert a.version == b.version == 1                       # same weights, same version, without talking
    for i, (users, items, times) in enumerate(interleaved(histories, per_call=2)):
        here.observe(users, items, times)
        (a if i % 2 else b).observe(users, items, times)
        users = np.unique(users)
        np.testing.assert_array_equal(served_scores(a, users), served_scores(here, users))   # a's local copies
        np.testing.assert_array_equal(served_scores(b, users), served_scores(here, users))   # are never stale
    assert a.stats()["local_current"] > 0 and a.stats()["cas_retries"] == 0
    assert a.stats()["events_replayed"] > 0 and b.stats()["events_replayed"] > 0
    u, t = list(histories)[0], int(histories[list(histories)[0]][1][-1])
    for rec in (b, a):                       # b moves u while a holds a local copy: a's commit loses, re-applies
        here.observe([u], [5], [t + 1])
        rec.observe([u], [5], [t + 1])
        t += 1
    assert a.stats()["cas_retries"] == 1
    np.testing.assert_array_equal(served_scores(b, [u]), served_scores(here, [u]))


@pytest.mark.parametrize("snapshot_every", [1, None], ids=["every-commit", "default"])
@pytest.mark.parametrize("history_len", [64, 16])
def test_after_a_model_swap_states_are_rebuilt_once_from_the_rings(model, histories, redis_url, snapshot_every,
                                                                   history_len):
    """A user with no state of the new version is stepped from an empty state through its events when the ring
    still holds all of them (exact), else rebuilt from its ring (its last history_len events) — once, by the first
    process to see it, which writes the state back when a committer would have stored one."""
    kw = dict(history_len=history_len)
    old = _shared(model, redis_url, snapshot_every, **kw)
    for users, items, times in interleaved(histories, per_call=3):
        old.observe(users, items, times)
    new_model = small_model(seed=5)
    users = list(histories)
    want = reference_scores(new_model, histories, users, last=history_len)
    first = _shared(new_model, redis_url, snapshot_every, **kw)
    second = _shared(new_model, redis_url, snapshot_every, capacity_bytes=0, **kw)
    assert first.version == second.version == 2
    assert_close_scores(served_scores(first, users), want)
    n = np.array([len(histories[u][0]) for u in users])
    every = first.shared.store.snapshot_every
    assert first.stats()["rebuilds"] == (n > history_len).sum()
    assert first.stats()["states_written_back"] == (n >= every).sum() > 0
    assert_close_scores(served_scores(second, users), want)
    assert second.stats()["rebuilds"] == 0 and second.stats()["states_written_back"] == 0
    np.testing.assert_array_equal(served_scores(second, users), served_scores(first, users))
    old.swap_model(new_model)                                 # a running process swaps: the same version
    assert old.version == 2
    assert_close_scores(served_scores(old, users), want)
    assert old.stats()["rebuilds"] == 0
    keep_old = _shared(model, redis_url, snapshot_every, **kw)   # the old model's states are still there, untouched
    assert keep_old.version == 1 and keep_old.stats()["rebuilds"] == 0


def test_text_user_ids_map_to_the_same_user_in_every_process(model, histories, redis_url):
    from t2arec_fast.serving.raw_ids import TOKEN_KEYS_FROM
    a, b = _shared(model, redis_url), _shared(model, redis_url)
    keys_a = a.user_keys_of(np.array(["alice", "bob", "12", "012", "alice"]))
    keys_b = b.user_keys_of(np.array(["bob", "carol", "alice"]))
    alice, bob, twelve, text_012, again = keys_a.tolist()
    assert twelve == 12 and alice == again and len({alice, bob, text_012}) == 3
    assert min(alice, bob, text_012) >= TOKEN_KEYS_FROM                # text ids: keys from 2^62 up
    carol = keys_b[1]
    assert keys_b.tolist() == [bob, carol, alice] and carol not in (alice, bob, text_012)
    items, times = next(iter(histories.values()))
    a.observe(a.user_keys_of(["alice"] * len(items)), items, times)
    np.testing.assert_array_equal(served_scores(b, b.user_keys_of(["alice"])), served_scores(a, [alice]))
    later = _shared(model, redis_url)                        # a process started later: the same keys
    dave = later.user_keys_of(["carol", "alice", "dave"])
    assert dave.tolist()[:2] == [carol, alice] and dave[2] not in (alice, bob, text_012, carol)
    with pytest.raises(InputError, match="live in RedisStateStore"):
        a.user_keys.save("unused.npz")


def test_new_text_user_ids_asked_for_at_once_by_many_clients_get_one_key_each(redis_url):
    """Threads with their own connections ask for overlapping new ids at the same time (the allocation is one
    atomic script): every client sees the same key for an id, and no two ids share one."""
    import threading
    from t2arec_fast.serving.raw_ids import UserKeys
    ids = np.array([f"user-{i}" for i in range(300)])
    got = {}

    def ask(t):
        keys = UserKeys(store=RedisStateStore(redis_url, prefix="ids", history_len=64))
        order = np.random.default_rng(t).permutation(len(ids))
        for part in np.array_split(order, 10):
            keys.keys_for(ids[part])
        got[t] = keys.keys_for(ids)

    threads = [threading.Thread(target=ask, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 6 and all((got[t] == got[0]).all() for t in got)
    assert len(set(got[0].tolist())) == len(ids)


def test_the_device_tier_refuses_a_shared_store_by_name(model, redis_url):
    """DeviceRecommender + store is not built (docs/serving.md, "Device tier"): refused before anything connects."""
    from t2arec_fast.serving.device_tier import DeviceRecommender
    with pytest.raises(InputError, match="device tier: 'store' is served by OnlineRecommender only"):
        DeviceRecommender(model, slots=8, store=redis_url)


def test_two_processes_rebuilding_one_user_at_once_both_answer_alike_and_one_write_lands(model, histories,
                                                                                          redis_url):
    """The documented race after a model swap: both processes compute the users' states (stepped from nothing or,
    beyond history_len events, rebuilt; neither waits for the other), the first write-back lands, the second is
    refused by the stamp check, and both answers are the same."""
    kw = dict(snapshot_every=1, history_len=8)
    old = _shared(model, redis_url, **kw)
    for users, items, times in interleaved(histories, per_call=3):
        old.observe(users, items, times)
    new_model, users = small_model(seed=5), list(histories)[:4]
    a, b = _shared(new_model, redis_url, **kw), _shared(new_model, redis_url, **kw)
    b_put = b.shared.store.put_states
    answers = {}

    def a_rebuilds_first(*args, **kwargs):       # b has read and rebuilt; before its write, a does the same
        answers["a"] = served_scores(a, users)
        return b_put(*args, **kwargs)

    b.shared.store.put_states = a_rebuilds_first
    answers["b"] = served_scores(b, users)
    np.testing.assert_array_equal(answers["a"], answers["b"])
    long = sum(len(histories[u][0]) > 8 for u in users)
    assert a.stats()["rebuilds"] == b.stats()["rebuilds"] == long > 0              # computed twice
    assert a.stats()["events_replayed"] == b.stats()["events_replayed"] > 0
    assert a.stats()["states_written_back"] == len(users)                         # written once
    assert b.stats()["states_written_back"] == 0


def test_events_older_than_the_stored_last_time_are_refused_naming_the_user_and_nothing_is_stored(model, redis_url):
    a, b = _shared(model, redis_url), _shared(model, redis_url)
    a.observe([1, 2], [3, 4], [100, 100])
    b.observe([1], [5], [200])                                # a's local copy of user 1 is now behind
    with pytest.raises(InputError, match=r"timestamp 150 of event 1 \(user 1\) is earlier than that user's last "
                                         r"event at 200"):
        a.observe([2, 1], [6, 7], [300, 150])
    assert served_scores(a, [2]).tobytes() == served_scores(b, [2]).tobytes()
    store = RedisStateStore(redis_url, history_len=64)
    assert store.read(np.array([1, 2]), a.version).n_events.tolist() == [2, 1]     # user 2 did not move either


def test_forget_removes_the_user_from_every_process(model, redis_url):
    a, b = _shared(model, redis_url), _shared(model, redis_url)
    a.observe([1, 2], [3, 4], [100, 100])
    b.recommend([1], k=3)                                     # b caches user 1 locally
    assert a.forget([1]) == 1
    assert 1 not in b and 2 in b and len(b) == 1
    items, scores = b.recommend([1], k=3)                     # cold start: the local copy is dropped, not served
    assert scores.tolist() == [[1.0, 1.0, 0.0]] and items.tolist() == [[3, 4, 1]]
    b.observe([1], [9], [50])                                 # a new life: earlier times are fine again
    np.testing.assert_array_equal(served_scores(a, [1]), served_scores(b, [1]))


def test_a_corrupted_state_header_is_refused_naming_the_key(model, redis_url):
    rec = _shared(model, redis_url, snapshot_every=1, capacity_bytes=0)
    rec.observe([7], [3], [100])
    raw = redis.Redis.from_url(redis_url)
    key = f"t2arec:s:7:1:{int(raw.hget('t2arec:u:7', 'w'))}"
    state = np.frombuffer(raw.get(key), np.float32).copy()
    state[0] = 9                                              # layout version word
    raw.set(key, state.tobytes())
    with pytest.raises(StoreCorruptError, match=rf"{key}: the state's header \(readable=False"):
        rec.recommend([7], k=3)
    raw.hset("t2arec:u:7", mapping={"n": "2", "sn:1": "2"})  # a count the state does not vouch for
    state[0] = 1
    raw.set(key, state.tobytes())
    with pytest.raises(StoreCorruptError, match="events 1, last time 100.*count 2"):
        rec.observe([7], [4], [200])


def test_a_ring_with_an_unknown_item_is_refused_naming_the_key(model, redis_url):
    rec = _shared(model, redis_url, capacity_bytes=0)
    rec.observe([7], [3], [100])
    raw = redis.Redis.from_url(redis_url)
    raw.hdel("t2arec:u:7", "sw:1")                            # force a rebuild from the ring
    raw.setrange("t2arec:r:7", 0, np.array([999], "<i4").tobytes())
    with pytest.raises(StoreCorruptError, match=r"t2arec:r:7: item 999 is not a model item id"):
        rec.recommend([7], k=3)


def test_bad_store_arguments_are_refused(model, redis_url):
    with pytest.raises(InputError, match="not a Redis URL"):
        OnlineRecommender(model, store="http://127.0.0.1:1/0")
    with pytest.raises(InputError, match="history_len=64.*history_len=200"):
        OnlineRecommender(model, store=RedisStateStore(redis_url, history_len=64))
    with pytest.raises(InputError, match="store must be a redis:// URL or a RedisStateStore"):
        OnlineRecommender(model, store=42)
    rec = _shared(model, redis_url)
    with pytest.raises(InputError, match="states live in RedisStateStore"):
        rec.save("anywhere")


def test_redis_down_fails_fast_then_serving_resumes(model, redis_server):
    store = RedisStateStore(redis_server.url, history_len=64, connect_timeout_s=0.2, socket_timeout_s=0.5,
                            retries=1, retry_backoff_s=0.01)
    rec = OnlineRecommender(model, store=store, capacity_bytes=4 << 20, history_len=64)
    rec.observe([1, 2], [3, 4], [100, 100])
    before = served_scores(rec, [1, 2])
    redis_server.kill()
    with pytest.raises(StoreUnavailableError, match="did not answer"):
        rec.observe([1, 2], [5, 6], [200, 200])
    with pytest.raises(StoreUnavailableError):
        rec.recommend([1], k=3)                                # never answered from the local tier unchecked
    redis_server.start()
    np.testing.assert_array_equal(served_scores(rec, [1, 2]), before)   # the failed observe left nothing behind
    rec.observe([1, 2], [5, 6], [200, 200])
    assert rec.stats()["events"] == 4


def test_request_time_readout_and_test_time_step_through_redis_equal_the_in_process_path(histories, redis_url):
    """What recommend() reads besides the state — the last event time (readout at the request time) and the ring
    (the per-user test-time step, exclude_seen) — comes from Redis and gives the in-process answers."""
    from t2arec_fast.config import TTTConfig
    from t2arec_fast.model import T2ARec
    torch.manual_seed(0)
    model = T2ARec(40, d=16, d_state=8, n_layers=1, readout="request_gap").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ttt = TTTConfig(ttt_lr=0.5, ttt_mu_time=1.0, ttt_mu_state=1.0, ttt_params="all", ttt_batch_size=1)
    here = OnlineRecommender(model, capacity_bytes=4 << 20, history_len=8, ttt=ttt)
    shared = OnlineRecommender(model, capacity_bytes=4 << 20, history_len=8, ttt=ttt, store=redis_url)
    for users, items, times in interleaved(histories, per_call=3):
        here.observe(users, items, times)
        shared.observe(users, items, times)
    users = np.array(list(histories)[:10])
    at = np.array([histories[u][1][-1] for u in users]) + 3_600
    for exclude_seen in (False, True):
        a = here.recommend(users, k=10, at_time=at, exclude_seen=exclude_seen)
        b = shared.recommend(users, k=10, at_time=at, exclude_seen=exclude_seen)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1], rtol=1e-6)
    assert shared.stats()["adapted"] == here.stats()["adapted"] > 0


# -- found by a break-review of layout 3 (2026-12-01); each failed before its fix --------------------------------
@pytest.mark.parametrize("history_len", [64, 16])
def test_a_rolling_swap_leaves_the_new_versions_processes_with_the_same_bits(model, redis_url, history_len):
    """An old-model process makes the user's count pass 16, so the new model's committer had no state of its
    version stored; it now stores one (CommitOutcome.behind), and a new-model process arriving later steps from
    it instead of rebuilding from the ring (which, past history_len events, holds a shorter history)."""
    new = small_model(seed=1)
    a_new, b_old = _shared(new, redis_url, history_len=history_len), _shared(model, redis_url, history_len=history_len)
    a_new.observe([1] * 10, list(range(3, 13)), list(range(10, 20)))          # n = 10: no state stored
    b_old.observe([1] * 10, list(range(13, 23)), list(range(20, 30)))         # n = 20: a state of v1 only
    a_new.observe([1], [30], [31])                                            # n = 21: v2's state stored now
    c_new = _shared(new, redis_url, history_len=history_len)
    np.testing.assert_array_equal(served_scores(a_new, [1]), served_scores(c_new, [1]))
    assert c_new.stats()["rebuilds"] == 0


@pytest.mark.parametrize("bad", ["abc", "999"])
def test_a_corrupted_stored_state_count_is_refused_naming_the_field(model, redis_url, bad):
    a = _shared(model, redis_url, snapshot_every=4, history_len=8)
    for j in range(20):
        a.observe([1], [1 + j % 30], [100 + j])
    redis.Redis.from_url(redis_url).hset("t2arec:u:1", f"sn:{a.version}", bad)
    with pytest.raises(StoreCorruptError, match=f"t2arec:u:1 field 'sn:{a.version}' holds {bad}"):
        served_scores(_shared(model, redis_url, history_len=8), [1])


def test_a_ring_shorter_than_its_users_count_is_refused_naming_the_key(model, redis_url):
    a = _shared(model, redis_url, snapshot_every=4, history_len=8)
    for j in range(20):
        a.observe([1], [1 + j % 30], [100 + j])
    raw = redis.Redis.from_url(redis_url)
    for key in raw.scan_iter(match="t2arec:s:1:*"):          # the state key lost alone: rebuild from the ring
        raw.delete(key)
    raw.set("t2arec:r:1", raw.get("t2arec:r:1")[:12 * 7])    # 7 of its 8 records
    with pytest.raises(StoreCorruptError, match="t2arec:r:1 holds 84 bytes: not a ring of the 8 latest events"):
        _shared(model, redis_url, history_len=8).recommend([1], k=5)
    b = _shared(model, redis_url, history_len=8, prefix="other")
    b.observe([1, 1, 1], [3, 4, 5], [1, 2, 3])
    raw.set("other:r:1", raw.get("other:r:1")[:12])          # exclude_seen would serve items 4 and 5 again
    with pytest.raises(StoreCorruptError, match="other:r:1 holds 12 bytes: not a ring of the 3 latest events"):
        b.recommend([1], k=10, exclude_seen=True)


def test_an_event_after_another_process_forgot_the_user_is_accepted(model, redis_url):
    """The local copy's last time (1000) is older news than Redis' (the user is gone): checked against Redis before
    an event is refused as too early."""
    a, b = _shared(model, redis_url), _shared(model, redis_url)
    a.observe([1], [3], [1000])
    assert b.forget([1]) == 1
    a.observe([1], [4], [500])
    assert a.shared.store.read(np.array([1]), a.version).n_events[0] == 1
    with pytest.raises(InputError, match="earlier than that user's last event at 500"):
        a.observe([1], [5], [400])                            # and a truly early one is still refused


def test_an_event_after_the_users_ttl_expired_is_accepted(model, redis_url):
    import time
    a = _shared(model, redis_url, ttl_s=0.2)
    a.observe([1], [3], [1000])
    time.sleep(0.5)
    assert 1 not in a
    a.observe([1], [4], [500])                                # a new user
    assert a.shared.store.read(np.array([1]), a.version).n_events[0] == 1



# -- observe_and_recommend: the serving loop's two calls in one round trip -----------------------------------------
@pytest.mark.parametrize("capacity_bytes", [4 << 20, 0], ids=["with-local-tier", "redis-only"])
def test_observe_and_recommend_answers_like_observe_then_recommend_in_one_round_trip(model, histories, redis_url,
                                                                                    capacity_bytes):
    """The same bits as observe() followed by recommend() on another store (one event row per answer row, a user's
    rows after all its events); with the local tier current the call is ONE round trip (the commit), where the
    two calls take two; exclude_seen reads the rings (two)."""
    fused = _shared(model, redis_url, prefix="fused", capacity_bytes=capacity_bytes)
    twin = _shared(model, redis_url, prefix="twin", capacity_bytes=capacity_bytes)
    counted = 0
    for i, (users, items, times) in enumerate(interleaved(histories, per_call=3)):
        exclude_seen = i % 5 == 4
        trips = fused.shared.store.counters["round_trips"]
        current = capacity_bytes and fused.shared._local(np.unique(users))[0].all()
        got = fused.observe_and_recommend(users, items, times, k=7, exclude_seen=exclude_seen)
        twin.observe(users, items, times)
        want = twin.recommend(users, k=7, exclude_seen=exclude_seen)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        if current:
            assert fused.shared.store.counters["round_trips"] - trips == (2 if exclude_seen else 1)
            counted += 1
    assert counted >= 10 or not capacity_bytes           # the one-round-trip case was checked
    assert fused.stats()["events"] == twin.stats()["events"]
    assert fused.stats()["requests"] == twin.stats()["requests"]


def test_observe_and_recommend_after_another_process_moved_the_user_answers_from_both_processes_events(model,
                                                                                                  redis_url):
    """The commit's compare-and-set fails, the user is re-read with the other process's event, the batch
    re-applied: the answer is the state after every event, as one recommender that took them all gives."""
    a, b, one = _shared(model, redis_url), _shared(model, redis_url), _shared(model, redis_url, prefix="one")
    for rec in (a, one):
        rec.observe([1, 2], [3, 4], [100, 100])
    for rec in (b, one):
        rec.observe([1], [5], [200])
    answered = _count_calls(a, "_answer")
    got = a.observe_and_recommend([1, 2, 1], [6, 7, 8], [300, 300, 400], k=5)
    one.observe([1, 2, 1], [6, 7, 8], [300, 300, 400])
    want = one.recommend([1, 2, 1], k=5)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert a.stats()["cas_retries"] == 1
    assert answered == [1, 1]            # the answer computed during the lost commit was dropped, then recomputed


def _count_calls(rec, name):
    """Wrap rec.<name> (an instance attribute over the method) to append 1 to the returned list per call."""
    calls, method = [], getattr(rec, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return method(*args, **kwargs)

    setattr(rec, name, counted)
    return calls


def test_observe_and_recommend_computes_the_answer_while_redis_applies_the_commit(model, redis_url):
    """The commit is in Redis while the answer is still being computed (sent before it, its reply read after): the
    scoring waits here until another connection sees the user's new count — it would time out if the commit
    went out only after the answer. Same bits as observe() then recommend()."""
    import time
    rec, twin = _shared(model, redis_url), _shared(model, redis_url, prefix="twin")
    for r in (rec, twin):
        r.observe([1, 2], [3, 4], [100, 100])
    raw, method, seen = redis.Redis.from_url(redis_url), rec._answer, []

    def answer_once_the_commit_is_in(*args, **kwargs):
        deadline = time.monotonic() + 5
        while raw.hget("t2arec:u:1", "n") != b"3" and time.monotonic() < deadline:
            time.sleep(0.001)
        seen.append(raw.hget("t2arec:u:1", "n"))
        return method(*args, **kwargs)

    rec._answer = answer_once_the_commit_is_in
    got = rec.observe_and_recommend([1, 2, 1], [5, 6, 7], [200, 200, 300], k=4)
    twin.observe([1, 2, 1], [5, 6, 7], [200, 200, 300])
    want = twin.recommend([1, 2, 1], k=4)
    assert seen == [b"3"]
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_observe_and_recommend_with_a_request_time_model_is_refused_before_anything_is_stored(redis_url):
    from t2arec_fast.model import T2ARec
    rec = OnlineRecommender(T2ARec(40, d=16, d_state=8, n_layers=1, readout="request_gap").eval(),
                            history_len=8, store=redis_url)
    with pytest.raises(InputError, match="request time.*recommend\\(at_time"):
        rec.observe_and_recommend([1], [2], [100])
    assert 1 not in rec and rec.stats()["events"] == 0


# -- found by a break-review of observe_and_recommend (2026-12-01); each failed before its fix ----------------------
def test_a_float16_local_tier_is_refused_with_a_store(model, redis_url):
    """A rounded local copy would be stepped and committed: processes would disagree with each other and with
    Redis' exact states (and observe_and_recommend with a recommend() right after)."""
    with pytest.raises(InputError, match="float16.*exact float32"):
        OnlineRecommender(model, store=redis_url, dtype="float16")


def test_an_outage_between_the_commit_and_the_exclude_seen_read_says_the_events_were_stored(model, redis_server):
    store = RedisStateStore(redis_server.url, prefix="outage", history_len=8, socket_timeout_s=0.5,
                            connect_timeout_s=0.2, retries=0)
    rec = OnlineRecommender(model, store=store, history_len=8)
    rec.observe([1], [3], [100])
    commit = store.commit

    def commit_then_redis_dies(*args, **kwargs):
        outcome = commit(*args, **kwargs)
        redis_server.kill()
        return outcome

    store.commit = commit_then_redis_dies
    with pytest.raises(StoredWithoutAnswerError, match="events WERE stored.*reading the answer from the store "
                                                       "failed.*do not observe these events again") as raised:
        rec.observe_and_recommend([1], [4], [200], k=3, exclude_seen=True)
    assert not isinstance(raised.value, StoreUnavailableError)   # code that repeats calls after outages must not
    store.commit = commit
    redis_server.start()
    assert store.read(np.array([1]), rec.version, rings="none").n_events.tolist() == [2]
    assert rec.recommend([1], k=3, exclude_seen=True)[0].shape == (1, 3)


def test_a_failure_while_answering_after_an_applied_commit_says_the_events_were_stored(model, redis_url):
    """Found by a break-review of the overlapped commit (2026-12-02): the scoring failing (as a MemoryError would
    on a large batch) after the commit was applied came out bare, so a caller could not tell stored from not
    stored and a retry counted the events twice. Now StoredWithoutAnswerError says they were stored, the local
    tier holds the committed states (the next call is one round trip), and recommend() gives the answer."""
    rec = _shared(model, redis_url)
    twin = _shared(model, redis_url, prefix="twin")
    for r in (rec, twin):
        r.observe([1, 2], [3, 4], [100, 100])
    scoring = rec._score_states

    def scoring_fails(*args, **kwargs):
        raise RuntimeError("scoring failed (out of memory)")

    rec._score_states = scoring_fails
    with pytest.raises(StoredWithoutAnswerError, match="WERE stored.*computing the answer failed \\(RuntimeError: "
                                                       "scoring failed") as raised:
        rec.observe_and_recommend([1, 2], [5, 6], [200, 200], k=4)
    assert isinstance(raised.value.__cause__, RuntimeError)
    rec._score_states = scoring
    twin.observe([1, 2], [5, 6], [200, 200])
    assert rec.shared.store.read(np.array([1, 2]), rec.version).n_events.tolist() == [2, 2]
    assert rec.shared._local(np.array([1, 2]))[0].all()                # the committed states went to the local tier
    for got, want in zip(rec.recommend([1, 2], k=4), twin.recommend([1, 2], k=4)):
        np.testing.assert_array_equal(got, want)


# -- the local tier is written while Redis applies the commit (2026-12-02) -----------------------------------------
def _local_counts(rec, users):
    """(found, event counts) of the local tier's entries for users."""
    found, flat, _, _ = rec.shared._local(np.asarray(users, np.int64))
    return found, rec.layout.read_header(flat)[1]


def test_the_local_tier_is_written_while_redis_applies_the_commit(model, redis_url):
    """The answer, computed while Redis applies the commit, already finds the new states in the local tier (they
    went there first, in the same window); the next call uses them without fetching a state."""
    rec, seen = _shared(model, redis_url), []
    rec.observe([1, 2], [3, 4], [100, 100])
    method = rec._answer_from_states

    def answer(*args, **kwargs):
        seen.append(_local_counts(rec, [1, 2]))
        return method(*args, **kwargs)

    rec._answer_from_states = answer
    rec.observe_and_recommend([1, 2, 1], [5, 6, 7], [200, 200, 300], k=4)
    found, counts = seen[0]
    assert found.all() and counts.tolist() == [3, 2]
    fetched = rec.stats()["states_fetched"]
    rec.observe([1], [8], [400])
    assert rec.stats()["states_fetched"] == fetched


def _losing_every_commit(model, url, max_cas_retries):
    """Recommender `a` (its own store object) and a `twin` that saw user 1 and 2's first events, and a replacement
    for a's store.commit under which another process moves user 1 first, every time (the twin takes the same
    event): a's commits keep losing. → (a, twin, store, the real commit, the replacement)."""
    store = RedisStateStore(url, history_len=64, max_cas_retries=max_cas_retries)
    a = OnlineRecommender(model, store=store, capacity_bytes=4 << 20, history_len=64)
    b, twin = _shared(model, url), _shared(model, url, prefix="twin")
    for rec in (a, twin):
        rec.observe([1, 2], [3, 4], [100, 100])
    commit, t = store.commit, [150]

    def another_process_moves_user_1_first(*args, **kwargs):
        b.observe([1], [5], [t[0]])
        twin.observe([1], [5], [t[0]])
        t[0] += 1
        return commit(*args, **kwargs)

    return a, twin, store, commit, another_process_moves_user_1_first


def test_a_commit_that_keeps_losing_leaves_no_local_entry_of_its_batch(model, redis_url):
    """Each try's states go to the local tier before its outcome is known; a lost try's entries are dropped, also
    those of users nobody else moved (their entry carried the lost try's stamp): after the conflict error, the
    call's users are read from Redis, and the answers are those of the events Redis holds."""
    a, twin, store, commit, moving = _losing_every_commit(model, redis_url, max_cas_retries=2)
    store.commit = moving
    with pytest.raises(StoreConflictError, match="kept moving"):
        a.observe([1, 2], [6, 7], [200, 200])
    store.commit = commit
    assert not _local_counts(a, [1, 2])[0].any()
    np.testing.assert_array_equal(served_scores(a, [1, 2]), served_scores(twin, [1, 2]))


def test_redis_dying_during_the_commit_leaves_no_local_entry_of_its_batch(model, redis_server):
    """The reply never comes: whether Redis applied the commit is unknown, so the window's local entries go; after
    the restart the users are read from Redis, which answers as a recommender that saw what Redis kept."""
    store = RedisStateStore(redis_server.url, history_len=64, connect_timeout_s=0.2, socket_timeout_s=0.5,
                            retries=0)
    rec = OnlineRecommender(model, store=store, capacity_bytes=4 << 20, history_len=64)
    rec.observe([1, 2], [3, 4], [100, 100])
    method = rec._answer_from_states

    def redis_dies_while_answering(*args, **kwargs):
        redis_server.kill()
        return method(*args, **kwargs)

    rec._answer_from_states = redis_dies_while_answering
    with pytest.raises(StoreUnavailableError, match="did not answer"):
        rec.observe_and_recommend([1, 2], [5, 6], [200, 200], k=3)
    rec._answer_from_states = method
    assert not _local_counts(rec, [1, 2])[0].any()
    redis_server.start()
    fresh = OnlineRecommender(model, store=RedisStateStore(redis_server.url, history_len=64), history_len=64)
    np.testing.assert_array_equal(served_scores(rec, [1, 2]), served_scores(fresh, [1, 2]))


def test_a_local_write_failing_in_the_window_is_made_again_after_the_reply(model, redis_url):
    """The window's local write is not the answer: its failure does not turn into StoredWithoutAnswerError; it is
    made again once the commit is known applied (where a second failure would raise as any write does)."""
    rec = _shared(model, redis_url)
    rec.observe([1], [3], [100])
    local, calls = rec.shared.local, []
    put = local.put

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("the local tier could not grow")
        return put(*args, **kwargs)

    local.put = fails_once
    got = rec.observe_and_recommend([1], [4], [200], k=3)
    assert len(calls) == 2 and got[0].shape == (1, 3)
    found, counts = _local_counts(rec, [1])
    assert found.all() and counts.tolist() == [2]


# -- found by break-review 29 of the local write in the commit's window (2026-12-02) ------------------------------
def test_a_local_write_that_fails_part_way_in_the_window_of_a_lost_commit_leaves_no_entry_of_its_batch(model,
                                                                                                      redis_url):
    """StateCache.put stores shard by shard: a MemoryError from a later shard's growth (csrc/shard.cpp add_chunk
    throws bad_alloc) comes after earlier rows were written. Before its fix the window noted such a put as not
    done, so a commit that then lost its compare-and-set did not drop those rows: an entry of events Redis never
    took stayed in the local tier, was stepped through the events another process added (same epoch, the read's
    status '3') and served — the wrong user history."""
    a, twin, store, commit, moving = _losing_every_commit(model, redis_url, max_cas_retries=1)
    b = _shared(model, redis_url)
    local = a.shared.local
    put = local.put

    def first_row_then_out_of_memory(users, states, version):
        put(users[:1], np.ascontiguousarray(states[:1]), version)       # the first shard's rows went in
        raise MemoryError("the local tier could not grow")

    store.commit, local.put = moving, first_row_then_out_of_memory
    with pytest.raises(StoreConflictError, match="kept moving"):
        a.observe([1, 2], [6, 7], [200, 200])
    store.commit, local.put = commit, put
    b.observe([1], [8], [300])                    # Redis moves on in the same epoch: a's entry is replayed
    twin.observe([1], [8], [300])
    np.testing.assert_array_equal(served_scores(a, [1, 2]), served_scores(twin, [1, 2]))


def test_a_local_write_failing_again_after_an_applied_commit_says_the_events_were_stored(model, redis_url):
    """Found by break-review 29: the window's local write failed and so did the one after the reply — the events
    are in Redis, so a bare MemoryError would invite a caller to observe them again. observe() names itself."""
    rec, twin = _shared(model, redis_url), _shared(model, redis_url, prefix="twin")
    for r in (rec, twin):
        r.observe([1, 2], [3, 4], [100, 100])
    put = rec.shared.local.put

    def out_of_memory(*args, **kwargs):
        raise MemoryError("the local tier could not grow")

    rec.shared.local.put = out_of_memory
    with pytest.raises(StoredWithoutAnswerError, match="^observe: the events WERE stored.*writing the local tier "
                                                       "failed \\(MemoryError") as raised:
        rec.observe([1, 2], [5, 6], [200, 200])
    assert not isinstance(raised.value, StoreUnavailableError)
    rec.shared.local.put = put
    twin.observe([1, 2], [5, 6], [200, 200])
    assert rec.shared.store.read(np.array([1, 2]), rec.version).n_events.tolist() == [2, 2]
    np.testing.assert_array_equal(served_scores(rec, [1, 2]), served_scores(twin, [1, 2]))


def test_a_write_back_failing_after_an_applied_commit_says_the_events_were_stored(model, redis_url):
    """Found by break-review 29: a committer also writes back states its version's store fell behind on
    (CommitOutcome.behind: another model version's processes stored the last ones, a rolling swap); an outage
    there came out as a bare StoreUnavailableError after the commit was applied, so an outage-retry loop would
    observe the events twice. (The outcome's `behind` is set here: the read before a commit writes such states back
    itself in the cases tests can build.)"""
    rec = _shared(model, redis_url)
    rec.observe([1], [3], [100])
    store, calls = rec.shared.store, []
    commit = store.commit

    def applied_and_behind(*args, **kwargs):
        outcome = commit(*args, **kwargs)
        outcome.behind = np.array([0])
        return outcome

    def redis_gone(*args, **kwargs):
        calls.append(args[0].tolist())
        raise StoreUnavailableError("put_states: Redis did not answer")

    store.commit, store.put_states = applied_and_behind, redis_gone
    with pytest.raises(StoredWithoutAnswerError, match="^observe_and_recommend: the events WERE stored.*writing "
                                                       "back states.*failed") as raised:
        rec.observe_and_recommend([1], [4], [200], k=3)
    assert calls == [[1]] and not isinstance(raised.value, StoreUnavailableError)
    assert store.read(np.array([1]), rec.version).n_events.tolist() == [2]
    assert _local_counts(rec, [1])[1].tolist() == [2]              # the local write was made all the same
