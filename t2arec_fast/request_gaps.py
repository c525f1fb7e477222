"""Bins of the request gap T_{n+1} = t_{n+1} − t_n (seconds from a user's last event to the request): one
definition for the data statistics (how requests are spread) and the evaluation breakdown (accuracy per bin).
numpy only, so the data layer can use it without torch."""
from __future__ import annotations

import numpy as np

REQUEST_GAP_BINS = ((3_600, "< 1 h"), (86_400, "1 h – 1 d"), (7 * 86_400, "1 d – 1 w"),
                    (30 * 86_400, "1 w – 30 d"), (None, "≥ 30 d"))          # (upper edge in seconds, label)
REQUEST_GAP_LABELS = tuple(label for _, label in REQUEST_GAP_BINS)


def request_gap_bin(gaps_seconds) -> np.ndarray:
    """Index into REQUEST_GAP_BINS of each gap: gaps (any shape) int64 seconds ≥ 0 → int64 indices, same shape."""
    edges = np.array([high for high, _ in REQUEST_GAP_BINS if high is not None], dtype=np.int64)
    return np.searchsorted(edges, np.asarray(gaps_seconds, dtype=np.int64), side="right")
