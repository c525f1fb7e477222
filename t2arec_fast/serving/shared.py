"""The shared tier of `OnlineRecommender(model, store=...)`: users' states, counts and rings in Redis
(`RedisStateStore`), with this process's `StateCache` kept as a local fast tier in front of it.

Rules (docs/serving.md, "Shared state", has the reasoning):
  * Redis holds the truth. A local entry carries the commit stamp of the state it holds (8 extra words after the
    state: the stamp's bytes, exact in float32 and float16). Every call checks each user's current stamp in Redis
    in the same round trip that would fetch the state, so a local entry is used only when Redis holds nothing newer.
  * observe() is optimistic: it steps from the local copy and commits with a compare-and-set on every user's stamp
    (one round trip). A user whose stamp moved on (another process advanced it) is re-read and the batch
    re-applied; the whole batch lands in one atomic script, or nothing of it does.
  * recommend() reads counts, stamps, last times, states (only where the local copy is not current), rings (only
    where needed) and the cold-start list in ONE atomic read: its answer is the users' state at that instant.
  * A model version's state missing in Redis (a model swap, or a state written by another version) is rebuilt from
    the user's ring and written back only if nobody wrote one for that stamp first: once per user and version,
    except when two processes rebuild the same user at the same moment (both compute it; one write lands).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from t2arec_fast.errors import InputError, StoreConflictError, StoreCorruptError
from t2arec_fast.model.checkpoint import weights_fingerprint

from .events import EventGroups, check_time_order
from .history import ring_in_time_order
from .layout import int64_to_words, words_to_int64
from .redis_store import INT64_MIN, RedisStateStore

__all__ = ["SharedTier", "model_fingerprint", "open_store"]

STAMP_WORDS = 8               # a local entry is [state | stamp as 8 byte-words]


def model_fingerprint(model) -> str:
    """The model version a process registers in Redis: the runtime's class (PyTorch and ONNX Runtime compute the
    same states only to float rounding, so they never share one) and `model.checkpoint.weights_fingerprint`. Two
    processes that load the same checkpoint with the same runtime get the same version."""
    return f"{type(model).__name__}:{weights_fingerprint(model)}"


def open_store(store, history_len: int) -> RedisStateStore:
    """A RedisStateStore from a URL (its defaults otherwise) or the object itself; its history_len must match."""
    if isinstance(store, str):
        return RedisStateStore(store, history_len=history_len)
    if not isinstance(store, RedisStateStore):
        raise InputError(f"store must be a redis:// URL or a RedisStateStore, got {type(store).__name__}")
    if store.history_len != history_len:
        raise InputError(f"store keeps history_len={store.history_len} events per user, the recommender was "
                         f"given history_len={history_len}: pass the same")
    return store


@dataclass
class _Base:
    """Where each user (member) of an observe() call starts: state, event count, last time, commit stamp."""
    flat: np.ndarray
    n_events: np.ndarray
    last_ts: np.ndarray
    stamps: np.ndarray


class SharedTier:
    """Redis behind, the local StateCache in front (`capacity_bytes=0`: no local tier, every state from Redis)."""

    def __init__(self, rec, store: RedisStateStore, local_capacity_bytes: int):
        self.rec, self.store = rec, store
        self.local_capacity_bytes = int(local_capacity_bytes)
        self.counters = {"cas_retries": 0, "states_fetched": 0, "local_current": 0}
        self.local = None
        self.version = None

    # -- model ------------------------------------------------------------------------------------------------------
    def install_model(self, model, layout) -> int:
        """Register the model (its version is shared by every process serving it) with its `StateLayout` and size
        the local tier."""
        self.version = self.store.register_model(model_fingerprint(model), layout.describe())
        size = layout.size + STAMP_WORDS
        if self.local_capacity_bytes and (self.local is None or self.local.state_size != size):
            from t2arec_fast.cache import StateCache
            self.local = StateCache(size, self.local_capacity_bytes, dtype=self.rec.dtype, shards=self.rec.shards)
        return self.version

    # -- local tier -------------------------------------------------------------------------------------------------
    def _local(self, users: np.ndarray):
        """→ found (m,) bool, states (m, size) float32, stamps (m,) int64 (0 where not found)."""
        size = self.rec.layout.size
        if self.local is None:
            return np.zeros(len(users), bool), np.zeros((len(users), size), np.float32), np.zeros(len(users), np.int64)
        found, both = self.local.get(users, self.version)
        stamps = np.where(found, words_to_int64(both[:, size:]), 0)
        return found, np.ascontiguousarray(both[:, :size]), stamps

    def _put_local(self, users: np.ndarray, flat: np.ndarray, stamps: np.ndarray) -> None:
        if self.local is not None and len(users):
            self.local.put(users, np.ascontiguousarray(np.hstack([flat, int64_to_words(stamps)])), self.version)

    # -- observe ----------------------------------------------------------------------------------------------------
    def observe(self, groups: EventGroups, users: np.ndarray, items: np.ndarray, times: np.ndarray) -> None:
        """Advance the call's users by their events and commit them to Redis as one compare-and-set batch; a user
        another process moved meanwhile is re-read and the batch re-applied (counted in stats()["cas_retries"])."""
        U = groups.users
        base = self._bases(U)
        for _ in range(self.store.max_cas_retries + 1):
            check_time_order(users, times, groups, base.last_ts)
            flat = self.rec._advance(groups, base.flat.copy(), base.n_events, items, times)
            _, n_after, last_after = self.rec.layout.read_header(flat)
            outcome = self.store.commit(U, self.version, base.stamps, base.n_events, groups.counts, last_after, flat,
                                        groups.member, groups.rank, items, times)
            if outcome.applied:
                self._put_local(U, flat, np.full(len(U), outcome.stamp, np.int64))
                return
            self.counters["cas_retries"] += 1
            self._refresh(base, U, outcome.lost)
        raise StoreConflictError(f"observe: users {U[outcome.lost][:5].tolist()} kept moving under this batch for "
                                 f"{self.store.max_cas_retries} retries; nothing was stored")

    def _bases(self, users: np.ndarray) -> _Base:
        found, flat, stamps = self._local(users)
        _, n_events, last_ts = self.rec.layout.read_header(flat)
        base = _Base(flat, np.where(found, n_events, 0), np.where(found, last_ts, INT64_MIN), stamps)
        missing = np.flatnonzero(~found)
        if len(missing):
            self._refresh(base, users, missing)
        return base

    def _refresh(self, base: _Base, users: np.ndarray, idx: np.ndarray) -> None:
        """Re-read users[idx] from Redis into base: unknown users start empty, others from Redis' state or,
        without a current one for this model version, from their ring."""
        got = self.store.read(users[idx], self.version, rings="missing")
        flat = self._states_of(users[idx], got, np.zeros(len(idx), bool), None)
        base.flat[idx] = flat
        base.n_events[idx] = got.n_events
        base.last_ts[idx] = got.last_ts
        base.stamps[idx] = got.stamps

    def _states_of(self, users: np.ndarray, got, local_current: np.ndarray, local_flat) -> np.ndarray:
        """(m, size) states of a read: the local copy where current, else Redis' state (checked), else rebuilt from
        the ring (and written back once); zeros for unknown users."""
        flat = np.zeros((len(users), self.rec.layout.size), np.float32)
        if local_flat is not None:
            flat[local_current] = local_flat[local_current]
        shipped = np.flatnonzero(got.shipped)
        if len(shipped):
            flat[shipped] = got.states[shipped]
            self._check_headers(users[shipped], flat[shipped], got.n_events[shipped], got.last_ts[shipped],
                                got.stamps[shipped])
            self.counters["states_fetched"] += len(shipped)
        rebuild = np.flatnonzero(got.known & ~got.shipped & ~local_current)
        if len(rebuild):
            items, times, n = got.ring_items[rebuild], got.ring_times[rebuild], got.n_events[rebuild]
            self._check_rings(users[rebuild], items)
            flat[rebuild] = self.rec.encode_histories(
                lambda part: ring_in_time_order(items[part], times[part], n[part]), n, got.last_ts[rebuild])
            self.store.put_states(users[rebuild], self.version, got.stamps[rebuild], flat[rebuild])
        return flat

    def _check_headers(self, users, flat, n_events, last_ts, stamps) -> None:
        readable, n, last = self.rec.layout.read_header(flat)
        bad = np.flatnonzero(~readable | (n != n_events) | (last != last_ts))
        if len(bad):
            b = bad[0]
            raise StoreCorruptError(f"{self.store.state_key(users[b], self.version, stamps[b])}: the state's header "
                                    f"(readable={bool(readable[b])}, events {n[b]}, last time {last[b]}) does not "
                                    f"match the user's count {n_events[b]} and last time {last_ts[b]}")

    def _check_rings(self, users, items) -> None:
        bad = np.argwhere((items < 0) | (items > self.rec.n_items))
        if len(bad):
            u = bad[0][0]
            raise StoreCorruptError(f"{self.store.prefix}:r:{users[u]}: item {items[u, bad[0][1]]} is not a model "
                                    f"item id (1..{self.rec.n_items})")

    # -- recommend --------------------------------------------------------------------------------------------------
    def request_view(self, users: np.ndarray, need_rings: bool, k: int):
        """What recommend() reads about its users: one atomic read of Redis (local copies used where current)."""
        from .recommender import RequestView
        distinct, inverse = np.unique(users, return_inverse=True)
        inverse = inverse.reshape(-1)
        found, local_flat, local_stamps = self._local(distinct)
        got = self.store.read(distinct, self.version, local_stamps, rings="all" if need_rings else "missing",
                              top_k=k)
        self.counters["local_current"] += int(got.local_current.sum())
        flat = self._states_of(distinct, got, got.local_current, local_flat)
        fresh = np.flatnonzero(got.known & ~got.local_current)
        self._put_local(distinct[fresh], flat[fresh], got.stamps[fresh])
        gone = np.flatnonzero(found & ~got.known)            # forgotten or expired in Redis: drop the local copy
        if len(gone) and self.local is not None:
            self.local.delete(distinct[gone])
        sel = np.flatnonzero(got.known)
        row_of = np.full(len(distinct), -1)
        row_of[sel] = np.arange(len(sel))
        known = got.known[inverse]
        rings = None
        if need_rings:
            rings = ring_in_time_order(got.ring_items[sel], got.ring_times[sel], got.n_events[sel])
        popular = None if known.all() else self._cold_start(got.popular, k)
        return RequestView(known=known, pick=row_of[inverse[known]], flat=flat[sel], last_ts=got.last_ts[sel],
                           rings=rings, popular=popular)

    def _cold_start(self, popular, k: int):
        """The k most observed items (ties: lower id first) scored by their count, filled up with the lowest
        never-observed ids at 0 — the in-process answer (OnlineRecommender._cold_start)."""
        items, counts = popular
        keep = items <= self.rec.n_items
        items, counts = items[keep][:k], counts[keep][:k]
        if len(items) < k:
            rest = np.setdiff1d(np.arange(1, self.rec.n_items + 1), items)[:k - len(items)]
            items, counts = np.r_[items, rest], np.r_[counts, np.zeros(len(rest), np.int64)]
        return items.astype(np.int64), counts.astype(np.float32)

    # -- housekeeping -----------------------------------------------------------------------------------------------
    def contains(self, user_id: int) -> bool:
        return bool(self.store.read(np.array([user_id], np.int64), self.version, rings="none").known[0])

    def forget(self, users: np.ndarray) -> int:
        if self.local is not None:
            self.local.delete(users)
        return self.store.forget(np.unique(users))

    def stats(self) -> dict:
        local = self.local.stats() if self.local is not None else {}
        return {**local, **self.counters, **self.store.counters, "store": self.store.describe()}
