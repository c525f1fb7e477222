"""Device tier: hot users' states resident in device memory, advanced in place (docs/serving.md, "Device tier").

    rec = DeviceRecommender(model, device="cuda", slots=100_000, capacity_bytes=2 << 30)
    rec.observe(user_ids, item_ids, timestamps)        # same API and answers as OnlineRecommender
    items, scores = rec.recommend(user_ids, k=10)

Per block a conv pool (slots, k−1, conv_dim) and an SSM pool (slots, d_state, d), plus an o_n pool (slots, d), live on
the model's device. A slot table maps user → slot (LRU order). Each observe() step advances the call's users in place
with `T2ARec.step_pooled` — the pooled one-step kernel `ops.selective_state_step(..., slots=...)` (Triton on CUDA;
slot −1 skips a row) — and recommend() scores from the pools and takes the top-k on the device: per call, one batch
of item ids goes to the device and one (n, k) answer comes back.

Tiers: a user missing from the pools is admitted from the host tier (the C++ StateCache of OnlineRecommender, or a
rebuild from its ring — the ring stays the single source of truth), with one host→device copy of the flat state
vectors (`StateLayout`: the flat vector is the concatenation of the pool rows). When the pools are full, the least
recently used users not in the current call are evicted: their rows are packed into flat vectors with a fresh header
(event count and last timestamp from the history store) and put into the host cache, so a later re-admission resumes
exactly where they left off. The host cache is not written for resident users (the pools are authoritative); `flush`
demotes every resident user (save() does it first). swap_model empties the pools (states of another model).

Not supported here (refused with InputError): the test-time step (ttt), the shared Redis store and runtime "onnx".
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch

from t2arec_fast.errors import InputError
from t2arec_fast.model.block import BlockState

from .events import EventGroups, check_time_order, int64_array
from .recommender import OnlineRecommender, RequestView

__all__ = ["DeviceRecommender", "DeviceStatePool"]


class DeviceStatePool:
    """Slot pools on one device and the user → slot table (LRU). Pure state keeping: no model maths."""

    def __init__(self, model, n_slots: int, device):
        if n_slots < 1:
            raise InputError(f"device tier: slots must be ≥ 1, got {n_slots}")
        self.n_slots = int(n_slots)
        self.pools: List[BlockState] = model.empty_states(self.n_slots, device=device, dtype=torch.float32)
        self.o = torch.zeros(self.n_slots, model.width, device=device, dtype=torch.float32)
        self.slot_of: "OrderedDict[int, int]" = OrderedDict()      # user → slot, least recently used first
        self.free = list(range(self.n_slots - 1, -1, -1))

    def __len__(self) -> int:
        return len(self.slot_of)

    def lookup(self, users: np.ndarray) -> np.ndarray:
        """(n,) int64 slots, −1 for users not resident; marks the resident ones as recently used."""
        slots = np.full(len(users), -1, np.int64)
        for i, u in enumerate(users.tolist()):
            s = self.slot_of.get(u)
            if s is not None:
                slots[i] = s
                self.slot_of.move_to_end(u)
        return slots

    def allocate(self, users: np.ndarray, protected: set) -> tuple:
        """Slots for users that are not resident. → (slots (n,), evicted users (m,), their slots (m,)): the least
        recently used users outside `protected` make room when no slot is free; their rows must be read (demoted)
        before the new users' states are written.

        Raises:
            InputError: more users than free and evictable slots together (nothing changes then).
        """
        evictable = sum(1 for v in self.slot_of if v not in protected)
        if len(users) > len(self.free) + evictable:          # checked first: nothing changes on refusal
            raise InputError(f"device tier: one call touches more distinct users than the {self.n_slots} device "
                             "slots; raise `slots` or split the call")
        evicted_users, evicted_slots = [], []
        slots = np.empty(len(users), np.int64)
        for i, u in enumerate(users.tolist()):
            if not self.free:
                victim = next(v for v in self.slot_of if v not in protected)
                evicted_users.append(victim)
                evicted_slots.append(self.slot_of.pop(victim))
                self.free.append(evicted_slots[-1])
            slots[i] = self.free.pop()
            self.slot_of[u] = int(slots[i])
        return slots, np.asarray(evicted_users, np.int64), np.asarray(evicted_slots, np.int64)

    def release(self, users) -> None:
        """Free the slots of these users (those not resident are ignored); their pool rows are not read."""
        for u in np.asarray(users).tolist():
            s = self.slot_of.pop(u, None)
            if s is not None:
                self.free.append(s)

    def clear(self) -> None:
        self.release(np.fromiter(self.slot_of, np.int64, len(self.slot_of)))

    def gather(self, slots: torch.Tensor):
        """(block states, o) of the given slots, as copies (for scoring and demotion)."""
        return [BlockState(p.conv[slots], p.ssm[slots]) for p in self.pools], self.o[slots]

    def write(self, slots: torch.Tensor, states: List[BlockState], o: torch.Tensor) -> None:
        """Copy states (per block, (m, ...)) and o (m, d) into the pool rows `slots` (m,) int64 on the pools' device."""
        for pool, st in zip(self.pools, states):
            pool.conv[slots] = st.conv.to(pool.conv.dtype)
            pool.ssm[slots] = st.ssm.to(pool.ssm.dtype)
        self.o[slots] = o.to(self.o.dtype)


@dataclass
class DeviceView(RequestView):
    """recommender.RequestView of the device tier: `flat` stays None (no state leaves the device); slots: device
    slots of the distinct known users, in the order `pick` indexes."""
    slots: Optional[torch.Tensor] = None


