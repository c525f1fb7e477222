"""Per-user rings of recent events, kept outside the LRU state cache: what a lost or stale state is rebuilt from."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from t2arec_fast.errors import InputError

__all__ = ["HistoryStore", "ring_in_time_order"]


def ring_in_time_order(items: np.ndarray, times: np.ndarray, n_events: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Rings (m, H) holding event j of a user (0-based, over all time) at column j % H, and each user's event count
    (m,) → items, times (m, L) int64 in time order, LEFT-padded with 0, L = the longest ring kept."""
    H = items.shape[1]
    length = np.minimum(n_events, H)
    L = int(length.max()) if len(n_events) else 0
    col = np.arange(L)[None, :]
    pad = (L - length)[:, None]
    event = (n_events - length)[:, None] + col - pad                # global event number shown in each column
    valid = col >= pad
    pos = np.where(valid, event, 0) % H
    rows = np.arange(len(n_events))[:, None]
    return (np.where(valid, items[rows, pos], 0).astype(np.int64),
            np.where(valid, times[rows, pos], 0).astype(np.int64))


class HistoryStore:
    """Per-user ring of the last `history_len` (item, time) events plus the event count and the last timestamp.

    Rows of growable numpy arrays; a dict maps user id → row. Event number j of a user (0-based, over all time)
    sits at ring position j % history_len. Never evicted: it is what a lost or stale state is rebuilt from.
    Memory: 12·history_len + 24 bytes per user plus the dict entry (≈ 100 bytes).
    """

    def __init__(self, history_len: int):
        """Raises: InputError when history_len < 1."""
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
        """Bytes of the arrays (the dict of user ids not included)."""
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
        keep = ranks >= counts - H          # only each user's last H events land: no two writes hit one ring position
        r, rank = rows[keep], ranks[keep]
        pos = (self.n_events[r] + rank) % H
        self.items[r, pos] = items[keep]
        self.times[r, pos] = times[keep]
        last = ranks == counts - 1
        self.last_ts[rows[last]] = times[last]
        self.n_events[rows[last]] += counts[last]

    def recent(self, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The ring of each row in time order, LEFT-padded with 0: → items, times (m, L) int64, L = longest kept."""
        return ring_in_time_order(self.items[rows], self.times[rows], self.n_events[rows])

    def seen(self, rows: np.ndarray) -> np.ndarray:
        """(m, history_len) int64 item ids in each ring (0 where the ring is not full yet)."""
        return self.items[rows].astype(np.int64)

    def forget(self, user_ids: np.ndarray) -> int:
        """Remove users (n,) int64 and free their rows for new users; → how many were known."""
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
        """The store as numpy arrays (for np.savez): history_len, user_ids (m,), items / times (m, history_len),
        n_events / last_ts (m,)."""
        users = np.fromiter(self._row_of.keys(), np.int64, len(self._row_of))
        rows = np.fromiter(self._row_of.values(), np.int64, len(self._row_of))
        return {"history_len": np.int64(self.history_len), "user_ids": users, "items": self.items[rows],
                "times": self.times[rows], "n_events": self.n_events[rows], "last_ts": self.last_ts[rows]}

    @classmethod
    def from_arrays(cls, arrays: dict) -> "HistoryStore":
        """The store `to_arrays` described."""
        store = cls(int(arrays["history_len"]))
        rows = store.add(np.asarray(arrays["user_ids"], np.int64))
        store.items[rows] = arrays["items"]
        store.times[rows] = arrays["times"]
        store.n_events[rows] = arrays["n_events"]
        store.last_ts[rows] = arrays["last_ts"]
        return store

