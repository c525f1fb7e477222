"""The events of one observe() call: input checks, grouping by user into batched steps, and time-order checks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from t2arec_fast.errors import InputError

__all__ = ["int64_array", "EventGroups", "group_events", "consecutive_events", "check_items", "check_time_order"]


def int64_array(x: Any, name: str) -> np.ndarray:
    """A 1-D int64 numpy array (n,) from numpy / torch / list input; `name` is what an error calls it.

    Raises:
        InputError: not 1-D, not integers (floats incl. NaN, bools), or beyond int64.
    """
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
class EventGroups:
    """Events of one observe() call grouped by user. A member is a distinct user; members are ordered by how many
    events they have (most first), so the users taking part in step r are exactly members [0, active[r])."""
    users: np.ndarray        # (U,) user id of each member
    counts: np.ndarray       # (U,) events per member
    member: np.ndarray         # (n,) member of each event
    rank: np.ndarray         # (n,) rank of each event among its user's events (call order)
    active: np.ndarray       # (max count,) users stepping at step r
    step_order: np.ndarray   # (n,) event indices sorted by (rank, member): step r takes a contiguous run


def group_events(user_ids: np.ndarray) -> EventGroups:
    """Group the (n,) int64 user ids of one observe() call into members and batched steps (see EventGroups)."""
    n = len(user_ids)
    if n == 1 or len(np.unique(user_ids)) == n:               # the common case: one event per user, one step
        return EventGroups(users=user_ids, counts=np.ones(n, np.int64), member=np.arange(n), rank=np.zeros(n, np.int64),
                           active=np.array([n]), step_order=np.arange(n))
    order = np.argsort(user_ids, kind="stable")             # stable: a user's events keep their call order
    sorted_users = user_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    counts = np.diff(np.r_[starts, n])
    group = np.repeat(np.arange(len(starts)), counts)
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, counts)
    by_count = np.argsort(-counts, kind="stable")
    member_of_group = np.empty(len(starts), np.int64)
    member_of_group[by_count] = np.arange(len(starts))
    member = np.empty(n, np.int64)
    member[order] = member_of_group[group]
    counts_by_member = counts[by_count]
    active = (counts_by_member[None, :] > np.arange(counts_by_member[0])[:, None]).sum(1)
    return EventGroups(users=sorted_users[starts][by_count], counts=counts_by_member, member=member, rank=rank,
                       active=active, step_order=np.lexsort((member, rank)))


def consecutive_events(groups: EventGroups):
    """(earlier, later) event indices of every two consecutive events of one user within an observe() call."""
    order = np.lexsort((groups.rank, groups.member))            # each user's events together, in call order
    same_user = groups.member[order][1:] == groups.member[order][:-1]
    return order[:-1][same_user], order[1:][same_user]


def check_items(items: np.ndarray, n_items: int) -> None:
    """Checks that the (n,) int64 item ids are model item ids 1..n_items.

    Raises:
        InputError: naming the first id that is not, and its position.
    """
    bad = np.flatnonzero((items < 1) | (items > n_items))
    if len(bad):
        raise InputError(f"observe: item id {items[bad[0]]} at position {bad[0]} is not a model item id "
                         f"(expected 1..{n_items}; map raw ids with ItemIdMap)")


def check_time_order(users: np.ndarray, times: np.ndarray, groups: EventGroups, last_ts: np.ndarray) -> None:
    """Checks time order: users, times (n,) int64 per event (unix seconds); last_ts (U,) int64 per member, the user's
    stored last event (the smallest int64 for a user not seen before).

    Raises:
        InputError: a user's timestamps go backwards within the call, or its first event in the call is earlier
            than its stored last event (naming the event and the user).
    """
    if len(groups.active) > 1:              # only when some user has several events in the call
        _check_order_within_call(users, times, groups)
    first = np.flatnonzero(groups.rank == 0)
    last_of_first = last_ts[groups.member[first]]
    earlier = np.flatnonzero(times[first] < last_of_first)
    if len(earlier):
        e = first[earlier[0]]
        raise InputError(f"observe: timestamp {times[e]} of event {e} (user {users[e]}) is earlier than that "
                         f"user's last event at {last_of_first[earlier[0]]}; nothing was stored")


def _check_order_within_call(users: np.ndarray, times: np.ndarray, groups: EventGroups) -> None:
    earlier, later = consecutive_events(groups)
    back = np.flatnonzero(times[later] < times[earlier])
    if len(back):
        i, j = earlier[back[0]], later[back[0]]
        raise InputError(f"observe: timestamps go backwards for user {users[j]}: event {j} at {times[j]} comes "
                         f"after event {i} at {times[i]}; nothing was stored")

