"""Full-ranking evaluation (docs/model.md §7): every item is a candidate, Recall/MRR/NDCG @ {5, 10, 20}, NDCG@10 per
test-time segment, with or without the test-time step.

History items are NOT masked by default (RecBole's convention); `mask_history=True` masks them and the result says
so. Ties are counted pessimistically (see `metrics`). The test-time step's outcome depends on which users share a
batch, so episodes are formed in a stated order (`ttt_order`, `episode_order`) and every TTT result records its
batch size, that order and a hash of the user ids as batched.
"""
from __future__ import annotations

import dataclasses
import hashlib

from typing import Optional

import numpy as np
import torch

from .adapt import adapted_scores, ttt_is_active
from .metrics import DEFAULT_KS, metrics_from_ranks, ndcg_by_request_gap, ndcg_by_segment, target_ranks
from .progress import progress_bar
from .request_gaps import REQUEST_GAP_LABELS

# How evaluation groups users into the test-time step's shared episodes (TTTConfig.ttt_order). Some data files
# number users so that neighbours share items (amazon-beauty, yelp-a: 62 % of neighbouring users share an item,
# 1-1.5 % of random pairs), and an episode of neighbours then adapts the model to what its users have in common,
# which no server would see (docs/results.md, "Episodes and the user order").
EPISODE_ORDERS = ("time", "random", "stored")
RANDOM_ORDER_SEED = 0

TABLE_COLUMNS = ("recall@5", "recall@10", "recall@20", "mrr@10", "ndcg@5", "ndcg@10", "ndcg@20")


def evaluate(model, split, which: str = "test", max_len: int = 200, batch_size: int = 1024, ttt=None,
             mask_history: bool = False, n_segments: int = 4, ks=DEFAULT_KS, device=None,
             progress: bool = False, return_ranks: bool = False, compile_backend: Optional[str] = None) -> dict:
    """Metrics of `model` on the `which` ("valid" | "test") targets of a leave-one-out `split`.

    ttt: None for plain scores, or a TTTConfig: each batch of `ttt.ttt_batch_size` users (NOT `batch_size`: the
    adaptation depends on it) is scored after the test-time step, the batches formed in `ttt.ttt_order`
    (`episode_order`; with "time" each batch adapts on the events before its earliest request only).
    → JSON-able dict: recall@K, mrr@K, ndcg@K, "ndcg@10_by_segment" (segments by target timestamp, earliest
    first), "ndcg@10_by_request_gap" ({bin: [NDCG@10, targets]} by t_{n+1} − t_n, request_gaps.REQUEST_GAP_BINS),
    n_users, split, mask_history, ties and, with TTT, "ttt": its settings, batch size and user order.
    compile_backend: plain scores through torch.compile with that backend (t2arec_fast/compiled.py); None = eager.
    Source: docs/model.md §7.

    Raises:
        ValueError: `which` not "valid" or "test", or batch_size < 1.
        InputError: batches the model refuses (ids beyond its n_items: data read without its id maps).
    """
    from .data import eval_batches, time_segments
    device = torch.device(device) if device is not None else next(model.parameters()).device
    use_ttt = ttt is not None
    # per-user episodes (ttt_batch_size 1) are computed for a whole batch at once (adapt.adapted_scores)
    size = ttt.ttt_batch_size if use_ttt and ttt.ttt_batch_size > 1 else batch_size
    was_training = model.training
    model.eval()
    scores_fn = model.scores
    if compile_backend is not None:
        from .compiled import compiled_scores
        scores_fn = compiled_scores(model, compile_backend)
    ranks, target_times, request_gaps, users = [], [], [], []
    shared = use_ttt and ttt.ttt_batch_size > 1
    order = episode_order(split, which, ttt.ttt_order) if shared else None
    batches = eval_batches(split, which, max_len, size, order=order)
    if progress:
        batches = progress_bar(batches, f"{which}{' +ttt' if use_ttt else ''}")
    try:
        for batch in batches:
            tb = batch.to_torch(device)
            if use_ttt:
                scores = adapted_scores(model, tb.items, tb.times, tb.target_times, ttt,
                                        causal=shared and ttt.ttt_order == "time").scores
            else:
                with torch.no_grad():
                    scores = scores_fn(tb.items, tb.times, tb.target_times)
            history = tb.items if mask_history else None
            ranks.append(target_ranks(scores, tb.targets, history).cpu().numpy())
            target_times.append(np.asarray(batch.target_times))
            request_gaps.append(np.asarray(batch.target_times) - np.asarray(batch.times)[:, -1])
            users.append(np.asarray(batch.users))
    finally:
        model.train(was_training)
    ranks = np.concatenate(ranks) if ranks else np.zeros(0, np.int64)
    batched_users = np.concatenate(users).astype(np.int64) if users else np.zeros(0, np.int64)
    target_times = np.concatenate(target_times) if target_times else np.zeros(0, np.int64)
    request_gaps = np.concatenate(request_gaps) if request_gaps else np.zeros(0, np.int64)
    if order is not None:                      # back to split.part(which) order
        ranks, target_times, request_gaps = (_unpermute(a, order) for a in (ranks, target_times, request_gaps))
    result = metrics_from_ranks(ranks, ks)
    if len(ranks):
        segments = np.asarray(time_segments(target_times, n_segments))
        result["ndcg@10_by_segment"] = ndcg_by_segment(ranks, segments, n_segments, k=10)
        result["ndcg@10_by_request_gap"] = ndcg_by_request_gap(ranks, request_gaps)
    result.update(n_users=int(len(ranks)), split=which, mask_history=bool(mask_history), ties="pessimistic")
    if return_ranks:  # 0-based rank of each example's target, in split.part(which) order (for custom breakdowns)
        result["ranks"] = ranks
    if use_ttt:
        episodes = "per batch" if shared else "per user (vectorised over each batch)"
        result["ttt"] = {**dataclasses.asdict(ttt), "active": ttt_is_active(ttt), "batch_size": ttt.ttt_batch_size,
                         "episodes": episodes, "rows_per_call": size,
                         "order": _ORDER_TEXT[ttt.ttt_order] if shared else "any (each user alone)",
                         "user_order_sha1": hashlib.sha1(batched_users.tobytes()).hexdigest()}
    return result


