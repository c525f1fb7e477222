"""Dataset statistics as a dict (for JSON) and as a printed table."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from ..request_gaps import REQUEST_GAP_LABELS, request_gap_bin
from .sources import sha256

# keys that describe the data itself, not where it came from: equal for the same data in two formats
CONTENT_KEYS = ("users", "items", "interactions", "mean_length", "median_length", "min_length", "max_length",
                "sparsity", "time_first", "time_last", "time_span_days", "zero_gap_share", "default_max_len")


def dataset_stats(ds, with_hash: bool = True) -> dict:
    """JSON-able statistics of a SequenceDataset: sizes, history lengths, sparsity, time span (UTC dates, days),
    the share of zero gaps, the share of users per request-gap bin of their last event, the rows read, dropped by
    the k-core and exactly repeated, default_max_len and, with `with_hash`, each input file's path, size in bytes
    and sha256 (docs/data.md)."""
    lengths = ds.lengths
    n = ds.n_interactions
    stats = {
        "name": ds.name,
        "format": ds.format,
        "min_count": ds.min_count,
        **({"min_rating": ds.meta["min_rating"]} if "min_rating" in ds.meta else {}),   # only when one was given
        "users": ds.n_users,
        "items": ds.n_items,
        "interactions": n,
        "mean_length": round(float(lengths.mean()), 3) if ds.n_users else 0.0,
        "median_length": float(np.median(lengths)) if ds.n_users else 0.0,
        "min_length": int(lengths.min()) if ds.n_users else 0,
        "max_length": int(lengths.max()) if ds.n_users else 0,
        "sparsity": round(1.0 - n / (ds.n_users * ds.n_items), 6) if n else 1.0,
        **_time_stats(ds),
        **_last_gap_shares(ds),
        **_row_accounting(ds),
        "default_max_len": ds.default_max_len,
        "files": [{"path": str(p), "bytes": p.stat().st_size, "sha256": sha256(p)} for p in ds.files]
        if with_hash else None,
    }
    if ds.shift_times is not None:
        stats["shifts"] = int(sum(len(s) for s in ds.shift_times))
    return stats


def _row_accounting(ds) -> dict:
    """Where rows went: read, removed by a rating threshold (only when one was given), removed by the k-core, and
    exact repeats (same user, item and time; kept — every row is an interaction — but counted, since a join or an
    export that doubles rows shows up here)."""
    keys = ("rows_read", "rows_dropped_by_min_rating", "users_dropped_by_min_rating", "items_dropped_by_min_rating",
            "rows_dropped_by_min_count", "users_dropped_by_min_count", "items_dropped_by_min_count")
    report = {key: ds.meta[key] for key in keys if key in ds.meta}
    report["duplicate_events"] = duplicate_events(ds)
    return report


def duplicate_events(ds) -> int:
    """Events that repeat an earlier event of the same user with the same item and timestamp. Such events are
    neighbours in time order up to other events at the same second, so only runs of equal times are examined."""
    t = ds.timestamps
    if len(t) < 2:
        return 0
    same = np.diff(t) == 0
    same[ds.offsets[1:-1] - 1] = False                      # (last event of u, first of u+1) is not a tie
    if not same.any():
        return 0
    tied = np.zeros(len(t), dtype=bool)
    tied[1:] |= same
    tied[:-1] |= same
    run = np.cumsum(np.concatenate([[True], ~same]))        # id of the (user, time) run of every event
    idx = np.flatnonzero(tied)
    keys = run[idx].astype(np.int64) * (ds.n_items + 1) + ds.items[idx]
    return int(len(keys) - len(np.unique(keys)))


def _last_gap_shares(ds) -> dict:
    """How long after the previous event each user's last event (the leave-one-out test target) comes: the share
    of users per request-gap bin — where a readout at the request time has something to read."""
    last = ds.offsets[1:] - 1
    last = last[ds.lengths >= 2]
    if len(last) == 0:
        return {}
    bins = request_gap_bin(ds.timestamps[last] - ds.timestamps[last - 1])
    return {f"last_gap_share {label}": round(float(np.mean(bins == b)), 4)
            for b, label in enumerate(REQUEST_GAP_LABELS)}


def _time_stats(ds) -> dict:
    t = ds.timestamps
    if len(t) == 0:
        return {"time_first": None, "time_last": None, "time_span_days": 0.0, "zero_gap_share": 0.0}
    same_user = np.ones(len(t) - 1, dtype=bool)
    same_user[ds.offsets[1:-1] - 1] = False  # pair (last event of u, first of u+1) is not a gap
    gaps = np.diff(t)[same_user]
    return {
        "time_unit": _unit_text(ds),
        "time_first": _iso(t.min()),
        "time_last": _iso(t.max()),
        "time_span_days": round(float(t.max() - t.min()) / 86400.0, 2),
        "zero_gap_share": round(float(np.mean(gaps == 0)), 4) if len(gaps) else 0.0,
    }


def _unit_text(ds) -> str:
    """The unit the input's times were read in, e.g. "ms (detected)": the data set itself is in seconds."""
    unit = ds.meta.get("time_unit", "s")
    source = ds.meta.get("time_unit_source")
    return f"{unit} ({source})" if source else unit


def _iso(seconds) -> str:
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_stats(stats: dict) -> str:
    """A two-column table, integers with thousands separators."""
    rows = []
    for key, value in stats.items():
        if key == "files":
            for f in value or []:
                rows.append(("file", f"{f['path']} ({f['bytes']:,} bytes, sha256 {f['sha256'][:16]}...)"))
            continue
        if isinstance(value, bool) or value is None:
            text = str(value)
        elif isinstance(value, (int, np.integer)):
            text = f"{value:,}"
        elif isinstance(value, float):
            text = f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"
        else:
            text = str(value)
        rows.append((key.replace("_", " "), text))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)
