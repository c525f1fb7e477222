"""OnlineRecommender: every user's recurrent state in an LRU cache, one O(1) step per event, top-k on request
(the package docstring, t2arec_fast/serving/__init__.py, and docs/serving.md give the picture)."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
import threading
from functools import partial
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np
import torch

from t2arec_fast import json_io
from t2arec_fast.errors import InputError, StoredWithoutAnswerError, StoreUnavailableError
from t2arec_fast.model.block import BlockState
from t2arec_fast.model.protocol import StepModel

from .events import EventGroups, check_items, check_time_order, group_events, int64_array
from .folder import write_folder
from .history import HistoryStore
from .layout import StateLayout
from .raw_ids import RawIdServing, UserKeys

__all__ = ["OnlineRecommender", "RUNTIMES", "RequestView"]

SERVING_FORMAT = 1          # serving.json "format" of a saved OnlineRecommender folder


@dataclass
class RequestView:
    """What one recommend() call reads about its n requested users, from whichever tier holds them.

    known (n,) bool; flat (m, size) float32: current states of the m distinct known users; pick (n_known,): the row
    of flat for each known position in request order; last_ts (m,) int64; rings: (items, times) (m, L) int64 in time
    order, LEFT-padded with 0, when asked for; popular: the cold-start answer (items (k,) int64, scores (k,)
    float32) when some user is unknown."""
    known: np.ndarray
    pick: np.ndarray
    flat: np.ndarray
    last_ts: np.ndarray
    rings: Optional[Tuple[np.ndarray, np.ndarray]]
    popular: Optional[Tuple[np.ndarray, np.ndarray]]


def last_times(groups: EventGroups, times: np.ndarray) -> np.ndarray:
    """(U,) int64 time of each member's last event in the call."""
    last = groups.rank == groups.counts[groups.member] - 1
    out = np.empty(len(groups.users), np.int64)
    out[groups.member[last]] = times[last]
    return out


