"""Timestamp units: which unit a column of unix times is in, and the conversion to int64 seconds.

Interaction exports write unix time in seconds (MovieLens, RecBole), milliseconds (most event logs, JavaScript),
microseconds or nanoseconds (databases, pandas). The data set keeps int64 seconds (the model looks at gaps of
minutes to months); the sub-second part is only used to put events of the same second in their true order.

Detection rule (docs/data.md, "Timestamps"): the unit is chosen by the magnitude of the largest value, because a unix
time in seconds stays below 10^11 until the year 5138 while the same instant after 1973-03-03 is at least 10^11 in
milliseconds, 10^14 in microseconds and 10^17 in nanoseconds. So: largest value < 10^11 → seconds, < 10^14 →
milliseconds, < 10^17 → microseconds, else nanoseconds. Data whose times all lie before 1973-03-03 (in ms) or
relative times (seconds since a session start) are read as seconds; pass `time_unit=` to say otherwise.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import DataError

# ticks per second of each unit; the data set itself is always in seconds
TICKS_PER_SECOND = {"s": 1, "ms": 10 ** 3, "us": 10 ** 6, "ns": 10 ** 9}
UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
UNIT_ALIASES = {"s": "s", "sec": "s", "second": "s", "seconds": "s",
                "ms": "ms", "millisecond": "ms", "milliseconds": "ms",
                "us": "us", "µs": "us", "microsecond": "us", "microseconds": "us",
                "ns": "ns", "nanosecond": "ns", "nanoseconds": "ns"}
# upper bounds (exclusive) of the largest value for each unit, in detection order
DETECTION_LIMITS = (("s", 10 ** 11), ("ms", 10 ** 14), ("us", 10 ** 17))
# 9999-12-31 23:59:59 UTC: the last second a calendar date can show; anything later is a wrong unit
MAX_SECONDS = 253_402_300_799


def canonical_unit(unit: Optional[str]) -> Optional[str]:
    """'milliseconds' → 'ms'; None or 'auto' → None (detect).

    Raises:
        DataError: an unknown unit; the message lists the accepted ones.
    """
    if unit is None or str(unit).lower() == "auto":
        return None
    canonical = UNIT_ALIASES.get(str(unit).lower())
    if canonical is None:
        raise DataError(f"unknown time unit {unit!r}; expected one of auto, s, ms, us, ns "
                        "(or seconds, milliseconds, microseconds, nanoseconds)")
    return canonical


def detect_unit(largest: float) -> str:
    """The unit of a column of unix times from its largest value (the rule in the module docstring)."""
    for unit, limit in DETECTION_LIMITS:
        if largest < limit:
            return unit
    return "ns"


def split_seconds(values: np.ndarray, unit: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(int64 whole seconds, the remainder below a second or None when there is none) of non-negative times.

    `values` are int64 or float64 ticks of `unit`; the remainder keeps the dtype of `values` and is only used to
    order events within the same second.
    """
    ticks = TICKS_PER_SECOND[unit]
    if values.dtype.kind == "f":
        seconds = np.floor(values / ticks)
        remainder = values - seconds * ticks
        seconds = seconds.astype(np.int64)
    elif ticks == 1:
        return values.astype(np.int64, copy=False), None
    else:
        seconds, remainder = np.divmod(values.astype(np.int64, copy=False), ticks)
    return seconds, (remainder if remainder.any() else None)
