"""Full-ranking metrics: the rank of each target among all items, then Recall@K (= HR@K), MRR@K and NDCG@K.

Ranks are 0-based: rank 0 = the target has the highest score. Ties are counted PESSIMISTICALLY: every other item
whose score equals the target's is ranked above it. A model that gives every item the same score therefore gets
the worst rank, not the best (optimistic ties would hand such a model Recall@K = 1). With continuous float scores
ties are rare, so this only matters for degenerate models. The padding column 0 never takes part.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import numpy as np
import torch

from .request_gaps import REQUEST_GAP_LABELS, request_gap_bin

DEFAULT_KS = (5, 10, 20)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, history: Optional[torch.Tensor] = None) -> torch.Tensor:
    """0-based rank of each target among items 1..n_items.

    scores: (batch, n_items + 1), column 0 = padding (ignored); targets: (batch,) int64 in [1, n_items];
    history: optional (batch, L) int64 item ids (0 = padding) whose scores are masked to −inf before ranking —
    except the target itself, which is never masked (with repeat consumption the target may be in the history).
    A NaN target score gets the worst rank. → (batch,) int64.
    """
    if history is not None:
        scores = scores.masked_fill(history_mask(history, targets, scores.shape[1]), float("-inf"))
    item_scores = scores[:, 1:].float()
    target_score = item_scores.gather(1, (targets - 1)[:, None])
    ranks = (item_scores >= target_score).sum(dim=1) - 1          # ≥ counts the target itself once: pessimistic
    worst = torch.full_like(ranks, item_scores.shape[1] - 1)
    return torch.where(torch.isnan(target_score[:, 0]), worst, ranks)


def history_mask(history: torch.Tensor, targets: torch.Tensor, n_columns: int) -> torch.Tensor:
    """(batch, n_columns) bool: True for items in the history (padding and the target excluded)."""
    seen = torch.zeros(history.shape[0], n_columns, dtype=torch.bool, device=history.device)
    seen.scatter_(1, history, True)
    seen[:, 0] = False
    seen.scatter_(1, targets[:, None], False)
    return seen


def ndcg_per_example(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    """NDCG@k of each example from its 0-based target rank: 1/log2(rank + 2) inside the top k, else 0 (one relevant
    item, so the ideal DCG is 1). ranks: (n,) int → (n,) float64; per-example values feed paired tests."""
    ranks = np.asarray(ranks, dtype=np.int64)
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2), 0.0)


def metrics_from_ranks(ranks: np.ndarray, ks: Iterable[int] = DEFAULT_KS) -> Dict[str, float]:
    """Recall@K (= HR@K: one target per user), MRR@K and NDCG@K averaged over users, from 0-based ranks (n,)
    int → {"recall@K", "mrr@K", "ndcg@K"} floats; NaN for each when n = 0 (docs/model.md §7)."""
    ranks = np.asarray(ranks, dtype=np.int64)
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"recall@{k}"] = float(hit.mean()) if ranks.size else float("nan")
        out[f"mrr@{k}"] = float(np.where(hit, 1.0 / (ranks + 1), 0.0).mean()) if ranks.size else float("nan")
        out[f"ndcg@{k}"] = float(ndcg_per_example(ranks, k).mean()) if ranks.size else float("nan")
    return out


def ndcg_by_segment(ranks: np.ndarray, segments: np.ndarray, n_segments: int, k: int = 10) -> list:
    """NDCG@k per segment id 0..n_segments−1 (NaN for an empty segment); ranks, segments: (n,) int."""
    ranks, segments = np.asarray(ranks), np.asarray(segments)
    return [metrics_from_ranks(ranks[segments == s], ks=(k,))[f"ndcg@{k}"] for s in range(n_segments)]


def ndcg_by_request_gap(ranks: np.ndarray, request_gaps: np.ndarray, k: int = 10) -> Dict[str, list]:
    """{bin label: [NDCG@k, targets]} over the request-gap bins (`request_gaps.REQUEST_GAP_BINS`, seconds); empty
    bins are left out. Shows whether accuracy depends on how long after the last event the request comes — the
    signal a request-time readout uses."""
    ranks, bins = np.asarray(ranks), request_gap_bin(request_gaps)
    return {label: [metrics_from_ranks(ranks[bins == b], ks=(k,))[f"ndcg@{k}"], int((bins == b).sum())]
            for b, label in enumerate(REQUEST_GAP_LABELS) if (bins == b).any()}