class OnlineRecommender(RawIdServing):
    """Keeps every user's recurrent state and answers top-k requests after O(1) work per event. observe/recommend
    take int64 user keys and model item ids; observe_raw/recommend_raw take a data file's ids (raw_ids.py).

    model:          a `model.protocol.StepModel` (T2ARec; SASRec is refused: no one-step update); put in eval mode.
    capacity_bytes: byte budget of the state cache (LRU beyond it; evicted users are rebuilt from their ring).
    history_len:    events kept per user for rebuilds and exclude_seen. A rebuild encodes these last events only,
                    so for a longer history it equals re-encoding the last history_len events (the usual max_len).
    device:         where the model runs; states are stored on the host.
    dtype:          storage precision of the cache, "float32" (exact) or "float16" (half the memory, rounded;
                    not with a store, whose local tier must hold the exact states it steps and commits).
    shards:         lock stripes of the cache (None: its default).
    runtime:        "torch" (the model itself) or "onnx" (encode and step in ONNX Runtime through the exported graphs;
                    `onnx_dir` names an `export_onnx` folder of this model, else the graphs are exported first).
    onnx_threads:   ONNX Runtime's intra-op threads with runtime "onnx" (None: its choice, one per core). 1 keeps
                    ORT's workers from competing with a Redis server or other serving processes for the cores
                    (docs/benchmarks.md, "The model's step in ONNX Runtime").
    ttt:            test-time alignment for requests that give `at_time`: a TTTConfig (or a dict of its fields);
                    None = off. Each such user gets its own episode (the per-user form of the paper's step; a
                    request batch is not a meaningful episode), on its ring with T_{n+1} = at_time − last event;
                    with `ttt_gate` only users whose request follows a long pause adapt. O(history_len) per adapted
                    user (a gradient through the sequence); the cached state is never changed. Backend "torch" only.
    flush_denormal: run the model with denormal floats flushed to zero (CPU). The SSM decay exp(Δ·A) underflows
                    into denormals for large Δ·|A|, and x86 multiplies by denormals ~100× slower: measured 1.5 ms
                    → 0.9 ms per batch-64 step. Answers change by < 1e-38 absolute. Switched on around each
                    observe/recommend and back off after (torch's default), for the calling thread only.
    store:          None (users' data in this process), or a redis:// URL or `RedisStateStore`: users' states,
                    counts and rings in Redis, shared with every process serving the same store; this process's
                    cache (capacity_bytes; 0 = none) is then the local tier in front of it (docs/serving.md,
                    "Shared state").

    Shapes and units everywhere: user ids (n,) int64 keys; item ids (n,) int64 model ids 1..n_items; timestamps
    (n,) int64 unix seconds; answers (n, k). Source: docs/serving.md.

    Raises:
        InputError: a model without a one-step update (not a `StepModel`, e.g. SASRec), an unknown runtime, bad ttt
            settings or ttt with runtime "onnx", history_len < 1, a store that is neither a URL nor a
            RedisStateStore (or keeps another history_len), a store with dtype "float16".
        ValueError, TypeError: a capacity, dtype or shard count the state cache refuses (cache.StateCache).
        OnnxModelError: runtime "onnx" with graphs that do not belong to the model.
    """

    def __init__(self, model, capacity_bytes: int = 256 << 20, history_len: int = 200, device: str = "cpu",
                 dtype: str = "float32", shards: Optional[int] = None, flush_denormal: bool = True,
                 runtime: str = "torch", onnx_dir=None, ttt=None, store=None, onnx_threads: Optional[int] = None):
        self._lock = threading.RLock()
        self.runtime, self.onnx_dir, self.onnx_threads = _check_runtime(runtime), onnx_dir, onnx_threads
        self.ttt = _check_ttt(ttt, self.runtime)
        self.flush_denormal = flush_denormal
        self.device = torch.device(device)
        self.capacity_bytes, self.dtype, self.shards = int(capacity_bytes), dtype, shards
        self.history = HistoryStore(history_len)
        self.user_keys = UserKeys()           # raw user ids → keys, saved with the recommender (raw_ids.py)
        self.version = 1
        self._counters = {"events": 0, "rebuilds": 0, "cold_starts": 0, "requests": 0, "adapted": 0}
        self.shared = None
        if store is not None:                 # users' data in Redis; this process's cache is the local tier
            if dtype != "float32":            # a rounded local copy would be stepped and committed: processes
                raise InputError(             # would then disagree with each other and with Redis' exact states
                    f"dtype={dtype!r} with a store: the local tier must hold exact float32 states (a rounded "
                    f"copy would be stepped and committed, and processes would disagree); use dtype='float32'")
            from .shared import SharedTier, open_store
            self.shared = SharedTier(self, open_store(store, history_len), self.capacity_bytes)
            self.history = None
            self.user_keys = UserKeys(store=self.shared.store)     # text ids' keys shared through Redis too
        self._install_model(model)
        self.popularity = np.zeros(self.n_items + 1, np.int64)
        self.cache = self._new_cache() if self.shared is None else None

    @contextlib.contextmanager
    def _computing(self):
        """Held while the model runs: the lock, and flush-to-zero for denormals if asked (see flush_denormal)."""
        with self._lock:
            if not self.flush_denormal:
                yield
                return
            torch.set_flush_denormal(True)
            try:
                yield
            finally:
                torch.set_flush_denormal(False)

    # -- model and cache ------------------------------------------------------------------------------------------
    def _install_model(self, model) -> None:
        """Serve `model`. Everything that can fail (ONNX graphs, the device, the store's registry) runs before
        anything is assigned: a failed swap_model leaves the old model, layout and version in place."""
        if not isinstance(model, StepModel):
            raise InputError(f"serving needs a model with a one-step update (model.protocol.StepModel: T2ARec); "
                             f"a {type(model).__name__} has none")
        dtypes = {p.dtype for p in model.parameters()} if isinstance(model, torch.nn.Module) else set()
        if dtypes - {torch.float32}:            # states are float32 buffers: another dtype fails inside the step
            raise InputError(f"serving runs the model in float32 (its states are float32): this model's weights are "
                             f"{', '.join(sorted(str(d) for d in dtypes))}; serve model.float()")
        served = _onnx_model(model, self.onnx_dir, self.onnx_threads) if self.runtime == "onnx" else model
        served = served.to(self.device).eval()          # eval: dropout off, so steps are deterministic
        layout = StateLayout.for_model(served)
        if self.shared is not None:                     # the same weights get the same version in every process
            self.version = self.shared.install_model(model, layout)
        self.model, self.n_items, self.layout = served, int(served.n_items), layout

    def _new_cache(self):
        from t2arec_fast.cache import StateCache
        return StateCache(self.layout.size, self.capacity_bytes, dtype=self.dtype, shards=self.shards)

    def set_ttt(self, ttt) -> None:
        """Switch test-time alignment on (a TTTConfig or a dict of its fields) or off (None) for later requests.

        Raises:
            InputError: unknown settings, not a TTTConfig / dict / None, or runtime "onnx" (it cannot differentiate).
        """
        with self._lock:
            self.ttt = _check_ttt(ttt, self.runtime)

    def swap_model(self, model) -> None:
        """Serve a newly trained model from now on. The version goes up, so every cached state becomes stale and is
        rebuilt from its ring on the user's next request or event — never served. Histories and popularity stay.

        Raises:
            InputError: the new model knows fewer items than the current one, or has no one-step update.
        """
        with self._lock:
            if int(model.n_items) < self.n_items:
                raise InputError(f"swap_model: the new model knows {model.n_items} items, fewer than the "
                                 f"{self.n_items} already in use (item ids must keep their meaning)")
            old_layout = self.layout
            self._install_model(model)
            if self.shared is not None:
                return                                    # the version comes from the store's registry
            if self.layout.size != old_layout.size:
                self.cache = self._new_cache()            # another shape: old states are useless
            grown = np.zeros(self.n_items + 1, np.int64)
            grown[:len(self.popularity)] = self.popularity
            self.popularity = grown
            self.version += 1

    # -- observe --------------------------------------------------------------------------------------------------
    def observe(self, user_ids, item_ids, timestamps) -> None:
        """Advance each user's state by its new events (int64 arrays of equal length; items are model ids).

        user_ids, item_ids, timestamps: (n,) int64 (numpy, torch or lists); timestamps in unix seconds.
        Events of one user within the call are applied in call order; the k-th event of every user goes into the
        k-th batched step. Everything is checked first: on any error nothing at all is stored.

        Raises:
            InputError: arrays not 1-D integers or of different lengths, an item id outside 1..n_items, timestamps
                going backwards within a user or earlier than its stored last event (each naming the event).
            StoreConflictError, StoreError: with a shared store, when other processes keep moving the same users or
                Redis cannot be reached (nothing stored).
            StoredWithoutAnswerError (a StoreError): with a shared store, the events WERE stored but keeping this
                process's copies failed after the commit (named): do not observe them again.
        """
        users, items, times = self._checked_events(user_ids, item_ids, timestamps, "observe")
        if len(users) == 0:
            return
        with self._computing():
            self._observe_checked(group_events(users), users, items, times)

    def _checked_events(self, user_ids, item_ids, timestamps, what: str):
        """→ users, items, times (n,) int64, checked (lengths, item range) before anything is stored."""
        users = int64_array(user_ids, "user_ids")
        items = int64_array(item_ids, "item_ids")
        times = int64_array(timestamps, "timestamps")
        if not (len(users) == len(items) == len(times)):
            raise InputError(f"{what}: user_ids, item_ids and timestamps differ in length "
                             f"({len(users)}, {len(items)}, {len(times)})")
        check_items(items, self.n_items)
        return users, items, times

    def _observe_checked(self, groups: EventGroups, users, items, times, meanwhile=None, call: str = "observe"):
        """observe() under the lock → (with a shared store the members' committed states (U, size), else None;
        with a shared store meanwhile(those states), computed while Redis applies the commit, else None)."""
        flat = result = None
        if self.shared is not None:
            flat, result = self.shared.observe(groups, users, items, times, meanwhile, call)
        else:
            self._observe_here(groups, users, items, times)
        self._counters["events"] += len(items)
        return flat, result

    def observe_and_recommend(self, user_ids, item_ids, timestamps, k: int = 10, exclude_seen: bool = False):
        """observe(user_ids, item_ids, timestamps), then recommend(user_ids, k, exclude_seen), as one step: no other
        call of this recommender runs in between, and the answer is each user's state right after its events.
        → (items (n, k) int64, scores (n, k) float32), one row per event row (a user's rows all show its state
        after all of its events in the call).

        Why: the serving loop "an event arrives, answer the next request" costs one round trip with a shared
        store instead of two. The state a commit stores is the state the answer is computed from, so the answer
        is that of the commit's instant — what recommend() right after would give unless another process
        advanced the user in between (docs/serving.md, "Shared state"); it is computed between sending the commit
        and reading its reply, and kept only if the commit is applied. With exclude_seen the rings are needed
        from the store, so that case makes the two calls' round trips. Without at_time: a model that scores at
        the request time, or a test-time step, needs recommend(at_time=...).

        Raises: what observe() and recommend() raise, and nothing is stored then — except StoredWithoutAnswerError
        (a StoreError, not a StoreUnavailableError): with a store, the commit was applied but the answer could not
        be given (reading the rings for exclude_seen met an outage, computing the answer failed, or keeping this
        process's copies did): ask recommend() for it, do not observe the events again. InputError for a model that needs the request time (before
        anything is stored).
        """
        users, items, times = self._checked_events(user_ids, item_ids, timestamps, "observe_and_recommend")
        k = self._check_k(k)
        exclude_seen = _check_flag(exclude_seen, "exclude_seen")
        with self._computing():               # (under the lock: a swap_model cannot slip in after the check)
            if self.model.needs_request_time:
                raise InputError("observe_and_recommend: this model scores at the request time (readout "
                                 "'request_gap'): call observe() and then recommend(at_time=...)")
            if len(users) == 0:
                return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
            groups = group_events(users)
            from_commit = self.shared is not None and not exclude_seen    # the answer needs no read of Redis
            flat, answer = self._observe_checked(groups, users, items, times, meanwhile=partial(
                self._answer_from_states, users, groups, k) if from_commit else None, call="observe_and_recommend")
            self._counters["requests"] += len(users)
            if from_commit:                       # computed while Redis applied the commit (docs/serving.md,
                return answer                     # "The answer is computed while Redis applies the commit")
            if flat is None:                      # in-process: read back what recommend() reads (a float16 cache
                view = self.request_view(users, exclude_seen, k)     # rounds it: the same answer as two calls)
            else:                                 # exclude_seen: the rings, in a read after the commit
                view = self._read_after_commit(users, k)
            return self._answer(users, view, k, exclude_seen, None)

    def _answer_from_states(self, users: np.ndarray, groups: EventGroups, k: int, flat: np.ndarray):
        """The answer (items, scores (n, k)) of observe_and_recommend from the members' states after the call,
        flat (U, size) with headers: they are what the commit stores, so no read is needed."""
        _, _, last = self.layout.read_header(flat)
        view = RequestView(known=np.ones(len(users), bool), pick=groups.member, flat=flat, last_ts=last, rings=None,
                           popular=None)
        return self._answer(users, view, k, False, None)

    def _read_after_commit(self, users: np.ndarray, k: int) -> RequestView:
        try:
            return self.shared.request_view(users, True, k)
        except StoreUnavailableError as exc:
            raise StoredWithoutAnswerError("reading the answer from the store", exc) from exc

    def _observe_here(self, groups: EventGroups, users, items, times) -> None:
        """observe() with the users' data in this process (history store + cache)."""
        rows = self.history.rows_of(groups.users)
        n_before, last_ts = self.history.lookup(rows)
        check_time_order(users, times, groups, last_ts)
        start = np.zeros((len(groups.users), self.layout.size), np.float32)   # zeros = the empty state
        known = np.flatnonzero(rows >= 0)
        if len(known):
            start[known] = self._states_for(groups.users[known], rows[known], cache_rebuilt=False)
        flat = self._advance(groups, start, n_before, items, times)          # nothing committed yet
        self._commit(groups, rows, items, times, flat)

    @torch.inference_mode()
    def _advance(self, groups: EventGroups, start: np.ndarray, n_before: np.ndarray, items: np.ndarray,
                 times: np.ndarray, step_rows: Optional[int] = None) -> np.ndarray:
        """States of the call's users after their events: (U, size) float32 numpy, header written (event count
        and last time after the call), computed in place of `start` (U, size): their states before the call
        (zeros for new users), with n_before (U,) events (per EventGroups member).

        step_rows: run every step on exactly this many rows (users in chunks, the last one padded), so that a
        user's new state does not depend on how many others step with it — CPU matrix kernels round differently
        for different row counts (docs/serving.md, "Shared state"); None: all users of a step at once."""
        state = torch.from_numpy(start).to(self.device)
        views, o = self.layout.views(state)       # writing into these writes `start`
        step_items = torch.from_numpy(items[groups.step_order]).to(self.device)
        at = 0
        for m in groups.active.tolist():          # step r: users in members [0, m), one event each
            chunk = m if step_rows is None else step_rows
            for lo in range(0, m, chunk):         # rows [lo, hi) of the step, padded up to `chunk`
                hi = min(lo + chunk, m)
                rows = [BlockState(v.conv[lo:hi], v.ssm[lo:hi]) for v in views]
                if hi - lo == chunk:              # the states' own rows, stepped where they are
                    o[lo:hi].copy_(self.model.step_in_place(step_items[at + lo:at + hi], rows))
                    continue
                padded = [BlockState(_padded(r.conv, chunk), _padded(r.ssm, chunk)) for r in rows]
                o_new = self.model.step_in_place(_padded(step_items[at + lo:at + hi], chunk, fill=1), padded)
                for row, new in zip(rows, padded):
                    row.conv.copy_(new.conv[:hi - lo])
                    row.ssm.copy_(new.ssm[:hi - lo])
                o[lo:hi].copy_(o_new[:hi - lo])
            at += m
        flat = state.cpu().numpy() if state.device.type != "cpu" else start
        self.layout.write_header(flat, n_before + groups.counts, last_times(groups, times))
        return flat

    def _commit(self, groups: EventGroups, rows, items, times, flat) -> None:
        # The cache put goes first, and only after it succeeds is the history touched. A put that fails part way
        # (the cache stores shard by shard; a shard's growth can run out of memory) leaves rows whose header says
        # a count the history does not have: _states_for never uses them (it checks the count) and rebuilds them.
        known = rows >= 0
        self.cache.put(groups.users, flat, self.version)
        if not known.all():
            rows = rows.copy()
            rows[~known] = self.history.add(groups.users[~known])
        self.history.append(rows[groups.member], groups.rank, groups.counts[groups.member], items, times)
        np.add.at(self.popularity, items, 1)

    # -- states: cache first, else rebuild from the ring ----------------------------------------------------------
    def _states_for(self, users: np.ndarray, rows: np.ndarray, cache_rebuilt: bool = True) -> np.ndarray:
        """Current flat states (m, size) of distinct KNOWN users. A state is used only if the cache holds it under
        this model version and its header matches the history store (same layout, same event count)."""
        found, flat = self.cache.get(users, self.version)
        readable, n_events, _ = self.layout.read_header(flat)
        usable = found & readable & (n_events == self.history.n_events[rows])
        stale = np.flatnonzero(~usable)
        if len(stale):
            flat[stale] = self._rebuild(rows[stale])
            if cache_rebuilt:
                self.cache.put(users[stale], np.ascontiguousarray(flat[stale]), self.version)
        return flat

    def _rebuild(self, rows: np.ndarray) -> np.ndarray:
        return self.encode_histories(lambda part: self.history.recent(rows[part]), self.history.n_events[rows],
                                     self.history.last_ts[rows])

    REBUILD_CHUNK = 256           # users per encode call during rebuilds (bounds the padded batch's memory)

    @torch.inference_mode()
    def encode_histories(self, recent: Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]], n_events: np.ndarray,
                         last_ts: np.ndarray) -> np.ndarray:
        """Rebuild m states with the full-sequence encoder → flat (m, size), header written from n_events,
        last_ts (m,). recent(part) gives the rings of users `part` (indices into 0..m-1) in time order, LEFT-padded:
        items, times (len(part), L) int64."""
        flat = np.zeros((len(n_events), self.layout.size), np.float32)
        for start in range(0, len(n_events), self.REBUILD_CHUNK):
            part = np.arange(start, min(start + self.REBUILD_CHUNK, len(n_events)))
            items, times = recent(part)
            o, states = self.model.encode(torch.from_numpy(items).to(self.device),
                                          torch.from_numpy(times).to(self.device))
            out = torch.from_numpy(flat[start:start + len(part)])
            if self.device.type == "cpu":
                self.layout.pack(states, o, out)
            else:
                out.copy_(self.layout.pack(states, o, torch.zeros(out.shape, device=self.device)).cpu())
        self.layout.write_header(flat, n_events, last_ts)
        self._counters["rebuilds"] += len(n_events)
        return flat

    # -- recommend ------------------------------------------------------------------------------------------------
    def recommend(self, user_ids, k: int = 10, exclude_seen: bool = False, at_time=None):
        """Top-k items per user → (items (n, k) int64 model ids, scores (n, k) float32), best first.

        Known users: the model's scores from their current state (ties in the order torch.topk gives).
        Unknown users (cold start): the k items observed most often so far, scored by that count (ties: lower id
        first); before any event that is items 1..k with score 0.
        exclude_seen: items in the user's ring (its last history_len events) get −inf and drop out of the top-k.
        at_time: the request time (int64 scalar or (n,), not before the user's last event). With `ttt` set, known
        users are scored after a test-time step that uses the gap T_{n+1} = at_time − last event. A model that
        scores at the request time (readout 'request_gap') needs it and scores one step past each user's cached
        state at that time. Otherwise it is only checked.
        With a shared store, everything a call reads about its users comes from one atomic read of the store
        (docs/serving.md, "Shared state").

        Raises:
            InputError: user_ids not 1-D integers, k not an integer in [1, n_items], at_time of another length, not
                integers or before a user's last event, or no at_time for a model that needs it.
        """
        users = int64_array(user_ids, "user_ids")
        k = self._check_k(k)
        exclude_seen = _check_flag(exclude_seen, "exclude_seen")
        at_time = self._check_at_time(at_time, len(users))
        with self._computing():
            self._counters["requests"] += len(users)
            need_rings = exclude_seen or (at_time is not None and self.ttt is not None)
            tier = self if self.shared is None else self.shared
            view = tier.request_view(users, need_rings, k)
            return self._answer(users, view, k, exclude_seen, at_time)

    def request_view(self, users: np.ndarray, need_rings: bool, k: int) -> RequestView:
        """What recommend() reads about its users, here from this process's history store and cache."""
        known, pick, distinct, drows = self.request_rows(users)
        return RequestView(known=known, pick=pick, flat=self._states_for(distinct, drows),
                           last_ts=self.history.last_ts[drows],
                           rings=self.history.recent(drows) if need_rings else None,
                           popular=None if known.all() else self._cold_start(k))

    def request_rows(self, users: np.ndarray):
        """→ (known (n,) bool, pick (n_known,): index into distinct for each known position, distinct known users
        (m,), their history rows (m,))."""
        rows = self.history.rows_of(users)
        known = rows >= 0
        distinct, first, inverse = np.unique(users[known], return_index=True, return_inverse=True)
        return known, inverse.reshape(-1), distinct, rows[known][first]

    def _answer(self, users: np.ndarray, view: RequestView, k: int, exclude_seen: bool, at_time):
        items = np.empty((len(users), k), np.int64)
        scores = np.empty((len(users), k), np.float32)
        known = np.flatnonzero(view.known)
        if len(known):
            known_at = None if at_time is None else at_time[known]
            last = view.last_ts[view.pick]
            if known_at is not None:
                self._check_request_after_history(users[known], last, known_at)
            model_scores = self._scores_of(view, last, known_at)
            if known_at is not None and self.ttt is not None:
                self._adapt(model_scores, [r[view.pick] for r in view.rings], known_at)
            if exclude_seen:
                seen = torch.from_numpy(view.rings[0][view.pick]).to(model_scores.device)
                model_scores.scatter_(1, seen, float("-inf"))   # ring padding holds 0: the padding column
            top = torch.topk(model_scores, k, dim=1)           # where the scores are (the device tier: on the GPU)
            items[known], scores[known] = top.indices.cpu().numpy(), top.values.cpu().numpy()
        cold = np.flatnonzero(~view.known)
        if len(cold):
            items[cold], scores[cold] = view.popular
            self._counters["cold_starts"] += len(cold)
        return items, scores

    def _scores_of(self, view: RequestView, last: np.ndarray, known_at: Optional[np.ndarray]) -> torch.Tensor:
        """Scores (n_known, n_items + 1) of the view's known positions (a subclass may keep them on its device)."""
        return self._model_scores(view.flat, view.pick, last, known_at)

    def _check_k(self, k) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= self.n_items:
            raise InputError(f"recommend: k must be an integer in [1, {self.n_items}], got {k!r}")
        return int(k)

    @staticmethod
    def _check_at_time(at_time, n: int) -> Optional[np.ndarray]:
        """→ None or (n,) int64 request times."""
        if at_time is None:
            return None
        if isinstance(at_time, (int, np.integer)) and not isinstance(at_time, bool):
            return np.full(n, int(at_time), np.int64)
        arr = int64_array(at_time, "at_time timestamps")
        if len(arr) != n:
            raise InputError(f"recommend: at_time has {len(arr)} entries for {n} users")
        return arr

    def _model_scores(self, flat: np.ndarray, pick: np.ndarray, last_ts: np.ndarray,
                      at_time: Optional[np.ndarray]) -> torch.Tensor:
        """(m, n_items + 1) float32 CPU scores of the states flat[pick] (m,) whose last events were at last_ts (m,),
        as the model's readout reads them from each state; column 0 is −inf."""
        if len(pick) == len(flat) and (pick == np.arange(len(flat))).all():   # each user once: no state to copy
            chosen = torch.from_numpy(flat)
        else:
            chosen = torch.from_numpy(flat)[torch.from_numpy(pick)]
        states, o = self.layout.views(chosen.to(self.device))
        return self._score_states(o, states, last_ts, at_time).cpu()

    @torch.no_grad()
    def _score_states(self, o: torch.Tensor, states, last_ts: np.ndarray, at_time: Optional[np.ndarray]
                      ) -> torch.Tensor:
        """(m, n_items + 1) float32 scores, on the model's device, of m states (o (m, d) and the block states) whose
        last events were at last_ts (m,) int64, read at the request times at_time (m,) int64 (or None)."""
        if at_time is None and self.model.needs_request_time:
            raise InputError("recommend: this model scores at the request time (readout 'request_gap'): pass at_time")
        last = request = None
        if at_time is not None:
            last = torch.from_numpy(last_ts).to(self.device)
            request = torch.from_numpy(at_time).to(self.device)
        return self.model.scores_from_state(o, states, last, request).float()

    @staticmethod
    def _check_request_after_history(users: np.ndarray, last: np.ndarray, at_time: np.ndarray) -> None:
        early = np.flatnonzero(at_time < last)
        if len(early):
            u = early[0]
            raise InputError(f"recommend: at_time {at_time[u]} is before user {users[u]}'s last event "
                             f"({last[u]}); the request time must not precede the history it scores")

    def _adapt(self, scores: torch.Tensor, rings, at_time: np.ndarray) -> None:
        """Overwrite the scores of users the test-time step applies to (all, or those the gate lets in) with their
        adapted scores: one episode per user on its ring (items, times (m, L), time order; adapt.adapted_scores,
        evaluation's route); the cached states stay as they are."""
        from t2arec_fast.adapt import adapted_scores
        items, times = (torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in rings)
        target = torch.from_numpy(at_time).to(self.device)
        result = adapted_scores(self.model, items, times, target, self.ttt, per_user=True, plain_scores=scores)
        self._counters["adapted"] += int(result.adapted.sum())

    def _cold_start(self, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The k most observed items (ties: lower id first) scored by their count: → (k,) int64, (k,) float32."""
        counts = self.popularity[1:]
        top = np.lexsort((np.arange(len(counts)), -counts))[:k]
        return top + 1, counts[top].astype(np.float32)

    # -- housekeeping ---------------------------------------------------------------------------------------------
    def __contains__(self, user_id) -> bool:
        """True when the user has observed events (its state may still need a rebuild)."""
        if self.shared is not None:
            return self.shared.contains(int(user_id))
        return int(user_id) in self.history

    def __len__(self) -> int:
        """Known users (with a shared store: a SCAN of Redis, O(keys) — not for the hot path)."""
        return len(self.history) if self.shared is None else self.shared.store.n_users()

    def forget(self, user_ids) -> int:
        """Remove users (n,) int64 entirely (state and history); → how many were known. Popularity counts are kept.

        Raises:
            InputError: user_ids not 1-D integers.
        """
        users = int64_array(user_ids, "user_ids")
        with self._lock:
            if self.shared is not None:
                return self.shared.forget(users)
            self.cache.delete(users)
            return self.history.forget(users)

    def stats(self) -> dict:
        """Cache counters (hits, misses, evictions, entries, bytes, ...) plus users, events, rebuilds, cold starts,
        model version, state size and history-store bytes."""
        with self._lock:
            if self.shared is not None:
                return {**self.shared.stats(), **self._counters, "model_version": self.version,
                        "state_floats": self.layout.size}
            return {**self.cache.stats(), **self._counters, "users": len(self.history), "model_version": self.version,
                    "state_floats": self.layout.size, "history_bytes": self.history.nbytes}

    # -- persistence ----------------------------------------------------------------------------------------------
    def save(self, directory) -> None:
        """Model checkpoint + cache snapshot + history store + settings into `directory`, replaced as a whole:
        everything is written to a sibling temporary folder first, then swapped in by renames.

        Raises: InputError with a shared store (the states live in Redis, made durable by its AOF: save the model
        with model.save and serve it again with the same store)."""
        if self.shared is not None:
            raise InputError(f"save: this recommender's states live in {self.shared.store!r} (durable through "
                             f"Redis' append-only file); save the model with model.save instead")
        with self._lock:
            write_folder(directory, self._write)

    def _write(self, folder: Path) -> None:
        self.model.save(folder / "model", id_maps=self.model.id_maps or None)
        self.cache.save(folder / "states.cache")
        np.savez(folder / "history.npz", popularity=self.popularity, **self.history.to_arrays())
        self.user_keys.save(folder / "user_keys.npz")
        meta = {"format": SERVING_FORMAT, "layout": self.layout.describe(), "model_version": self.version,
                "capacity_bytes": self.capacity_bytes, "dtype": self.dtype, "shards": self.shards,
                "counters": self._counters, "runtime": self.runtime, "onnx_threads": self.onnx_threads,
                "ttt": None if self.ttt is None else dataclasses.asdict(self.ttt)}
        json_io.write_json(folder / "serving.json", meta)

    @classmethod
    def load(cls, directory, device: str = "cpu", flush_denormal: bool = True) -> "OnlineRecommender":
        """Resume a recommender saved with `save`: the same model, states, histories and answers. Built through the
        constructor, so a subclass's set-up runs.

        Raises:
            FileNotFoundError: `directory` has no serving.json (or a part of the folder is missing).
            InputError: another serving format, or a saved state layout that does not match the saved model.
            SnapshotError: a truncated or corrupted states.cache.
        """
        from t2arec_fast.cache import StateCache
        from t2arec_fast.model import load_model
        directory = Path(directory)
        meta_path = directory / "serving.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"not a saved OnlineRecommender: {meta_path} is missing")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != SERVING_FORMAT:
            raise InputError(f"{meta_path}: serving format {meta.get('format')!r}, this version reads {SERVING_FORMAT}")
        model = load_model(directory / "model", map_location=device)
        with np.load(directory / "history.npz", allow_pickle=False) as arrays:
            arrays = dict(arrays)
        rec = cls(model, capacity_bytes=meta["capacity_bytes"], history_len=int(arrays["history_len"]), device=device,
                  dtype=meta["dtype"], shards=meta["shards"], flush_denormal=flush_denormal,
                  runtime=meta.get("runtime", meta.get("backend", "torch")), ttt=meta.get("ttt"),
                  onnx_threads=meta.get("onnx_threads"))             # onnx: graphs re-exported
        if rec.layout.describe() != meta["layout"]:
            raise InputError(f"{meta_path}: the saved state layout does not match the saved model's")
        rec._resume(version=int(meta["model_version"]), counters=meta["counters"],
                    popularity=arrays["popularity"].astype(np.int64), history=HistoryStore.from_arrays(arrays),
                    cache=StateCache.load(directory / "states.cache", state_size=rec.layout.size, dtype=rec.dtype))
        rec.user_keys = UserKeys.load(directory / "user_keys.npz")
        return rec

    def _resume(self, version: int, counters: dict, popularity: np.ndarray, history: HistoryStore, cache) -> None:
        """Take over the saved state of a freshly constructed recommender (see `load`)."""
        self.version = version
        self._counters.update(counters)
        self.popularity, self.history, self.cache = popularity, history, cache


RUNTIMES = ("torch", "onnx")


def _check_ttt(ttt, runtime: str):
    """None, a TTTConfig or a dict of its fields → a TTTConfig that can change scores, or None."""
    from t2arec_fast.adapt import ttt_is_active
    from t2arec_fast.config import TTTConfig
    if ttt is None:
        return None
    if isinstance(ttt, dict):
        known = [f.name for f in dataclasses.fields(TTTConfig)]
        unknown = sorted(set(ttt) - set(known))
        if unknown:
            raise InputError(f"ttt: unknown settings {unknown}; known: {known}")
        ttt = TTTConfig(**ttt)
    if not isinstance(ttt, TTTConfig):
        raise InputError(f"ttt must be a TTTConfig, a dict of its fields or None, got {type(ttt).__name__}")
    if not (ttt.ttt and ttt_is_active(ttt)):
        return None
    if runtime != "torch":
        raise InputError("ttt: the test-time step differentiates the model, so it needs runtime='torch', "
                         f"not {runtime!r}")
    return ttt


def _check_flag(value, name: str) -> bool:
    """A bool (Python or numpy), else InputError: a truthy list or string must not pass for True."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise InputError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    return runtime


def _onnx_model(model, onnx_dir, threads: Optional[int] = None):
    """The model with encode/step answered by ONNX Runtime on `threads` intra-op threads. Without `onnx_dir` the
    graphs are exported (and checked against PyTorch) into a temporary folder, removed once ONNX Runtime has read
    them."""
    from t2arec_fast.export import export_onnx
    from t2arec_fast.export.runtime import OnnxStepModel
    if isinstance(model, OnnxStepModel):
        return model
    if onnx_dir is not None:
        return OnnxStepModel(model, onnx_dir, threads=threads)
    with tempfile.TemporaryDirectory(prefix="t2arec_onnx_") as tmp:    # ONNX Runtime reads the graphs at start-up
        export_onnx(model, tmp, kinds=("encode", "step"))
        return OnnxStepModel(model, tmp, threads=threads)


def _padded(rows: torch.Tensor, n: int, fill: int = 0) -> torch.Tensor:
    """rows (m, ...) with n − m rows of `fill` appended (rows itself when m == n)."""
    if len(rows) == n:
        return rows
    return torch.cat([rows, rows.new_full((n - len(rows),) + tuple(rows.shape[1:]), fill)])
