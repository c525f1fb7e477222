"""Train / validation / test splits over a SequenceDataset, as index ranges into its CSR arrays (no copies).

Every evaluation example is "a user's events before position p, predict the event at p": `EvalPart.stops[k]` is
that absolute position p for user `EvalPart.users[k]`; the input is items[offsets[u]:p] (its last max_len events).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dataset import SequenceDataset
from .errors import DataError


@dataclass
class EvalPart:
    """The examples of one evaluation part (valid or test): one target per listed user."""
    users: np.ndarray   # int64 (n,) user rows
    stops: np.ndarray   # int64 (n,) absolute index of each target; inputs end just before it

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class Split:
    """A split of `dataset` into training prefixes and valid/test examples, as indices (kind "loo" | "global_time")."""
    dataset: SequenceDataset
    train_stop: np.ndarray  # int64 (n_users,): training sequence of u = offsets[u] .. train_stop[u] (exclusive)
    valid: EvalPart
    test: EvalPart
    kind: str

    def part(self, name: str) -> EvalPart:
        """The EvalPart called `name`.

        Raises:
            ValueError: `name` not "valid" or "test".
        """
        if name not in ("valid", "test"):
            raise ValueError(f"evaluation part must be 'valid' or 'test', got {name!r}")
        return getattr(self, name)

    def targets(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(users, target items, target timestamps) of an evaluation part, in batch order."""
        part = self.part(name)
        return part.users, self.dataset.items[part.stops], self.dataset.timestamps[part.stops]

    def n_train_targets(self) -> int:
        """Training targets per epoch: every training event except each user's first."""
        return int(np.maximum(self.train_stop - self.dataset.offsets[:-1] - 1, 0).sum())

    def target_counts(self) -> dict:
        """Users with at least one training target, a validation target, a test target."""
        return {"train": int((self.train_stop - self.dataset.offsets[:-1] >= 2).sum()), "valid": len(self.valid),
                "test": len(self.test)}

    def require_targets(self, parts=("train", "valid", "test")) -> None:
        """Refuse a split that gives some of `parts` no example, before any training time is spent.

        Raises:
            DataError: naming how many users have train, valid and test targets and what a user needs.
        """
        counts = self.target_counts()
        empty = [p for p in parts if counts[p] == 0]
        if not empty:
            return
        what = {"train": "a training target", "valid": "a validation target", "test": "a test target"}
        need = ("with leave-one-out a user needs 4 events for a training target, 3 for a validation target and 2 "
                "for a test target" if self.kind == "loo" else
                "with the global time split a user needs events on both sides of a cut")
        lengths = self.dataset.lengths
        raise DataError(f"no user has {' or '.join(what[p] for p in empty)}: of {self.dataset.n_users:,} users "
                        f"(history lengths {int(lengths.min()) if len(lengths) else 0}-"
                        f"{int(lengths.max()) if len(lengths) else 0} events after min_count="
                        f"{self.dataset.min_count}), {counts['train']:,} have training targets, {counts['valid']:,} "
                        f"a validation target and {counts['test']:,} a test target; {need}",
                        self.dataset.name or None)

    def sizes(self) -> dict:
        """{"split", "train_users", "train_targets", "valid_users", "test_users"} for reports."""
        counts = self.target_counts()
        return {"split": self.kind, "train_users": counts["train"], "train_targets": self.n_train_targets(),
                "valid_users": counts["valid"], "test_users": counts["test"]}


def leave_one_out(ds: SequenceDataset) -> Split:
    """Per user by time: last event = test target, second-to-last = validation target, the rest = training.

    Users with 2 events only have a test example; users with 1 event are not evaluated.
    """
    starts, ends = ds.offsets[:-1], ds.offsets[1:]
    lengths = ends - starts
    train_stop = np.maximum(ends - 2, starts)
    valid_users = np.flatnonzero(lengths >= 3)
    test_users = np.flatnonzero(lengths >= 2)
    return Split(ds, train_stop, EvalPart(valid_users, ends[valid_users] - 2),
                 EvalPart(test_users, ends[test_users] - 1), "loo")


def global_time_split(ds: SequenceDataset, valid_frac: float = 0.1, test_frac: float = 0.1) -> Split:
    """Cut the timeline at two global moments so the last `test_frac` of all events fall in the test period and the
    `valid_frac` before them in the validation period. Training uses only events before the validation cut. Each
    user with history before a cut and an event after it is evaluated once on that first later event (validation:
    only if it falls before the test cut).

    Raises:
        DataError: fractions outside 0 < valid_frac, test_frac with valid_frac + test_frac < 1.
    """
    if not (0 < valid_frac and 0 < test_frac and valid_frac + test_frac < 1):
        raise DataError(f"global time split needs 0 < valid_frac, test_frac and a sum < 1; "
                        f"got {valid_frac}, {test_frac}")
    t = ds.timestamps
    valid_cut, test_cut = np.quantile(t, [1 - test_frac - valid_frac, 1 - test_frac], method="higher")
    starts, ends = ds.offsets[:-1], ds.offsets[1:]
    before_valid = starts + _events_before(ds, valid_cut)
    before_test = starts + _events_before(ds, test_cut)
    has_valid = (before_valid > starts) & (before_valid < ends)
    has_valid[has_valid] &= t[before_valid[has_valid]] < test_cut
    has_test = (before_test > starts) & (before_test < ends)
    valid_users, test_users = np.flatnonzero(has_valid), np.flatnonzero(has_test)
    return Split(ds, before_valid, EvalPart(valid_users, before_valid[valid_users]),
                 EvalPart(test_users, before_test[test_users]), "global_time")


def _events_before(ds: SequenceDataset, cut) -> np.ndarray:
    """(n_users,) how many of each user's events are strictly before `cut` (a prefix: events are time-sorted)."""
    return np.bincount(ds.user_of_event()[ds.timestamps < cut], minlength=ds.n_users).astype(np.int64)


def time_segments(target_times: np.ndarray, n_segments: int = 4) -> np.ndarray:
    """(B,) segment id 0..n_segments-1: users cut into equal-size groups by target timestamp (0 = earliest).

    Ties in time are broken by position, so the group sizes differ by at most one.
    """
    target_times = np.asarray(target_times)
    n = len(target_times)
    segment = np.empty(n, dtype=np.int64)
    segment[np.argsort(target_times, kind="stable")] = np.arange(n, dtype=np.int64) * n_segments // max(n, 1)
    return segment


def make_split(ds: SequenceDataset, kind: str = "loo", valid_frac: float = 0.1, test_frac: float = 0.1) -> Split:
    """The split named in the config (`split: loo | global_time`).

    Raises:
        DataError: an unknown kind, or bad fractions for "global_time".
    """
    if kind == "loo":
        return leave_one_out(ds)
    if kind == "global_time":
        return global_time_split(ds, valid_frac, test_frac)
    raise DataError(f"unknown split {kind!r}; expected 'loo' or 'global_time'")
