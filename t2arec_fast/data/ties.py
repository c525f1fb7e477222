"""The order of a user's events that share a timestamp (option `tie_order`; docs/results.md, "Why the figures differ").

Day-resolution data (the Amazon review sets) has many events with equal times: in amazon-beauty 44 % of
consecutive events of a user share their timestamp, and for 43 % of users the test target shares it with the
event before. The order of such events is not in the data; it decides which item is each user's valid and test
target, so figures from copies of a data set that order ties differently are not comparable.

    "file"     — the order of the input file (the default; what every reader keeps)
    "item"     — by item id (raw id order, as a sort on (user, time, item) would give)
    "reversed" — the file's order reversed inside each run of equal times
    "random"   — a random order inside each run (seeded)
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .dataset import SequenceDataset

TIE_ORDERS = ("file", "item", "reversed", "random")


def reorder_ties(ds: SequenceDataset, order: str, seed: int = 0) -> SequenceDataset:
    """A copy of `ds` whose events of one user with equal timestamps are in `order` (see the module docstring);
    every other event keeps its place. "file" returns `ds` itself.

    Raises:
        ValueError: an unknown `order`.
    """
    if order not in TIE_ORDERS:
        raise ValueError(f"tie_order must be one of {TIE_ORDERS}, got {order!r}")
    if order == "file" or ds.n_interactions == 0:
        return ds
    users = ds.user_of_event()
    # runs of equal (user, time): a new run starts where either changes
    new_run = np.ones(ds.n_interactions, dtype=bool)
    new_run[1:] = (users[1:] != users[:-1]) | (ds.timestamps[1:] != ds.timestamps[:-1])
    run = np.cumsum(new_run) - 1
    position = np.arange(ds.n_interactions)
    if order == "item":
        within = ds.items                         # contiguous ids follow the raw ids' sorted order
    elif order == "reversed":
        within = -position
    else:
        within = np.random.default_rng(seed).permutation(ds.n_interactions)
    perm = np.lexsort((within, run))             # runs stay where they are; only their inside moves
    extras = {k: v[perm] for k, v in ds.extras.items()}
    meta = {**ds.meta, "tie_order": order} | ({"tie_seed": seed} if order == "random" else {})
    return dataclasses.replace(ds, items=ds.items[perm], timestamps=ds.timestamps[perm], extras=extras, meta=meta)


def tied_share(ds: SequenceDataset) -> float:
    """Share of consecutive event pairs of a user that have the same timestamp."""
    users = ds.user_of_event()
    same_user = users[1:] == users[:-1]
    if not same_user.any():
        return 0.0
    return float((ds.timestamps[1:] == ds.timestamps[:-1])[same_user].mean())
