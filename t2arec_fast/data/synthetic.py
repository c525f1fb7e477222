"""Synthetic users whose interests shift at known moments, and mostly right after a long break.

The world: items belong to latent interest clusters, with Zipf popularity inside each cluster and unequal cluster
popularity. Each user has a few favourite clusters and one *active* cluster at a time. Activity comes in bursty
sessions (events minutes apart); sessions are separated by short gaps (hours) or breaks (days to weeks, heavy
tailed); session starts follow a daily cycle. The active cluster changes mostly after a break, so the gap before
the next event, t_{n+1} - t_n (known when the recommendation is requested), tells a model whether the user's
interest has probably moved on. A model that ignores time cannot know that; `baseline_check` measures the gap.

For a share of users (`test_after_shift`) the last event - the test target of a leave-one-out split - is forced to
be the first event after a break with a shift; independently, for a share `valid_after_shift` (default 0) the
second-last event - the validation target - is, so that validation can see what happens after shifts too. The true
shift times of every user are kept in `shift_times`, the active cluster of every event in `extras["cluster"]` and the
first event after each shift in `extras["after_shift"]`. Everything is deterministic from `seed`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from .dataset import SequenceDataset
from .errors import DataError
from .preprocess import Interactions, build_dataset

START = 1704067200          # 2024-01-01 00:00:00 UTC
MINUTE, HOUR, DAY = 60, 3600, 86400
# relative chance that a session starts in each hour of the day (quiet nights, lunch and evening peaks)
DAILY_PROFILE = np.array([1.0, 0.5, 0.3, 0.2, 0.2, 0.3, 0.8, 1.5, 2.0, 2.0, 2.0, 2.2,
                          2.5, 2.2, 2.0, 2.0, 2.2, 2.5, 3.0, 3.5, 3.5, 3.0, 2.0, 1.5])


@dataclass
class _World:
    """What all users share: items per cluster (in popularity order) and how to draw from them."""
    item_cluster: np.ndarray     # (n_items + 1,) cluster of raw item id, -1 for id 0
    members: np.ndarray          # item ids grouped by cluster, most popular first within each cluster
    member_start: np.ndarray     # (n_clusters + 1,) offsets of each cluster's items in `members`
    cluster_weight: np.ndarray   # (n_clusters,) probability of a cluster (popularity)
    zipf_cumsum: np.ndarray      # cumulative Zipf weights of ranks 0, 1, 2, ...

    @property
    def cluster_cumweight(self) -> np.ndarray:
        return np.cumsum(self.cluster_weight)

    def draw_items(self, rng: np.random.Generator, clusters: np.ndarray) -> np.ndarray:
        """One item per entry of `clusters`, Zipf-popular within its cluster."""
        sizes = self.member_start[clusters + 1] - self.member_start[clusters]
        mass = self.zipf_cumsum[sizes - 1] * rng.random(len(clusters))
        rank = np.minimum(np.searchsorted(self.zipf_cumsum, mass, side="right"), sizes - 1)
        return self.members[self.member_start[clusters] + rank]


def generate(n_users: int = 2000, n_items: int = 1000, n_clusters: int = 20, mean_events: int = 60,
             min_events: int = 20, favourites: int = 4, session_events: float = 4.0, break_prob: float = 0.3,
             shift_after_break: float = 0.85, shift_otherwise: float = 0.03, noise: float = 0.1,
             zipf_a: float = 1.0, test_after_shift: float = 0.5, valid_after_shift: float = 0.0, seed: int = 0,
             min_count: int = 1) -> SequenceDataset:
    """A SequenceDataset of n_users synthetic users with true `shift_times` (see the module docstring).

    Defaults (2,000 users x ~60 events, 1,000 items) let a small model train an epoch in seconds on a CPU.
    """
    settings = {k: v for k, v in locals().items() if k != "min_count"}
    _check_settings(n_users, n_items, n_clusters, favourites, min_events)
    rng = np.random.default_rng(seed)
    world = _make_world(rng, n_items, n_clusters, zipf_a)
    users, shift_times = [], []
    for user in range(n_users):
        forced_test = rng.random() < test_after_shift
        forced_valid = valid_after_shift > 0 and rng.random() < valid_after_shift   # no draw at 0: same data as before
        users.append(_user_events(rng, world, settings, _forced_tail(forced_valid, forced_test)))
        shift_times.append(users[-1]["shift_times"])
    raw = Interactions(
        users=np.concatenate([np.full(len(u["items"]), i, dtype=np.int64) for i, u in enumerate(users)]),
        items=np.concatenate([u["items"] for u in users]),
        timestamps=np.concatenate([u["times"] for u in users]),
        name="synthetic", format="synthetic",
        extras={"cluster": np.concatenate([u["clusters"] for u in users]),
                "after_shift": np.concatenate([u["after_shift"] for u in users])})
    ds = build_dataset(raw, min_count=min_count, default_max_len=50)
    ds.shift_times = [shift_times[int(raw_id)] for raw_id in ds.user_ids]
    ds.meta.update(generator=settings, item_cluster=world.item_cluster[ds.item_ids].copy())
    ds.meta["item_cluster"][0] = -1
    return ds


def from_spec(spec: str, min_count: int = 1) -> SequenceDataset:
    """`synthetic` or `synthetic:n_users=500,seed=3` -> generate(...). Values are converted to the defaults' types.

    Raises:
        DataError: an option that is not key=value, an unknown key, or a value of the wrong type (or what
            `generate` refuses).
    """
    _, _, options = spec.partition(":")
    params = inspect.signature(generate).parameters
    kwargs = {}
    for item in filter(None, (s.strip() for s in options.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in params or key == "min_count":
            known = ", ".join(p for p in params if p != "min_count")
            raise DataError(f"synthetic option {item!r} not understood; expected key=value with key one of: {known}")
        kind = type(params[key].default)
        try:
            kwargs[key] = kind(float(value)) if kind is int and float(value).is_integer() else kind(value)
        except ValueError:
            raise DataError(f"synthetic option {key}={value!r}: expected a {kind.__name__}") from None
    ds = generate(**kwargs, min_count=min_count)
    ds.name = spec if options else "synthetic"
    return ds


# -- the world and one user -----------------------------------------------------------------------------------------
def _check_settings(n_users, n_items, n_clusters, favourites, min_events) -> None:
    if n_users < 1 or n_items < n_clusters or n_clusters < 2:
        raise DataError(f"synthetic data needs n_users >= 1 and n_items >= n_clusters >= 2; got n_users={n_users}, "
                        f"n_items={n_items}, n_clusters={n_clusters}")
    if not 1 <= favourites <= n_clusters or min_events < 3:
        raise DataError(f"synthetic data needs 1 <= favourites <= n_clusters and min_events >= 3; got "
                        f"favourites={favourites}, min_events={min_events}")


def _make_world(rng: np.random.Generator, n_items: int, n_clusters: int, zipf_a: float) -> _World:
    cluster_of = rng.permutation(n_items) % n_clusters          # balanced sizes, random membership
    order = np.argsort(cluster_of, kind="stable")              # within a cluster, earlier ids = more popular
    members = order.astype(np.int64) + 1
    member_start = np.zeros(n_clusters + 1, dtype=np.int64)
    np.cumsum(np.bincount(cluster_of, minlength=n_clusters), out=member_start[1:])
    members = np.concatenate([rng.permutation(members[member_start[c]:member_start[c + 1]])
                              for c in range(n_clusters)])
    weight = rng.permutation(1.0 / np.sqrt(np.arange(1, n_clusters + 1)))
    ranks = np.arange(1, n_items + 1, dtype=np.float64)
    return _World(item_cluster=np.concatenate([[-1], cluster_of]).astype(np.int64), members=members,
                  member_start=member_start, cluster_weight=weight / weight.sum(),
                  zipf_cumsum=np.cumsum(ranks ** -zipf_a))


def _forced_tail(valid: bool, test: bool) -> list:
    """Sizes of the last sessions, each forced to start after a break with a shift: the validation target (second
    last event) and/or the test target (last event) then come first after a shift."""
    if valid:
        return [1, 1] if test else [2]
    return [1] if test else []


def _user_events(rng: np.random.Generator, world: _World, s: dict, tail: list) -> dict:
    n_events = _draw_length(rng, s["mean_events"], s["min_events"])
    sizes = np.append(_session_sizes(rng, n_events - sum(tail), s["session_events"]), tail).astype(np.int64)
    n_sessions = len(sizes)
    is_break = rng.random(n_sessions) < s["break_prob"]
    shifts = rng.random(n_sessions) < np.where(is_break, s["shift_after_break"], s["shift_otherwise"])
    is_break[0] = shifts[0] = False                                # the first session has nothing to shift from
    if tail and n_sessions > len(tail):
        is_break[-len(tail):] = shifts[-len(tail):] = True
    clusters = _active_clusters(rng, world, shifts, s["favourites"])
    starts = _session_starts(rng, sizes, is_break)
    event_session = np.repeat(np.arange(n_sessions), sizes)
    first_of_session = np.r_[0, np.cumsum(sizes)[:-1]]
    times = starts[event_session] + _within_session_offsets(rng, sizes, first_of_session)
    event_clusters = clusters[event_session]
    is_noise = rng.random(n_events) < s["noise"]
    drawn = np.where(is_noise, rng.choice(len(world.cluster_weight), n_events, p=world.cluster_weight),
                     event_clusters)
    after_shift = np.zeros(n_events, dtype=bool)
    after_shift[first_of_session[shifts]] = True
    return {"items": world.draw_items(rng, drawn), "times": times, "clusters": event_clusters,
            "after_shift": after_shift, "shift_times": starts[shifts].astype(np.int64)}


def _draw_length(rng: np.random.Generator, mean: float, minimum: int) -> int:
    sigma = 0.6                                              # lognormal: a few heavy users, many light ones
    length = rng.lognormal(np.log(mean) - sigma ** 2 / 2, sigma)
    return int(np.clip(round(length), minimum, 5 * mean))


def _session_sizes(rng: np.random.Generator, n_events: int, mean_size: float) -> np.ndarray:
    sizes = rng.geometric(1.0 / mean_size, size=int(2 * n_events / mean_size) + 8)
    while sizes.sum() < n_events:
        sizes = np.append(sizes, rng.geometric(1.0 / mean_size, size=len(sizes)))
    n_sessions = int(np.searchsorted(np.cumsum(sizes), n_events)) + 1
    sizes = sizes[:n_sessions].copy()
    sizes[-1] -= sizes.sum() - n_events
    return sizes


def _active_clusters(rng: np.random.Generator, world: _World, shifts: np.ndarray, n_favourites: int) -> np.ndarray:
    """Active cluster per session: it moves at each shift, usually to another favourite, sometimes somewhere new."""
    n_clusters = len(world.cluster_weight)
    favourites = rng.choice(n_clusters, n_favourites, replace=False, p=world.cluster_weight).tolist()
    active = []
    current = favourites[0]
    for shift in shifts.tolist():
        if shift:
            current = _next_cluster(rng, world, favourites, current)
        active.append(current)
    return np.array(active, dtype=np.int64)


def _next_cluster(rng: np.random.Generator, world: _World, favourites: list, current: int) -> int:
    others = [c for c in favourites if c != current]
    if others and rng.random() < 0.8:
        return others[int(rng.integers(len(others)))]
    new = current
    while new == current:  # a popularity-weighted draw of any other cluster
        new = int(np.searchsorted(world.cluster_cumweight, rng.random() * world.cluster_cumweight[-1], "right"))
        new = min(new, len(world.cluster_weight) - 1)
    if new not in favourites:
        favourites.append(new)                               # a discovered interest may come back later
    return new


def _session_starts(rng: np.random.Generator, sizes: np.ndarray, is_break: np.ndarray) -> np.ndarray:
    """Unix start time of each session: short gaps of hours (no sessions at night) or breaks of days to weeks."""
    n = len(sizes)
    short_gap = np.clip(rng.lognormal(np.log(5 * HOUR), 0.7, n), 0.5 * HOUR, 30 * HOUR)
    break_gap = np.clip(rng.lognormal(np.log(5 * DAY), 0.8, n), 2 * DAY, 60 * DAY)
    hour_of_day = rng.choice(24, n, p=DAILY_PROFILE / DAILY_PROFILE.sum()) * HOUR + rng.integers(0, HOUR, n)
    duration_bound = sizes * 15 * MINUTE                          # generous upper bound of a session's length
    short_gap, break_gap = short_gap.astype(np.int64).tolist(), break_gap.astype(np.int64).tolist()
    hour_of_day, duration_bound, is_break = hour_of_day.tolist(), duration_bound.tolist(), is_break.tolist()
    starts = [START + int(rng.integers(0, 30)) * DAY + hour_of_day[0]]
    for s in range(1, n):   # plain ints: this loop runs once per session of every user
        end = starts[-1] + duration_bound[s - 1]
        if is_break[s]:   # back after days: a new day, at an hour drawn from the daily profile
            starts.append((end + break_gap[s]) // DAY * DAY + hour_of_day[s])
        else:             # later the same or next day; nobody starts between 01:00 and 07:00
            start = end + short_gap[s]
            hour = start % DAY // HOUR
            starts.append(start if not 1 <= hour < 7 else start // DAY * DAY + 7 * HOUR + start % HOUR)
    return np.array(starts, dtype=np.int64)


def _within_session_offsets(rng: np.random.Generator, sizes: np.ndarray, first_of_session: np.ndarray) -> np.ndarray:
    """Seconds since the session start: gaps of 20 s + exponential(2 min), at most 14 min, so sessions stay short."""
    gaps = np.minimum(20 + rng.exponential(2 * MINUTE, int(sizes.sum())), 14 * MINUTE).astype(np.int64)
    gaps[first_of_session] = 0
    cumulative = np.cumsum(gaps)
    return cumulative - np.repeat(cumulative[first_of_session], sizes)


# -- is it hard enough? ---------------------------------------------------------------------------------------------
def baseline_check(ds: SequenceDataset, k: int = 10, break_hours: float = 24.0) -> dict:
    """HR@k on the leave-one-out test events of four simple predictors, each recommending the k most popular items
    of one cluster (popularity counted on all non-test events):

    - popular:     the most popular items overall (no user information),
    - last_session (time-blind): the cluster of the user's latest events (mode of the last three),
    - gap_aware:   as last_session, but if the request comes more than `break_hours` after the last event, the
                   user's most frequent other cluster (uses t_{n+1} - t_n, nothing else),
    - oracle:      the true active cluster of the test event (an upper bound for cluster-level prediction).

    Reported overall and split by whether the test event comes right after a true interest shift. gap_aware
    beating last_session by a clear margin is what makes the data worth a time-aware model.
    """
    from .split import leave_one_out
    split = leave_one_out(ds)
    users, targets, target_times = split.targets("test")
    stops = split.test.stops
    cluster_of = ds.meta["item_cluster"]
    n_clusters = int(cluster_of.max()) + 1
    top = _top_items_per_cluster(ds, stops, cluster_of, n_clusters, k)
    current = _recent_cluster(cluster_of[ds.items[stops - 3]], cluster_of[ds.items[stops - 2]],
                              cluster_of[ds.items[stops - 1]])
    long_gap = (target_times - ds.timestamps[stops - 1]) > break_hours * HOUR
    gap_aware = np.where(long_gap, _favourite_other_cluster(ds, stops, users, current, n_clusters), current)
    after_shift = ds.extras["after_shift"][stops]
    predictions = {"popular": None, "last_session": current, "gap_aware": gap_aware,
                   "oracle": ds.extras["cluster"][stops]}
    report = {"k": k, "test_users": len(users), "share_after_shift": round(float(after_shift.mean()), 4),
              "share_long_gap": round(float(long_gap.mean()), 4)}
    for name, cluster in predictions.items():
        if cluster is None:
            hit = np.isin(targets, _top_overall(ds, stops, k))
        else:
            hit = (top[cluster] == targets[:, None]).any(axis=1)
        report[name] = {"hr_all": _rate(hit), "hr_after_shift": _rate(hit[after_shift]),
                        "hr_no_shift": _rate(hit[~after_shift])}
    return report


def format_baseline_check(report: dict) -> str:
    """The report of `baseline_check` as a printed table (HR@k of each simple predictor, overall and by shift)."""
    k = report["k"]
    lines = [f"  {'predictor':<14} {'HR@' + str(k) + ' all':>11} {'after shift':>12} {'no shift':>10}"]
    for name in ("popular", "last_session", "gap_aware", "oracle"):
        r = report[name]
        lines.append(f"  {name:<14} {r['hr_all']:>11.4f} {r['hr_after_shift']:>12.4f} {r['hr_no_shift']:>10.4f}")
    lines.append(f"  test users {report['test_users']:,}; right after a shift {report['share_after_shift']:.1%}; "
                 f"request after a long gap {report['share_long_gap']:.1%}")
    return "\n".join(lines)


def _rate(hit: np.ndarray) -> float:
    return round(float(hit.mean()), 4) if len(hit) else float("nan")


def _non_test_counts(ds: SequenceDataset, stops: np.ndarray) -> np.ndarray:
    counts = np.bincount(ds.items, minlength=ds.n_items + 1)
    counts -= np.bincount(ds.items[stops], minlength=ds.n_items + 1)
    counts[0] = -1
    return counts


def _top_overall(ds: SequenceDataset, stops: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-_non_test_counts(ds, stops), kind="stable")[:k]


def _top_items_per_cluster(ds, stops, cluster_of, n_clusters, k) -> np.ndarray:
    """(n_clusters, k) the k most popular items of each cluster (0 where a cluster has fewer than k items)."""
    counts = _non_test_counts(ds, stops)
    order = np.lexsort((-counts, cluster_of))                     # by cluster, then by popularity
    order = order[cluster_of[order] >= 0]
    starts = np.searchsorted(cluster_of[order], np.arange(n_clusters))
    ends = np.searchsorted(cluster_of[order], np.arange(n_clusters), side="right")
    top = np.zeros((n_clusters, k), dtype=np.int64)
    for c in range(n_clusters):
        chosen = order[starts[c]:min(ends[c], starts[c] + k)]
        top[c, :len(chosen)] = chosen
    return top


def _recent_cluster(c1: np.ndarray, c2: np.ndarray, c3: np.ndarray) -> np.ndarray:
    """Mode of three clusters (c3 the latest), ties to the latest: robust to one off-topic (noise) event."""
    return np.where((c3 == c2) | (c3 == c1), c3, np.where(c1 == c2, c1, c3))


def _favourite_other_cluster(ds, stops, users, current, n_clusters) -> np.ndarray:
    """Each test user's most frequent cluster in their history before the test event, other than `current`."""
    cluster_of = ds.meta["item_cluster"]
    event_user = ds.user_of_event()
    history = np.ones(ds.n_interactions, dtype=bool)
    history[stops] = False
    counts = np.bincount(event_user[history] * n_clusters + cluster_of[ds.items[history]],
                         minlength=ds.n_users * n_clusters).reshape(ds.n_users, n_clusters)[users]
    counts[np.arange(len(users)), current] = -1
    return counts.argmax(axis=1)