_ORDER_TEXT = {"time": "by request time; each episode adapts on the events before its earliest request",
               "random": f"a random permutation of the users (seed {RANDOM_ORDER_SEED})",
               "stored": "users as stored in the split (the data file's numbering)"}


def episode_order(split, which: str, order: str) -> np.ndarray:
    """Indices into split.part(which) in the order the test-time step's episodes are cut from: "time" sorts by
    request time (the target's timestamp; ties keep the stored order), "random" is a fixed permutation
    (RANDOM_ORDER_SEED), "stored" the split's own order.

    Raises:
        ValueError: an order not in EPISODE_ORDERS.
    """
    stops = split.part(which).stops
    if order == "time":
        return np.argsort(split.dataset.timestamps[stops], kind="stable")
    if order == "random":
        return np.random.default_rng(RANDOM_ORDER_SEED).permutation(len(stops))
    if order == "stored":
        return np.arange(len(stops))
    raise ValueError(f"unknown ttt_order {order!r}; expected one of {EPISODE_ORDERS}")


def _unpermute(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    out[order] = values
    return out


def evaluate_splits(model, split, max_len: int, batch_size: int = 1024, ttt=None, mask_history: bool = False,
                    n_segments: int = 4, device=None, progress: bool = False) -> dict:
    """valid and test without the test-time step and, when `ttt` is given and active, valid_ttt and test_ttt with it
    (valid_ttt is there to choose μ1', μ2', α on validation data, never on test). → {"valid", "test",
    ["valid_ttt", "test_ttt"]}: each as `evaluate` returns it.

    Raises:
        InputError: as `evaluate`.
    """
    common = dict(max_len=max_len, mask_history=mask_history, n_segments=n_segments, device=device,
                  progress=progress)
    out = {}
    for which in ("valid", "test"):
        out[which] = evaluate(model, split, which, batch_size=batch_size, **common)
        if ttt is not None and ttt_is_active(ttt):
            out[f"{which}_ttt"] = evaluate(model, split, which, ttt=ttt, **common)
    return out


def _request_gap_lines(rows, width: int) -> list:
    """NDCG@10 per request-gap bin, one line per result; '—' where a result has no targets in a bin."""
    gap_rows = [(name, r["ndcg@10_by_request_gap"]) for name, r in rows if r.get("ndcg@10_by_request_gap")]
    if not gap_rows:
        return []
    labels = [label for label in REQUEST_GAP_LABELS if any(label in bins for _, bins in gap_rows)]
    cell = max(len(label) for label in labels) + 2
    lines = ["", "NDCG@10 by request gap (time from the user's last event to the target)",
             f"{'':<{width}}  " + "  ".join(f"{label:>{cell}}" for label in labels)]
    for name, bins in gap_rows:
        lines.append(f"{name:<{width}}  " + "  ".join(
            f"{bins[label][0]:>{cell}.4f}" if label in bins else f"{'—':>{cell}}" for label in labels))
    return lines


def format_table(results: dict, columns=TABLE_COLUMNS) -> str:
    """Rows = result names (valid, test, test_ttt, ...), columns = metrics; then NDCG@10 per time segment and per
    request gap."""
    rows = [(name, r) for name, r in results.items() if isinstance(r, dict) and "ndcg@10" in r]
    width = max([len(name) for name, _ in rows] + [8])
    lines = [f"{'':<{width}}  " + "  ".join(f"{c:>9}" for c in columns)]
    for name, r in rows:
        lines.append(f"{name:<{width}}  " + "  ".join(f"{r.get(c, float('nan')):>9.4f}" for c in columns))
    seg_rows = [(name, r["ndcg@10_by_segment"]) for name, r in rows if "ndcg@10_by_segment" in r]
    if seg_rows:
        n = len(seg_rows[0][1])
        lines.append("")
        lines.append(f"{'NDCG@10 by test-time segment (earliest → latest)':<{width}}")
        lines.append(f"{'':<{width}}  " + "  ".join(f"{'seg ' + str(i):>9}" for i in range(n)))
        for name, segs in seg_rows:
            lines.append(f"{name:<{width}}  " + "  ".join(f"{v:>9.4f}" for v in segs))
    lines += _request_gap_lines(rows, width)
    notes = []
    for name, r in rows:
        if r.get("mask_history"):
            notes.append(f"{name}: history items masked")
        if "ttt" in r:
            t = r["ttt"]
            notes.append(f"{name}: test-time step {t['ttt_rule']} {t['ttt_lr']} M={t['ttt_updates']} "
                         f"μ1'={t['ttt_mu_time']} μ2'={t['ttt_mu_state']} params={t['ttt_params']} "
                         f"batch={t['batch_size']}, users {t['order']} (order sha1 {t['user_order_sha1'][:12]})")
    return "\n".join(lines + ([""] + notes if notes else []))
