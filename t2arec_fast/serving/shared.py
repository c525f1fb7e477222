"""The shared tier of `OnlineRecommender(model, store=...)`: users' states, counts and rings in Redis
(`RedisStateStore`), with this process's `StateCache` kept as a local fast tier in front of it.

Rules (docs/serving.md, "Shared state", has the reasoning):
  * Redis holds the truth. A local entry carries the commit stamp and the user's epoch of the state it holds (16
    extra words after the state: their bytes, exact in float32 and float16). Every call checks each user's current
    stamp in Redis in the same round trip that would fetch anything, so a local entry is used as it is only when
    Redis holds nothing newer; when it is behind, Redis ships the events it lacks and they are stepped onto it.
  * A commit stores a user's state only when its count passes a multiple of `snapshot_every`; in between it
    stores the events (the ring). A reader without a current copy steps the stored state, or its own older copy
    of the same epoch, through the events after it: the same steps the committer took, so the same bits.
  * observe() is optimistic: it steps from the local copy and commits with a compare-and-set on every user's stamp
    (one round trip). A user whose stamp moved on (another process advanced it) is re-read and the batch
    re-applied; the whole batch lands in one atomic script, or nothing of it does.
  * observe_and_recommend() answers from the states its commit stores, computed between sending the commit and
    reading its reply (while Redis applies it) and kept only if the commit is applied.
  * recommend() reads counts, stamps, last times, states (only where the local copy is not current), rings (only
    where needed) and the cold-start list in ONE atomic read: its answer is the users' state at that instant.
  * A model version's state missing in Redis (a model swap, or a state written by another version) is rebuilt from
    the user's ring and written back only if nobody wrote one for that stamp first: once per user and version,
    except when two processes rebuild the same user at the same moment (both compute it; one write lands).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Optional, Tuple

import numpy as np

from t2arec_fast.errors import InputError, StoreConflictError, StoreCorruptError, StoredWithoutAnswerError
from t2arec_fast.model.checkpoint import weights_fingerprint

from .events import EventGroups, check_time_order, group_events
from .history import ring_in_time_order
from .layout import int64_to_words, words_to_int64
from .redis_store import INT64_MIN, RedisStateStore, new_stamp

__all__ = ["SharedTier", "model_fingerprint", "open_store"]

LOCAL_WORDS = 16              # a local entry is [state | stamp, epoch as 8 byte-words each]
# The Redis tier runs every step on chunks of exactly this many users (the last one padded): a reader recomputes
# states that their committer computed in other company, and CPU matrix kernels round differently for different
# row counts (a user stepped alone and among 64 differed by up to 2.5e-7; in chunks of one size the bits did not
# depend on the chunk's other rows or the user's place in it: tests/serving). Always, whatever snapshot_every (a
# setting of the prefix). 64: the benchmark's batch, where a chunk costs no more than one step of the batch; a lone
# user pays a 64-row step (~0.4 ms instead of ~0.2 on this CPU for the ml-100k-sized model).
STEP_ROWS = 64


# The floats of the one-step update as this release computes them: raised whenever a release changes them, so
# that processes of two releases on one store (a rolling upgrade) register two model versions instead of sharing
# states that differ in the last bits. 2: the outer product added by a fused addcmul (2026-12-02); 1: before.
STEP_ARITHMETIC = 2


def model_fingerprint(model) -> str:
    """The model version a process registers in Redis: the runtime's class (PyTorch and ONNX Runtime compute the
    same states only to float rounding, so they never share one), `model.checkpoint.weights_fingerprint` and, from
    the second revision on, the step's arithmetic revision (STEP_ARITHMETIC). Two processes of one release that load
    the same checkpoint with the same runtime get the same version."""
    return f"{type(model).__name__}:{weights_fingerprint(model)}:step{STEP_ARITHMETIC}"


def open_store(store, history_len: int) -> RedisStateStore:
    """A RedisStateStore from a URL (its defaults otherwise: the prefix's snapshot_every) or the object itself;
    its history_len must match."""
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
    epochs: np.ndarray


class _Window:
    """What a commit runs while Redis applies it (RedisStateStore.commit's `meanwhile`): the local tier's write,
    then the caller's answer. A failed local write is not an error of the answer: it is noted (local_done stays
    False) and made again once the commit is known applied (a second failure: StoredWithoutAnswerError).
    local_tried: the write began — it may have stored some rows before failing (the cache stores shard by shard),
    so undoing it deletes every user of the batch whether or not it finished."""

    def __init__(self, put_local: Callable[[], None], answer: Optional[Callable[[], Any]]):
        self.put_local, self.answer = put_local, answer
        self.local_tried = self.local_done = False

    def __call__(self):
        self.local_tried = True
        try:
            self.put_local()
            self.local_done = True
        except Exception:             # noqa: BLE001 (repeated after the reply, where it raises)
            pass
        return None if self.answer is None else self.answer()


class SharedTier:
    """Redis behind, the local StateCache in front (`capacity_bytes=0`: no local tier, every state from Redis)."""

    def __init__(self, rec, store: RedisStateStore, local_capacity_bytes: int):
        self.rec, self.store = rec, store
        self.local_capacity_bytes = int(local_capacity_bytes)
        self.counters = {"cas_retries": 0, "states_fetched": 0, "local_current": 0, "events_replayed": 0,
                         "states_stored": 0}
        self.local = None
        self.version = None

    # -- model ------------------------------------------------------------------------------------------------------
    def install_model(self, model, layout) -> int:
        """Register the model (its version is shared by every process serving it) with its `StateLayout` and size
        the local tier."""
        self.version = self.store.register_model(model_fingerprint(model), layout.describe())
        size = layout.size + LOCAL_WORDS
        if self.local_capacity_bytes and (self.local is None or self.local.state_size != size):
            from t2arec_fast.cache import StateCache
            self.local = StateCache(size, self.local_capacity_bytes, dtype=self.rec.dtype, shards=self.rec.shards)
        return self.version

    # -- local tier -------------------------------------------------------------------------------------------------
    def _local(self, users: np.ndarray):
        """→ found (m,) bool, states (m, size) float32 (a view of the fetched rows: not copied again), stamps (m,)
        int64, epochs (m,) int64 (0 where not found)."""
        size, m = self.rec.layout.size, len(users)
        if self.local is None:
            return np.zeros(m, bool), np.zeros((m, size), np.float32), np.zeros(m, np.int64), np.zeros(m, np.int64)
        found, both = self.local.get(users, self.version)
        stamps = np.where(found, words_to_int64(both[:, size:size + 8]), 0)
        epochs = np.where(found, words_to_int64(both[:, size + 8:]), 0)
        return found, both[:, :size], stamps, epochs

    def _put_local(self, users: np.ndarray, flat: np.ndarray, stamps: np.ndarray, epochs: np.ndarray) -> None:
        if self.local is not None and len(users):
            self.local.put(users, np.ascontiguousarray(np.hstack([flat, int64_to_words(stamps),
                                                                  int64_to_words(epochs)])), self.version)

    # -- observe ----------------------------------------------------------------------------------------------------
    def observe(self, groups: EventGroups, users: np.ndarray, items: np.ndarray, times: np.ndarray,
                meanwhile: Optional[Callable[[np.ndarray], Any]] = None, call: str = "observe"
                ) -> Tuple[np.ndarray, Any]:
        """Advance the call's users by their events and commit them to Redis as one compare-and-set batch (states
        only of the users whose count passes a multiple of snapshot_every); a user another process moved meanwhile
        is re-read and the batch re-applied (counted in stats()["cas_retries"]). → (the members' new states
        (U, size) float32: what Redis holds for them at the commit's instant; meanwhile(those states), computed
        while Redis applied the commit — on a lost compare-and-set it is computed again for the re-applied
        states — or None without meanwhile).

        The local tier is written while Redis applies the commit too, before its outcome is known, and the
        entries are dropped again unless it was applied (docs/serving.md, "The local tier is written in the same
        window"): no call can read them in between (this recommender's lock), and an entry whose stamp Redis does
        not carry is never served anyway.

        Raises: StoredWithoutAnswerError (naming `call`, the public call) when anything failed after the commit was
        applied — meanwhile, the local tier's write, a write-back — with everything else an applied commit owes
        done; what the store raises."""
        U = groups.users
        base = self._bases(U)
        verified = False                      # base checked against Redis (not only local copies)?
        for _ in range(self.store.max_cas_retries + 1):
            try:
                check_time_order(users, times, groups, base.last_ts)
            except InputError:
                if verified:
                    raise
                self._refresh(base, U, np.arange(len(U)))      # a local copy can be older than Redis' truth (the
                verified = True                                # user forgotten or expired since): ask before refusing
                continue
            flat = self.rec._advance(groups, base.flat.copy(), base.n_events, items, times, STEP_ROWS)
            _, n_after, last_after = self.rec.layout.read_header(flat)
            snapshot = self.store.snapshot_rows(base.n_events, n_after)
            stamp = new_stamp()
            epochs = np.where(base.stamps == 0, stamp, base.epochs)     # a new user's epoch: this stamp
            stamps = np.full(len(U), stamp, np.int64)
            window = _Window(partial(self._put_local, U, flat, stamps, epochs),
                             None if meanwhile is None else partial(meanwhile, flat))
            try:
                outcome = self.store.commit(U, self.version, base.stamps, base.n_events, groups.counts, last_after,
                                            flat, groups.member, groups.rank, items, times, stamp=stamp,
                                            snapshot=snapshot, meanwhile=window)
            except BaseException:
                self._drop_local(U, window)   # the outcome is unknown: Redis, not a guess, says on the next call
                raise
            if outcome.applied:
                self.counters["states_stored"] += int(snapshot.sum())
                failed = self._after_applied(U, flat, stamps, epochs, outcome, window)
                if failed is None and outcome.meanwhile_error is not None:
                    failed = ("computing the answer", outcome.meanwhile_error)
                if failed is not None:        # the events are stored: a bare error would invite a second observe
                    raise StoredWithoutAnswerError(*failed, call=call) from failed[1]
                return flat, outcome.meanwhile_result
            self._drop_local(U, window)
            self.counters["cas_retries"] += 1
            self._refresh(base, U, outcome.lost)
            verified = False
        raise StoreConflictError(f"observe: users {U[outcome.lost][:5].tolist()} kept moving under this batch for "
                                 f"{self.store.max_cas_retries} retries; nothing was stored")

    def _after_applied(self, U, flat, stamps, epochs, outcome, window) -> Optional[Tuple[str, Exception]]:
        """What an applied commit still owes this process: its local entries (again, if the window's write failed)
        and the write-back of states this version's store fell behind on (a rolling swap). Each is tried whatever
        the other did. → None, or (what failed, its error) of the first failure."""
        failed = None
        if not window.local_done:
            try:
                self._put_local(U, flat, stamps, epochs)
            except Exception as exc:              # noqa: BLE001 (returned, raised by the caller)
                failed = ("writing the local tier", exc)   # (rows it stored are the applied commit's: correct)
        behind = outcome.behind
        if len(behind):
            try:
                self.store.put_states(U[behind], self.version, stamps[behind], flat[behind])
            except Exception as exc:              # noqa: BLE001
                failed = failed or ("writing back states another model version's processes left behind", exc)
        return failed

    def _drop_local(self, users: np.ndarray, window: "_Window") -> None:
        """Undo the window's local write of a commit that was not applied (or whose outcome is unknown)."""
        if window.local_tried and self.local is not None:
            self.local.delete(users)

    def _bases(self, users: np.ndarray) -> _Base:
        found, flat, stamps, epochs = self._local(users)
        _, n_events, last_ts = self.rec.layout.read_header(flat)
        base = _Base(flat, np.where(found, n_events, 0), np.where(found, last_ts, INT64_MIN), stamps, epochs)
        missing = np.flatnonzero(~found)
        if len(missing):
            self._refresh(base, users, missing)
        return base

    def _refresh(self, base: _Base, users: np.ndarray, idx: np.ndarray) -> None:
        """Re-read users[idx] from Redis into base: unknown users start empty, others from their state in Redis
        or base's own copy stepped through the events it lacks or, without either, rebuilt from their ring."""
        got = self.store.read(users[idx], self.version, base.stamps[idx], rings="missing",
                              local_epochs=base.epochs[idx], local_counts=base.n_events[idx])
        base.flat[idx] = self._states_of(users[idx], got, base.flat[idx])
        base.n_events[idx] = got.n_events
        base.last_ts[idx] = got.last_ts
        base.stamps[idx] = got.stamps
        base.epochs[idx] = got.epochs

    def _states_of(self, users: np.ndarray, got, local_flat: np.ndarray) -> np.ndarray:
        """(m, size) current states of a read: the local copy where current; else the stored state, the local
        copy or an empty state stepped through the shipped events (checked against Redis' count and time); else
        rebuilt from the ring (and written back once); zeros for unknown users."""
        flat = np.zeros((len(users), self.rec.layout.size), np.float32)
        mine = got.local_current | got.replay_local
        flat[mine] = local_flat[mine]
        shipped = np.flatnonzero(got.shipped)
        if len(shipped):
            flat[shipped] = got.states[shipped]
            self._check_headers(flat[shipped], got.snapshot_counts[shipped], None, lambda b: self.store.state_key(
                users[shipped[b]], self.version, got.snapshot_stamps[shipped[b]]))
            self.counters["states_fetched"] += len(shipped)
        computed = got.shipped | got.replay_local | got.replay_empty      # stepped here through shipped events
        replayed = np.flatnonzero(computed)
        if len(replayed):
            self._replay(users, flat, got)
            self._check_headers(flat[replayed], got.n_events[replayed], got.last_ts[replayed],
                                lambda b: f"{self.store.prefix}:r:{users[replayed[b]]} (the events after its state)")
        # a state computed here where this version's stored one is missing or a snapshot_every or more events behind
        # (a model swap, a lost key, commits by another version's processes): store it, as a committer would have
        every = self.store.snapshot_every
        behind = got.replay_empty | (got.snapshot_counts < 0) | (got.n_events - got.snapshot_counts >= every)
        back = np.flatnonzero(computed & (got.n_events >= every) & behind)
        if len(back):
            self.store.put_states(users[back], self.version, got.stamps[back], flat[back])
        rebuild = np.flatnonzero(got.known & ~got.local_current & ~computed)
        if len(rebuild):
            items, times, n = got.ring_items[rebuild], got.ring_times[rebuild], got.n_events[rebuild]
            self._check_rings(users[rebuild], items)
            flat[rebuild] = self.rec.encode_histories(
                lambda part: ring_in_time_order(items[part], times[part], n[part]), n, got.last_ts[rebuild])
            self.store.put_states(users[rebuild], self.version, got.stamps[rebuild], flat[rebuild])
        return flat

    def _replay(self, users: np.ndarray, flat: np.ndarray, got) -> None:
        """Step the rows of `flat` through the read's shipped events, in place: the steps their committers took."""
        if not len(got.event_user):
            return
        self._check_rings(users[got.event_user], got.event_items[:, None], allow_empty=False)
        groups = group_events(got.event_user)
        rows = groups.users                                 # members are row indices here
        flat[rows] = self.rec._advance(groups, flat[rows].copy(), got.event_from[rows], got.event_items,
                                       got.event_times, STEP_ROWS)
        self.counters["events_replayed"] += len(got.event_user)

    def _check_headers(self, flat, n_events, last_ts, where) -> None:
        """A state's header must say the count (and, when given, last time) that Redis holds for it; where(row)
        names the key to blame (built only for a refusal)."""
        readable, n, last = self.rec.layout.read_header(flat)
        bad = np.flatnonzero(~readable | (n != n_events) | (False if last_ts is None else last != last_ts))
        if len(bad):
            b = bad[0]
            expected = f"count {n_events[b]}" + ("" if last_ts is None else f" and last time {last_ts[b]}")
            raise StoreCorruptError(f"{where(b)}: the state's header (readable={bool(readable[b])}, events {n[b]}, "
                                    f"last time {last[b]}) does not match the user's {expected}")

    def _check_rings(self, users, items, allow_empty: bool = True) -> None:
        """Ring items must be model item ids (0 marks an unfilled slot of a raw ring)."""
        bad = np.argwhere((items < (0 if allow_empty else 1)) | (items > self.rec.n_items))
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
        found, local_flat, local_stamps, local_epochs = self._local(distinct)
        _, local_counts, _ = self.rec.layout.read_header(local_flat)
        got = self.store.read(distinct, self.version, local_stamps, rings="all" if need_rings else "missing",
                              top_k=k, local_epochs=local_epochs, local_counts=np.where(found, local_counts, 0))
        self.counters["local_current"] += int(got.local_current.sum())
        flat = self._states_of(distinct, got, local_flat)
        fresh = np.flatnonzero(got.known & ~got.local_current)
        self._put_local(distinct[fresh], flat[fresh], got.stamps[fresh], got.epochs[fresh])
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
