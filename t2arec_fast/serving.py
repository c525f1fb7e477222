"""Online serving: one more event per user costs one O(1) recurrent step, not a re-encode of the history.

    rec = OnlineRecommender(model, capacity_bytes=512 << 20, history_len=200)
    rec.observe(user_ids, item_ids, timestamps)          # batched; int64 arrays (numpy or torch) of equal length
    items, scores = rec.recommend(user_ids, k=10)        # (n, k) int64 model item ids, (n, k) float32
    rec.save("serve_dir"); rec = OnlineRecommender.load("serve_dir")

Ids: users are any int64 keys; items are the MODEL's contiguous ids 1..n_items (0 is padding). Raw ids from a data
file are mapped at the boundary with `ItemIdMap` (built from a checkpoint's id_maps["item_ids"]).

Where a user's data lives (docs/serving.md has the full picture):
  * the LRU `StateCache` (C++, byte budget) holds one flat float32 vector per user — see `StateLayout`: a small
    header, every block's conv window and SSM state, and the last output o_n. Tagged with the model version.
  * the `HistoryStore` (numpy, not evicted) holds each user's last `history_len` (item, time) events, the event
    count and the last timestamp. A state that is missing (evicted) or stale (another model version, or out of step
    with the store) is rebuilt by encoding the ring with the full-sequence encoder; it is never served stale.

The one-step update is `model.step` — the same module as the full-sequence encoder — so serving has no copy of the
model's maths. Not thread-parallel: one lock serialises the public methods.

Tip: tiny tensors gain nothing from intra-op threads and a busy core makes every parallel op wait, so a serving
process should run `torch.set_num_threads(1)` (bench/bench_serving.py does).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from t2arec_fast.errors import InputError
from t2arec_fast.progress import progress_bar
from t2arec_fast.model.block import BlockState

__all__ = ["OnlineRecommender", "StateLayout", "HistoryStore", "ItemIdMap", "LAYOUT_VERSION", "HEADER_WORDS"]

# ---------------------------------------------------------------------------------------------------------------------
# Flat state layout
# ---------------------------------------------------------------------------------------------------------------------
# Header words (float32, each an exact small integer so that it survives a float16 cache and is never NaN):
#   [0] layout version   [1] header length in words   [2] flags (0; reserved, e.g. "adapted by the test-time step")
#   [3] reserved (0)     [4:12] event count, int64     [12:20] last timestamp, int64
# An int64 is stored as its 8 little-endian BYTES, one byte (0..255) per float32 word. A plain bit-cast (two
# float32 words per int64) is NOT used: unix times in 2037-2038 or after 2106 make a word that is a NaN pattern,
# which the cache refuses, and a float16 cache would destroy the bits. Bytes round-trip exactly in either dtype.
LAYOUT_VERSION = 1
HEADER_WORDS = 20
_H_VERSION, _H_LENGTH, _H_EVENTS, _H_LAST_TS = 0, 1, slice(4, 12), slice(12, 20)

SERVING_FORMAT = 1          # serving.json "format" of a saved OnlineRecommender folder


def int64_to_words(values: np.ndarray) -> np.ndarray:
    """(m,) int64 → (m, 8) float32: the little-endian bytes of each value, one byte per word (exact)."""
    return np.ascontiguousarray(values, dtype="<i8").view(np.uint8).reshape(-1, 8).astype(np.float32)


def words_to_int64(words: np.ndarray) -> np.ndarray:
    """Inverse of `int64_to_words`: (m, 8) float words holding bytes → (m,) int64."""
    return np.ascontiguousarray(np.asarray(words).astype(np.uint8)).view("<i8").reshape(-1).astype(np.int64)


class StateLayout:
    """Where each piece of one user's state lives in the flat float32 vector that the cache stores.

        [ header (HEADER_WORDS) | block 0: conv (k−1)·(d+2n) | block 0: ssm n·d | block 1 ... | o_n (d) ]

    conv is BlockState.conv (k−1, d+2n) row-major (oldest input first); ssm is BlockState.ssm (n, d) row-major.
    The header does not depend on the model, so any layout version can be recognised before its body is read.
    """

    def __init__(self, conv_shapes: Sequence[Tuple[int, int]], ssm_shapes: Sequence[Tuple[int, int]], d: int):
        self.conv_shapes, self.ssm_shapes, self.d = list(conv_shapes), list(ssm_shapes), d
        self._blocks = []                                   # (conv slice, ssm slice) per block
        at = HEADER_WORDS
        for conv, ssm in zip(self.conv_shapes, self.ssm_shapes):
            conv_end = at + conv[0] * conv[1]
            ssm_end = conv_end + ssm[0] * ssm[1]
            self._blocks.append((slice(at, conv_end), slice(conv_end, ssm_end)))
            at = ssm_end
        self._output = slice(at, at + d)
        self.size = at + d

    @classmethod
    def for_model(cls, model) -> "StateLayout":
        states = model.empty_states(1, device="cpu", dtype=torch.float32)
        return cls([tuple(s.conv.shape[1:]) for s in states], [tuple(s.ssm.shape[1:]) for s in states],
                   model.config.d)

    def describe(self) -> dict:
        return {"layout_version": LAYOUT_VERSION, "header_words": HEADER_WORDS,
                "conv_shapes": [list(s) for s in self.conv_shapes], "ssm_shapes": [list(s) for s in self.ssm_shapes],
                "d": self.d, "size": self.size}

    def views(self, flat: torch.Tensor) -> Tuple[List[BlockState], torch.Tensor]:
        """Block states and o_n as VIEWS of flat (m, size): writing into them writes the flat buffer."""
        m = flat.shape[0]
        states = [BlockState(flat[:, cs].view(m, *conv), flat[:, ss].view(m, *ssm))
                  for (cs, ss), conv, ssm in zip(self._blocks, self.conv_shapes, self.ssm_shapes)]
        return states, flat[:, self._output]

    def pack(self, states: List[BlockState], o: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Copy block states and o_n (m, d) into the body of out (m, size); the header is left alone."""
        views, o_view = self.views(out)
        for view, st in zip(views, states):
            view.conv.copy_(st.conv)
            view.ssm.copy_(st.ssm)
        o_view.copy_(o)
        return out

    @staticmethod
    def write_header(flat: np.ndarray, n_events: np.ndarray, last_ts: np.ndarray) -> None:
        """Fill the header of flat (m, size) float32 numpy in place."""
        flat[:, :HEADER_WORDS] = 0.0
        flat[:, _H_VERSION] = LAYOUT_VERSION
        flat[:, _H_LENGTH] = HEADER_WORDS
        flat[:, _H_EVENTS] = int64_to_words(n_events)
        flat[:, _H_LAST_TS] = int64_to_words(last_ts)

    @staticmethod
    def read_header(flat: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """→ (readable bool (m,), n_events int64 (m,), last_ts int64 (m,)); unreadable rows hold garbage counts."""
        readable = (flat[:, _H_VERSION] == LAYOUT_VERSION) & (flat[:, _H_LENGTH] == HEADER_WORDS)
        return readable, words_to_int64(flat[:, _H_EVENTS]), words_to_int64(flat[:, _H_LAST_TS])


# ---------------------------------------------------------------------------------------------------------------------
# History store: rings of recent events, kept outside the LRU cache
# ---------------------------------------------------------------------------------------------------------------------
class HistoryStore:
    """Per-user ring of the last `history_len` (item, time) events plus the event count and the last timestamp.

    Rows of growable numpy arrays; a dict maps user id → row. Event number j of a user (0-based, over all time)
    sits at ring position j % history_len. Never evicted: it is what a lost or stale state is rebuilt from.
    Memory: 12·history_len + 24 bytes per user plus the dict entry (≈ 100 bytes).
    """

    def __init__(self, history_len: int):
        if int(history_len) < 1:
            raise InputError(f"history_len must be ≥ 1, got {history_len}")
        self.history_len = int(history_len)
        self._row_of: dict = {}
        self._free: List[int] = []
        self.items = np.zeros((0, self.history_len), np.int32)     # model item ids fit int32 (n_items < 2^31)
        self.times = np.zeros((0, self.history_len), np.int64)
        self.n_events = np.zeros(0, np.int64)
        self.last_ts = np.zeros(0, np.int64)
        self.user_of_row = np.zeros(0, np.int64)
        self._used = 0                                             # rows handed out so far (free ones included)

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, user_id) -> bool:
        return user_id in self._row_of

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.items, self.times, self.n_events, self.last_ts, self.user_of_row))

    def lookup(self, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(n_events, last_ts) of each row; 0 and the smallest int64 for row −1 (a user not seen yet)."""
        known = rows >= 0
        n = np.zeros(len(rows), np.int64)
        last = np.full(len(rows), np.iinfo(np.int64).min)
        n[known], last[known] = self.n_events[rows[known]], self.last_ts[rows[known]]
        return n, last

    def rows_of(self, user_ids: np.ndarray) -> np.ndarray:
        """(m,) int64 rows, −1 for users never observed. One dict lookup per id (≈ 50 ns each)."""
        get = self._row_of.get
        return np.fromiter((get(u, -1) for u in user_ids.tolist()), np.int64, len(user_ids))

    def add(self, user_ids: np.ndarray) -> np.ndarray:
        """Give new, distinct users a row each (empty history); → their rows."""
        rows = np.empty(len(user_ids), np.int64)
        reuse = min(len(self._free), len(user_ids))
        rows[:reuse] = [self._free.pop() for _ in range(reuse)]
        fresh = len(user_ids) - reuse
        self._grow(self._used + fresh)
        rows[reuse:] = np.arange(self._used, self._used + fresh)
        self._used += fresh
        self._row_of.update(zip(user_ids.tolist(), rows.tolist()))
        self.user_of_row[rows] = user_ids
        return rows

    def _grow(self, needed: int) -> None:
        if needed <= len(self.n_events):
            return
        cap = max(needed, 2 * len(self.n_events), 1024)
        for name in ("items", "times", "n_events", "last_ts", "user_of_row"):
            old = getattr(self, name)
            new = np.zeros((cap,) + old.shape[1:], old.dtype)
            new[:len(old)] = old
            setattr(self, name, new)

    def append(self, rows: np.ndarray, ranks: np.ndarray, counts: np.ndarray, items: np.ndarray,
               times: np.ndarray) -> None:
        """Record events already validated. Per event: its user's row, its rank among that user's events in this
        call (call order), and that user's number of events in the call."""
        H = self.history_len
        keep = ranks >= counts - H          # only each user's last H events land: no two writes hit one slot
        r, rank = rows[keep], ranks[keep]
        pos = (self.n_events[r] + rank) % H
        self.items[r, pos] = items[keep]
        self.times[r, pos] = times[keep]
        last = ranks == counts - 1
        self.last_ts[rows[last]] = times[last]
        self.n_events[rows[last]] += counts[last]

    def recent(self, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The ring of each row in time order, LEFT-padded with 0: → items, times (m, L) int64, L = longest kept."""
        n = self.n_events[rows]
        length = np.minimum(n, self.history_len)
        L = int(length.max()) if len(rows) else 0
        col = np.arange(L)[None, :]
        pad = (L - length)[:, None]
        event = (n - length)[:, None] + col - pad                   # global event number shown in each column
        valid = col >= pad
        pos = np.where(valid, event, 0) % self.history_len
        items = np.where(valid, self.items[rows[:, None], pos], 0).astype(np.int64)
        times = np.where(valid, self.times[rows[:, None], pos], 0)
        return items, times

    def seen(self, rows: np.ndarray) -> np.ndarray:
        """(m, history_len) int64 item ids in each ring (0 where the ring is not full yet)."""
        return self.items[rows].astype(np.int64)

    def forget(self, user_ids: np.ndarray) -> int:
        rows = self.rows_of(user_ids)
        rows = np.unique(rows[rows >= 0])
        for u in self.user_of_row[rows].tolist():
            del self._row_of[u]
        self.items[rows] = 0
        self.times[rows] = 0
        self.n_events[rows] = 0
        self.last_ts[rows] = 0
        self._free.extend(rows.tolist())
        return len(rows)

    # -- persistence ------------------------------------------------------------------------------------------------
    def to_arrays(self) -> dict:
        users = np.fromiter(self._row_of.keys(), np.int64, len(self._row_of))
        rows = np.fromiter(self._row_of.values(), np.int64, len(self._row_of))
        return {"history_len": np.int64(self.history_len), "user_ids": users, "items": self.items[rows],
                "times": self.times[rows], "n_events": self.n_events[rows], "last_ts": self.last_ts[rows]}

    @classmethod
    def from_arrays(cls, arrays: dict) -> "HistoryStore":
        store = cls(int(arrays["history_len"]))
        rows = store.add(np.asarray(arrays["user_ids"], np.int64))
        store.items[rows] = arrays["items"]
        store.times[rows] = arrays["times"]
        store.n_events[rows] = arrays["n_events"]
        store.last_ts[rows] = arrays["last_ts"]
        return store


# ---------------------------------------------------------------------------------------------------------------------
# Raw item ids ↔ model ids
# ---------------------------------------------------------------------------------------------------------------------
class ItemIdMap:
    """Raw item ids (from the data file) ↔ model ids 1..n_items, from an array whose index i holds the raw id of
    model id i (index 0 = padding placeholder) — the layout of a checkpoint's id_maps["item_ids"]."""

    def __init__(self, raw_ids: np.ndarray):
        self.raw_ids = np.asarray(raw_ids)
        body = self.raw_ids[1:]
        self._order = np.argsort(body, kind="stable")
        self._sorted = body[self._order]

    @classmethod
    def from_model(cls, model) -> Optional["ItemIdMap"]:
        maps = getattr(model, "id_maps", None) or {}
        return cls(maps["item_ids"]) if "item_ids" in maps else None

    def to_model(self, raw: np.ndarray) -> np.ndarray:
        """(m,) raw ids → int64 model ids; 0 for ids the model does not know. Text and numbers compare as text when
        either side is text (a CSV may give 12 where the map holds "12"), else as numbers of a common type."""
        raw = np.asarray(raw)
        keys = self._sorted
        if keys.dtype.kind in "USO" or raw.dtype.kind in "USO":
            keys, raw = keys.astype(str), raw.astype(str)     # unsized str: no truncation to the map's width
        else:
            common = np.result_type(keys.dtype, raw.dtype)
            keys, raw = keys.astype(common), raw.astype(common)
        if len(keys) == 0:
            return np.zeros(len(raw), np.int64)
        at = np.searchsorted(keys, raw).clip(0, len(keys) - 1)
        return np.where(keys[at] == raw, self._order[at] + 1, 0).astype(np.int64)

    def to_raw(self, ids: np.ndarray) -> np.ndarray:
        return self.raw_ids[np.asarray(ids)]


# ---------------------------------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------------------------------
def _int64_array(x: Any, name: str) -> np.ndarray:
    """A 1-D int64 numpy array from numpy / torch / list input; floats (incl. NaN) and bools are refused."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.dtype.kind not in "iu":
        raise InputError(f"{name} must be integers (int64), got dtype {arr.dtype}"
                         + ("; float timestamps cannot hold unix seconds exactly" if "time" in name else ""))
    if arr.dtype == np.uint64 and int(arr.max()) > np.iinfo(np.int64).max:
        raise InputError(f"{name} must fit in int64")
    return arr.astype(np.int64, copy=False)


@dataclass
class _EventGroups:
    """Events of one observe() call grouped by user. A 'slot' is a distinct user; slots are ordered by how many
    events they have (most first), so the users taking part in step r are exactly slots [0, active[r])."""
    users: np.ndarray        # (U,) user id of each slot
    counts: np.ndarray       # (U,) events per slot
    slot: np.ndarray         # (n,) slot of each event
    rank: np.ndarray         # (n,) rank of each event among its user's events (call order)
    active: np.ndarray       # (max count,) users stepping at step r
    step_order: np.ndarray   # (n,) event indices sorted by (rank, slot): step r takes a contiguous run


def _group_events(user_ids: np.ndarray) -> _EventGroups:
    n = len(user_ids)
    if n == 1 or len(np.unique(user_ids)) == n:               # the common case: one event per user, one step
        return _EventGroups(users=user_ids, counts=np.ones(n, np.int64), slot=np.arange(n), rank=np.zeros(n, np.int64),
                            active=np.array([n]), step_order=np.arange(n))
    order = np.argsort(user_ids, kind="stable")             # stable: a user's events keep their call order
    sorted_users = user_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    counts = np.diff(np.r_[starts, n])
    group = np.repeat(np.arange(len(starts)), counts)
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, counts)
    by_count = np.argsort(-counts, kind="stable")
    slot_of_group = np.empty(len(starts), np.int64)
    slot_of_group[by_count] = np.arange(len(starts))
    slot = np.empty(n, np.int64)
    slot[order] = slot_of_group[group]
    counts_by_slot = counts[by_count]
    active = (counts_by_slot[None, :] > np.arange(counts_by_slot[0])[:, None]).sum(1)
    return _EventGroups(users=sorted_users[starts][by_count], counts=counts_by_slot, slot=slot, rank=rank,
                        active=active, step_order=np.lexsort((slot, rank)))


def _consecutive_events(groups: _EventGroups):
    """(earlier, later) event indices of every two consecutive events of one user within an observe() call."""
    order = np.lexsort((groups.rank, groups.slot))            # each user's events together, in call order
    same_user = groups.slot[order][1:] == groups.slot[order][:-1]
    return order[:-1][same_user], order[1:][same_user]


# ---------------------------------------------------------------------------------------------------------------------
# The recommender
# ---------------------------------------------------------------------------------------------------------------------
class OnlineRecommender:
    """Keeps every user's recurrent state and answers top-k requests after O(1) work per event.

    model:          a T2ARec (anything with encode/step/empty_states/score_from); put in eval mode here.
    capacity_bytes: byte budget of the state cache (LRU beyond it; evicted users are rebuilt from their ring).
    history_len:    events kept per user for rebuilds and exclude_seen. A rebuild encodes these last events only,
                    so for a longer history it equals re-encoding the last history_len events (the usual max_len).
    device:         where the model runs; states are stored on the host.
    dtype:          storage precision of the cache, "float32" (exact) or "float16" (half the memory, rounded).
    shards:         lock stripes of the cache (None: its default).
    backend:        "torch" (the model itself) or "onnx" (encode and step in ONNX Runtime through the exported graphs;
                    `onnx_dir` names an `export_onnx` folder of this model, else the graphs are exported first).
    ttt:            test-time alignment for requests that give `at_time`: a TTTConfig (or a dict of its fields);
                    None = off. Each such user gets its own episode (the per-user form of the paper's step; a
                    request batch is not a meaningful episode), on its ring with T_{n+1} = at_time − last event;
                    with `ttt_gate` only users whose request follows a long pause adapt. O(history_len) per adapted
                    user (a gradient through the sequence); the cached state is never changed. Backend "torch" only.
    flush_denormal: run the model with denormal floats flushed to zero (CPU). The SSM decay exp(Δ·A) underflows
                    into denormals for large Δ·|A|, and x86 multiplies by denormals ~100× slower: measured 1.5 ms
                    → 0.9 ms per batch-64 step. Answers change by < 1e-38 absolute. Switched on around each
                    observe/recommend and back off after (torch's default), for the calling thread only.
    """

    def __init__(self, model, capacity_bytes: int = 256 << 20, history_len: int = 200, device: str = "cpu",
                 dtype: str = "float32", shards: Optional[int] = None, flush_denormal: bool = True,
                 backend: str = "torch", onnx_dir=None, ttt=None):
        self._lock = threading.RLock()
        self.backend, self.onnx_dir = _check_backend(backend), onnx_dir
        self.ttt = _check_ttt(ttt, self.backend)
        self.flush_denormal = flush_denormal
        self.device = torch.device(device)
        self.capacity_bytes, self.dtype, self.shards = int(capacity_bytes), dtype, shards
        self.history = HistoryStore(history_len)
        self.version = 1
        self._counters = {"events": 0, "rebuilds": 0, "cold_starts": 0, "requests": 0, "adapted": 0}
        self._install_model(model)
        self.popularity = np.zeros(self.n_items + 1, np.int64)
        self.cache = self._new_cache()

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
        if self.backend == "onnx":
            model = _onnx_model(model, self.onnx_dir)
        self.model = model.to(self.device).eval()       # eval: dropout off, so steps are deterministic
        self.n_items = int(model.n_items)
        self.layout = StateLayout.for_model(model)

    def _new_cache(self):
        from t2arec_fast.cache import StateCache
        return StateCache(self.layout.size, self.capacity_bytes, dtype=self.dtype, shards=self.shards)

    def set_ttt(self, ttt) -> None:
        """Switch test-time alignment on (a TTTConfig or a dict of its fields) or off (None) for later requests."""
        with self._lock:
            self.ttt = _check_ttt(ttt, self.backend)

    def swap_model(self, model) -> None:
        """Serve a newly trained model from now on. The version goes up, so every cached state becomes stale and is
        rebuilt from its ring on the user's next request or event — never served. Histories and popularity stay."""
        with self._lock:
            if int(model.n_items) < self.n_items:
                raise InputError(f"swap_model: the new model knows {model.n_items} items, fewer than the "
                                 f"{self.n_items} already in use (item ids must keep their meaning)")
            old_layout = self.layout
            self._install_model(model)
            if self.layout.size != old_layout.size:
                self.cache = self._new_cache()            # another shape: old states are useless
            grown = np.zeros(self.n_items + 1, np.int64)
            grown[:len(self.popularity)] = self.popularity
            self.popularity = grown
            self.version += 1

    # -- observe --------------------------------------------------------------------------------------------------
    def observe(self, user_ids, item_ids, timestamps) -> None:
        """Advance each user's state by its new events (int64 arrays of equal length; items are model ids).

        Events of one user within the call are applied in call order; the k-th event of every user goes into the
        k-th batched step. Everything is checked first: on any error nothing at all is stored.
        """
        users = _int64_array(user_ids, "user_ids")
        items = _int64_array(item_ids, "item_ids")
        times = _int64_array(timestamps, "timestamps")
        if not (len(users) == len(items) == len(times)):
            raise InputError(f"observe: user_ids, item_ids and timestamps differ in length "
                             f"({len(users)}, {len(items)}, {len(times)})")
        if len(users) == 0:
            return
        self._check_items(items)
        with self._computing():
            groups = _group_events(users)
            rows = self.history.rows_of(groups.users)
            self._check_time_order(users, times, groups, rows)
            flat = self._advance(groups, rows, items, times)          # (U, size), nothing committed yet
            self._commit(groups, rows, items, times, flat)

    def _check_items(self, items: np.ndarray) -> None:
        bad = np.flatnonzero((items < 1) | (items > self.n_items))
        if len(bad):
            raise InputError(f"observe: item id {items[bad[0]]} at position {bad[0]} is not a model item id "
                             f"(expected 1..{self.n_items}; map raw ids with ItemIdMap)")

    def _check_time_order(self, users, times, groups: _EventGroups, rows) -> None:
        # Within the call (only when some user has several events): sort by (slot, rank), compare neighbours.
        if len(groups.active) > 1:
            self._check_order_within_call(users, times, groups)
        # Against the stored history: each user's first event in the call (new users have no last time).
        first = np.flatnonzero(groups.rank == 0)
        _, last_ts = self.history.lookup(rows[groups.slot[first]])
        earlier = np.flatnonzero(times[first] < last_ts)
        if len(earlier):
            e = first[earlier[0]]
            raise InputError(f"observe: timestamp {times[e]} of event {e} (user {users[e]}) is earlier than that "
                             f"user's last event at {last_ts[earlier[0]]}; nothing was stored")

    @staticmethod
    def _check_order_within_call(users, times, groups: _EventGroups) -> None:
        earlier, later = _consecutive_events(groups)
        back = np.flatnonzero(times[later] < times[earlier])
        if len(back):
            i, j = earlier[back[0]], later[back[0]]
            raise InputError(f"observe: timestamps go backwards for user {users[j]}: event {j} at {times[j]} comes "
                             f"after event {i} at {times[i]}; nothing was stored")

    @torch.inference_mode()
    def _advance(self, groups: _EventGroups, rows: np.ndarray, items: np.ndarray, times: np.ndarray) -> np.ndarray:
        """States of the call's users after their events: (U, size) float32 numpy, header not yet written."""
        flat = np.zeros((len(groups.users), self.layout.size), np.float32)   # zeros = the empty state
        known = np.flatnonzero(rows >= 0)
        if len(known):
            flat[known] = self._states_for(groups.users[known], rows[known], cache_rebuilt=False)
        state = torch.from_numpy(flat).to(self.device)
        views, o = self.layout.views(state)       # writing into these writes `flat`
        step_items = torch.from_numpy(items[groups.step_order]).to(self.device)
        step_gaps = None
        if getattr(self.model, "time_aware", False):   # its Δ sees the gap since the user's previous event
            step_gaps = torch.from_numpy(self._gaps_since_previous(groups, rows, times)[groups.step_order])
            step_gaps = step_gaps.to(self.device)
        at = 0
        for m in groups.active.tolist():          # step r: users in slots [0, m), one event each
            gaps = {} if step_gaps is None else {"gaps": step_gaps[at:at + m]}
            o_new, new_states = self.model.step(step_items[at:at + m],
                                                [BlockState(v.conv[:m], v.ssm[:m]) for v in views], **gaps)
            for view, new in zip(views, new_states):
                view.conv[:m].copy_(new.conv)
                view.ssm[:m].copy_(new.ssm)
            o[:m].copy_(o_new)
            at += m
        return state.cpu().numpy() if state.device.type != "cpu" else flat

    def _gaps_since_previous(self, groups: _EventGroups, rows: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Seconds from each event to its user's previous one (in the call, else in the history); 0 for a first."""
        prev = times.copy()                                       # no previous event: gap 0
        earlier, later = _consecutive_events(groups)
        prev[later] = times[earlier]
        first = np.flatnonzero(groups.rank == 0)
        n_events, last_ts = self.history.lookup(rows[groups.slot[first]])
        seen = n_events > 0
        prev[first[seen]] = last_ts[seen]
        return times - prev

    def _commit(self, groups: _EventGroups, rows, items, times, flat) -> None:
        # The cache put goes first: it stores all or nothing, and only after it succeeds is the history touched.
        known = rows >= 0
        n_before, _ = self.history.lookup(rows)
        last = groups.rank == groups.counts[groups.slot] - 1
        last_ts = np.empty(len(groups.users), np.int64)
        last_ts[groups.slot[last]] = times[last]
        self.layout.write_header(flat, n_before + groups.counts, last_ts)
        self.cache.put(groups.users, flat, self.version)
        if not known.all():
            rows = rows.copy()
            rows[~known] = self.history.add(groups.users[~known])
        self.history.append(rows[groups.slot], groups.rank, groups.counts[groups.slot], items, times)
        np.add.at(self.popularity, items, 1)
        self._counters["events"] += len(items)

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
            self._counters["rebuilds"] += len(stale)
            if cache_rebuilt:
                self.cache.put(users[stale], np.ascontiguousarray(flat[stale]), self.version)
        return flat

    REBUILD_CHUNK = 256           # users per encode call during rebuilds (bounds the padded batch's memory)

    @torch.inference_mode()
    def _rebuild(self, rows: np.ndarray) -> np.ndarray:
        """Encode each user's ring with the full-sequence encoder → flat states (m, size), header written."""
        flat = np.zeros((len(rows), self.layout.size), np.float32)
        for start in range(0, len(rows), self.REBUILD_CHUNK):
            part = rows[start:start + self.REBUILD_CHUNK]
            items, times = self.history.recent(part)
            o, states = self.model.encode(torch.from_numpy(items).to(self.device),
                                          torch.from_numpy(times).to(self.device))
            out = torch.from_numpy(flat[start:start + len(part)])
            if self.device.type == "cpu":
                self.layout.pack(states, o, out)
            else:
                out.copy_(self.layout.pack(states, o, torch.zeros(out.shape, device=self.device)).cpu())
        self.layout.write_header(flat, self.history.n_events[rows], self.history.last_ts[rows])
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
        scores at the request time (readout 'request_gap', or 'extrapolated' with a time-aware Δ) needs it and
        scores one step past each user's cached state at that time. Otherwise it is only checked.
        """
        users = _int64_array(user_ids, "user_ids")
        k = self._check_k(k)
        at_time = self._check_at_time(at_time, len(users))
        with self._computing():
            self._counters["requests"] += len(users)
            items = np.empty((len(users), k), np.int64)
            scores = np.empty((len(users), k), np.float32)
            rows = self.history.rows_of(users)
            known = np.flatnonzero(rows >= 0)
            if len(known):
                known_at = None if at_time is None else at_time[known]
                if known_at is not None:
                    self._check_request_after_history(users[known], rows[known], known_at)
                model_scores = self._model_scores(users[known], rows[known], known_at)
                if at_time is not None and self.ttt is not None:
                    self._adapt(model_scores, users[known], rows[known], at_time[known])
                if exclude_seen:
                    seen = torch.from_numpy(self.history.seen(rows[known]))
                    model_scores.scatter_(1, seen, float("-inf"))   # empty ring slots hold 0: the padding column
                top = torch.topk(model_scores, k, dim=1)
                items[known], scores[known] = top.indices.numpy(), top.values.numpy()
            cold = np.flatnonzero(rows < 0)
            if len(cold):
                items[cold], scores[cold] = self._cold_start(k)
                self._counters["cold_starts"] += len(cold)
            return items, scores

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
        arr = _int64_array(at_time, "at_time timestamps")
        if len(arr) != n:
            raise InputError(f"recommend: at_time has {len(arr)} entries for {n} users")
        return arr

    @torch.no_grad()
    def _model_scores(self, users: np.ndarray, rows: np.ndarray, at_time: Optional[np.ndarray]) -> torch.Tensor:
        """(m, n_items + 1) float32 CPU scores of known users (duplicates allowed); column 0 is −inf."""
        distinct, first, inverse = np.unique(users, return_index=True, return_inverse=True)
        flat = self._states_for(distinct, rows[first])
        states, o = self.layout.views(torch.from_numpy(flat).to(self.device))
        pick = torch.from_numpy(inverse.reshape(-1)).to(self.device)
        if not getattr(self.model, "extrapolated_readout", False):
            return self.model.score_from(o[pick]).float().cpu()
        if at_time is None and self.model.needs_request_time:
            raise InputError(f"recommend: this model scores at the request time "
                             f"(readout={self.model.config.readout!r}): pass at_time")
        states = [BlockState(st.conv[pick], st.ssm[pick]) for st in states]
        last = torch.from_numpy(self.history.last_ts[rows]).to(self.device)
        request = None if at_time is None else torch.from_numpy(at_time).to(self.device)
        return self.model.scores_from_state(o[pick], states, last, request).float().cpu()

    def _check_request_after_history(self, users: np.ndarray, rows: np.ndarray, at_time: np.ndarray) -> None:
        last = self.history.last_ts[rows]
        early = np.flatnonzero(at_time < last)
        if len(early):
            u = early[0]
            raise InputError(f"recommend: at_time {at_time[u]} is before user {users[u]}'s last event "
                             f"({last[u]}); the request time must not precede the history it scores")

    def _adapt(self, scores: torch.Tensor, users: np.ndarray, rows: np.ndarray, at_time: np.ndarray) -> None:
        """Overwrite the scores of users the test-time step applies to (all, or those the gate lets in) with their
        adapted scores, computed from their ring; the cached states stay as they are."""
        from t2arec_fast.adapt import per_user_adapted_scores, shift_gate
        items, times = (torch.from_numpy(a).to(self.device) for a in self.history.recent(rows))
        target = torch.from_numpy(at_time).to(self.device)
        chosen = torch.ones(len(rows), dtype=torch.bool, device=self.device)
        if self.ttt.ttt_gate > 0:
            chosen = shift_gate(items, times, target, self.ttt.ttt_gate)
        if not bool(chosen.any()):
            return
        adapted = per_user_adapted_scores(self.model, items[chosen], times[chosen], target[chosen], self.ttt)
        scores[chosen.cpu()] = adapted.float().cpu()
        self._counters["adapted"] += int(chosen.sum())

    def _cold_start(self, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The k most observed items (ties: lower id first) scored by their count: → (k,) int64, (k,) float32."""
        counts = self.popularity[1:]
        top = np.lexsort((np.arange(len(counts)), -counts))[:k]
        return top + 1, counts[top].astype(np.float32)

    # -- housekeeping ---------------------------------------------------------------------------------------------
    def __contains__(self, user_id) -> bool:
        """True when the user has observed events (its state may still need a rebuild)."""
        return int(user_id) in self.history

    def __len__(self) -> int:
        return len(self.history)

    def forget(self, user_ids) -> int:
        """Remove users entirely (state and history); → how many were known. Popularity counts are kept."""
        users = _int64_array(user_ids, "user_ids")
        with self._lock:
            self.cache.delete(users)
            return self.history.forget(users)

    def stats(self) -> dict:
        """Cache counters (hits, misses, evictions, entries, bytes, ...) plus users, events, rebuilds, cold starts,
        model version, state size and history-store bytes."""
        with self._lock:
            return {**self.cache.stats(), **self._counters, "users": len(self.history), "model_version": self.version,
                    "state_floats": self.layout.size, "history_bytes": self.history.nbytes}

    # -- persistence ----------------------------------------------------------------------------------------------
    def save(self, directory) -> None:
        """Model checkpoint + cache snapshot + history store + settings into `directory`, replaced as a whole:
        everything is written to a sibling temporary folder first, then swapped in by renames."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
            try:
                self._write(tmp)
                _replace_dir(tmp, directory)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise

    def _write(self, folder: Path) -> None:
        self.model.save(folder / "model", id_maps=getattr(self.model, "id_maps", None) or None)
        self.cache.save(folder / "states.cache")
        np.savez(folder / "history.npz", popularity=self.popularity, **self.history.to_arrays())
        meta = {"format": SERVING_FORMAT, "layout": self.layout.describe(), "model_version": self.version,
                "capacity_bytes": self.capacity_bytes, "dtype": self.dtype, "shards": self.shards,
                "counters": self._counters, "backend": self.backend,
                "ttt": None if self.ttt is None else dataclasses.asdict(self.ttt)}
        (folder / "serving.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory, device: str = "cpu", flush_denormal: bool = True) -> "OnlineRecommender":
        """Resume a recommender saved with `save`: the same model, states, histories and answers."""
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
        obj = cls.__new__(cls)
        obj._lock = threading.RLock()
        obj.flush_denormal = flush_denormal
        obj.device = torch.device(device)
        obj.capacity_bytes, obj.dtype, obj.shards = meta["capacity_bytes"], meta["dtype"], meta["shards"]
        obj.backend, obj.onnx_dir = meta.get("backend", "torch"), None   # onnx: graphs re-exported from the model
        obj.ttt = _check_ttt(meta.get("ttt"), obj.backend)
        obj._install_model(model)
        if obj.layout.describe() != meta["layout"]:
            raise InputError(f"{meta_path}: the saved state layout does not match the saved model's")
        obj.version = int(meta["model_version"])
        obj._counters = {"adapted": 0, **meta["counters"]}
        with np.load(directory / "history.npz", allow_pickle=False) as arrays:
            obj.popularity = arrays["popularity"].astype(np.int64)
            obj.history = HistoryStore.from_arrays(dict(arrays))
        obj.cache = StateCache.load(directory / "states.cache", state_size=obj.layout.size, dtype=obj.dtype)
        return obj


BACKENDS = ("torch", "onnx")


def _check_ttt(ttt, backend: str):
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
    if backend != "torch":
        raise InputError("ttt: the test-time step differentiates the model, so it needs backend='torch', "
                         f"not {backend!r}")
    return ttt


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def _onnx_model(model, onnx_dir):
    """The model with encode/step answered by ONNX Runtime. Without `onnx_dir` the graphs are exported (and
    checked against PyTorch) into a temporary folder first."""
    from t2arec_fast.export import export_onnx
    from t2arec_fast.export.runtime import OnnxStepModel
    if isinstance(model, OnnxStepModel):
        return model
    if onnx_dir is None:
        onnx_dir = tempfile.mkdtemp(prefix="t2arec_onnx_")
        export_onnx(model, onnx_dir, kinds=("encode", "step"))
    return OnnxStepModel(model, onnx_dir)


def _replace_dir(new: Path, target: Path) -> None:
    """Put folder `new` in place of `target` (which may not exist). The old folder is renamed aside before the new
    one is renamed in, and only deleted afterwards: a crash leaves either folder complete under some name."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------------
# Offline replay of an event log (what `t2arec serve-replay` runs)
# ---------------------------------------------------------------------------------------------------------------------
def replay(recommender: OnlineRecommender, user_ids, item_ids, timestamps, k: int = 10, exclude_seen: bool = False,
           progress: bool = False) -> dict:
    """Replay events in timestamp order (ties in the given order), one at a time, as a live system would see them:
    recommend for the event's user first, score whether the true item is in the top-k, then observe the event.

    Items are model ids. Returns hit rate@k and NDCG@10 over all events, over "warm" events (the user had history)
    and the number of cold ones, plus per-event latency percentiles (ms) of recommend and observe.
    """
    users = _int64_array(user_ids, "user_ids")
    items = _int64_array(item_ids, "item_ids")
    times = _int64_array(timestamps, "timestamps")
    if not (len(users) == len(items) == len(times)) or len(users) == 0:
        raise InputError(f"replay: need equal, non-zero numbers of users, items and timestamps "
                         f"({len(users)}, {len(items)}, {len(times)})")
    order = np.argsort(times, kind="stable")
    depth = max(k, 10)
    ranks = np.full(len(order), depth, np.int64)            # depth = "not in the list"
    warm = np.zeros(len(order), bool)
    t_rec = np.empty(len(order))
    t_obs = np.empty(len(order))
    clock = time.perf_counter
    for n, e in enumerate(_progress(order, progress)):
        u, i, t = users[e:e + 1], items[e:e + 1], times[e:e + 1]
        warm[n] = u[0] in recommender
        start = clock()
        top, _ = recommender.recommend(u, k=depth, exclude_seen=exclude_seen, at_time=int(t[0]))
        t_rec[n] = clock() - start
        start = clock()
        recommender.observe(u, i, t)
        t_obs[n] = clock() - start
        where = np.flatnonzero(top[0] == i[0])
        if len(where):
            ranks[n] = where[0]
    return {"events": len(order), "k": k, "exclude_seen": exclude_seen,
            **_replay_metrics(ranks, k, ""), **_replay_metrics(ranks[warm], k, "warm_"),
            "warm_events": int(warm.sum()), "cold_events": int((~warm).sum()),
            "latency_ms": {"recommend": _percentiles(t_rec), "observe": _percentiles(t_obs)},
            "events_per_s": len(order) / float(t_rec.sum() + t_obs.sum()), "stats": recommender.stats()}


def _replay_metrics(ranks: np.ndarray, k: int, prefix: str) -> dict:
    if len(ranks) == 0:
        return {f"{prefix}hit@{k}": float("nan"), f"{prefix}ndcg@10": float("nan")}
    ndcg = np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0)
    return {f"{prefix}hit@{k}": float((ranks < k).mean()), f"{prefix}ndcg@10": float(ndcg.mean())}


def _percentiles(seconds: np.ndarray) -> dict:
    ms = seconds * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean())}


def _progress(iterable, enabled: bool):
    if not enabled:
        return iterable
    return progress_bar(iterable, "replay", unit="event")