class DeviceRecommender(OnlineRecommender):
    """OnlineRecommender whose hot users' states stay on the model's device (module docstring).

    slots: how many users' states the device holds (device memory ≈ slots × 4 bytes × the layout's floats); the
    other arguments are OnlineRecommender's (capacity_bytes sizes the host tier behind the pools).

    Raises:
        InputError: ttt or store set, runtime other than "torch", or slots < 1.
    """

    def __init__(self, model, slots: int = 65_536, **options):
        for option in ("ttt", "store"):
            if options.get(option) is not None:
                raise InputError(f"device tier: {option!r} is served by OnlineRecommender only")
        if options.get("runtime", "torch") != "torch":
            raise InputError(f"device tier: runtime must be 'torch', got {options['runtime']!r} (the pools are "
                             "advanced by the model's own kernels)")
        self.n_slots = int(slots)
        super().__init__(model, **options)

    def _install_model(self, model) -> None:
        super()._install_model(model)
        self.pool = DeviceStatePool(self.model, self.n_slots, self.device)   # swap_model: old states are misses

    # -- residency --------------------------------------------------------------------------------------------
    def _resident(self, users: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        """Device slots (n,) int64 of distinct users, admitting the missing ones (known users from the host tier
        or their ring, new users (row −1) as the empty state), demoting evicted users to the host cache first."""
        slots = self.pool.lookup(users)
        missing = np.flatnonzero(slots < 0)
        if len(missing):
            new_slots, gone_users, gone_slots = self.pool.allocate(users[missing], protected=set(users.tolist()))
            if len(gone_users):
                self._demote(gone_users, gone_slots)
            flat = np.zeros((len(missing), self.layout.size), np.float32)       # zeros = the empty state
            known = np.flatnonzero(rows[missing] >= 0)
            if len(known):
                flat[known] = self._states_for(users[missing][known], rows[missing][known], cache_rebuilt=False)
            states, o = self.layout.views(torch.from_numpy(flat).to(self.device))     # one host→device copy
            self.pool.write(torch.from_numpy(new_slots).to(self.device), states, o)
            slots[missing] = new_slots
        return torch.from_numpy(slots).to(self.device)

    def _demote(self, users: np.ndarray, slots: np.ndarray) -> None:
        """Pack evicted users' pool rows into flat vectors (header: event count, last time) into the host cache."""
        states, o = self.pool.gather(torch.from_numpy(slots).to(self.device))
        flat = self.layout.pack(states, o, torch.zeros(len(users), self.layout.size, device=self.device))
        flat = np.ascontiguousarray(flat.cpu().numpy())
        rows = self.history.rows_of(users)
        self.layout.write_header(flat, self.history.n_events[rows], self.history.last_ts[rows])
        self.cache.put(users, flat, self.version)

    def flush(self) -> None:
        """Demote every resident user to the host cache (they stay resident too)."""
        with self._lock:
            users = np.fromiter(self.pool.slot_of.keys(), np.int64, len(self.pool))
            if len(users):
                self._demote(users, np.fromiter(self.pool.slot_of.values(), np.int64, len(users)))

    # -- observe: advance in place ----------------------------------------------------------------------------
    @torch.inference_mode()
    def _observe_here(self, groups: EventGroups, users, items, times) -> None:
        rows = self.history.rows_of(groups.users)
        check_time_order(users, times, groups, self.history.lookup(rows)[1])
        slots = self._resident(groups.users, rows)
        step_items = torch.from_numpy(items[groups.step_order]).to(self.device)   # the call's one upload
        try:
            at = 0
            for m in groups.active.tolist():          # step r: users [0, m) of the call, one event each
                self.pool.o[slots[:m]] = self.model.step_pooled(step_items[at:at + m], self.pool.pools, slots[:m])
                at += m
        except Exception:
            self.pool.release(groups.users)           # half-advanced states: dropped, rebuilt from the host tier
            raise
        # the pools hold the new states: only the history and popularity are written (no host cache put)
        if (rows < 0).any():
            rows = rows.copy()
            rows[rows < 0] = self.history.add(groups.users[rows < 0])
        self.history.append(rows[groups.member], groups.rank, groups.counts[groups.member], items, times)
        np.add.at(self.popularity, items, 1)

    # -- recommend: score and rank on the device --------------------------------------------------------------
    def request_view(self, users: np.ndarray, need_rings: bool, k: int) -> DeviceView:
        known, pick, distinct, drows = self.request_rows(users)
        return DeviceView(known=known, pick=pick, flat=None, slots=self._resident(distinct, drows),
                          last_ts=self.history.last_ts[drows],
                          rings=self.history.recent(drows) if need_rings else None,
                          popular=None if known.all() else self._cold_start(k))

    def _scores_of(self, view: DeviceView, last: np.ndarray, known_at: Optional[np.ndarray]) -> torch.Tensor:
        """Scores from the pools, left on the device: the base class's _answer takes the top-k there."""
        states, o = self.pool.gather(view.slots[torch.from_numpy(view.pick).to(self.device)])
        return self._score_states(o, states, last, known_at)

    # -- housekeeping -----------------------------------------------------------------------------------------
    def forget(self, user_ids) -> int:
        """OnlineRecommender.forget, and the users' device slots freed.

        Raises:
            InputError: user_ids not 1-D integers (checked before anything is freed).
        """
        users = int64_array(user_ids, "user_ids")
        with self._lock:
            self.pool.release(users)
            return super().forget(users)

    def save(self, directory) -> None:
        """flush() then OnlineRecommender.save: the saved folder loads as a plain OnlineRecommender too."""
        with self._lock:
            self.flush()
            super().save(directory)

    def stats(self) -> dict:
        with self._lock:
            return {**super().stats(), "device_slots": self.n_slots, "device_resident": len(self.pool)}
