"""The two self-supervised alignment losses of T2ARec (docs/model.md §3 and §4), and λ's estimate.

Both act on a LEFT-padded batch: column j of an (batch, L) array is real when mask[:, j] is True.
"""
from __future__ import annotations

import torch

GAP_TRANSFORMS = ("hours", "log1p_hours")
STATE_NORMS = ("fro", "squared", "relative")


def transform_gaps(gaps_seconds: torch.Tensor, kind: str) -> torch.Tensor:
    """g(T) of gaps in seconds (any shape, int or float) → float tensor of the same shape: "hours" (the paper's
    linear gaps) or "log1p_hours" (compresses the heavy tail of real gaps). Source: docs/model.md §3.

    Raises:
        ValueError: an unknown kind.
    """
    hours = gaps_seconds.to(torch.float32 if not gaps_seconds.is_floating_point() else gaps_seconds.dtype) / 3600.0
    if kind == "hours":
        return hours
    if kind == "log1p_hours":
        return torch.log1p(hours)
    raise ValueError(f"unknown gap_transform {kind!r}; expected one of {GAP_TRANSFORMS}")


def gap_sequence(times: torch.Tensor, mask: torch.Tensor, target_times: torch.Tensor):
    """True gaps T_2..T_{n+1} laid out as (batch, L+1) with their validity (docs/model.md §3).

    times: (batch, L) int64 unix seconds, LEFT-padded; mask: (batch, L) bool, True at real events; target_times:
    (batch,) int64 = t_{n+1}. → (gaps (batch, L+1) int64 seconds, valid (batch, L+1) bool).

    Column j < L holds T at input position j (t_j − t_{j−1}); it is valid when both j and j−1 are real, so the
    first real event (T_1, unused) is invalid. Column L holds T_{n+1} = target_time − t_n (always valid).
    """
    gaps, valid = event_gaps(times, mask)
    gaps = torch.cat([gaps, (target_times - times[:, -1])[:, None]], dim=1)
    valid = torch.cat([valid, torch.ones_like(mask[:, :1])], dim=1)
    return gaps, valid


def event_gaps(times: torch.Tensor, mask: torch.Tensor):
    """(t_j − t_{j−1}, valid) per column of a LEFT-padded (batch, L) batch; valid when j and j−1 are both real."""
    prev = torch.cat([times[:, :1], times[:, :-1]], dim=1)
    prev_real = torch.cat([torch.zeros_like(mask[:, :1]), mask[:, :-1]], dim=1)
    return times - prev, mask & prev_real


def gap_buckets(gaps_seconds: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """Log-spaced buckets of gaps: ⌊log2(1 + gap in minutes)⌋, clamped to [0, n_buckets − 1] (bucket 0: under a
    minute; 20: about two years)."""
    minutes = gaps_seconds.clamp_min(0).to(torch.float64) / 60.0
    return torch.log2(1.0 + minutes).floor().long().clamp(0, n_buckets - 1)


def block_pairs(values: torch.Tensor, valid: torch.Tensor, block: int):
    """Reshape (batch, L+1) into blocks of `block` columns anchored at the LAST column (so left padding does not move
    block boundaries) and return the pairwise differences v_i − v_j for i < j inside each block, with validity."""
    width = values.shape[1]
    pad = (-width) % block
    v = torch.nn.functional.pad(values, (pad, 0)).reshape(values.shape[0], -1, block)
    m = torch.nn.functional.pad(valid, (pad, 0), value=False).reshape(values.shape[0], -1, block)
    diff = v[..., :, None] - v[..., None, :]
    upper = torch.ones(block, block, dtype=torch.bool, device=values.device).triu(1)
    pair_ok = m[..., :, None] & m[..., None, :] & upper
    return diff, pair_ok


def time_pairs(gaps: torch.Tensor, valid: torch.Tensor, block: int, gap_transform: str,
               count_tied_pairs: bool = True, dtype: torch.dtype | None = None):
    """The pairs L_time compares — the one definition used by the loss, its pair count (DDP weights) and λ.

    gaps, valid: (batch, L+1) from `gap_sequence` (seconds, bool). Returns (d_gap, counted), both
    (batch, blocks, block, block): g(T_i) − g(T_j) for i < j inside each block of `block` positions (anchored at the
    last column), in `dtype` if given, and which pairs count (both valid; with `count_tied_pairs` False, also
    unequal gaps). Source: docs/model.md (L_time)."""
    g = transform_gaps(gaps, gap_transform)
    d_gap, counted = block_pairs(g if dtype is None else g.to(dtype), valid, block)
    if not count_tied_pairs:
        counted = counted & (d_gap != 0)
    return d_gap, counted


def time_interval_loss(dt: torch.Tensor, gaps: torch.Tensor, valid: torch.Tensor, margin,
                       block: int = 16, gap_transform: str = "hours", count_tied_pairs: bool = True) -> torch.Tensor:
    """L_time: pairwise hinge on the ordering of the predicted Δ (dt) vs the true gaps g(T).

    dt, gaps, valid: (batch, L+1) from the block (Δ_1..Δ_n, Δ̂_{n+1}) and `gap_sequence`.
    L = Σ max(0, 1 − (Δ_i − Δ_j)(g(T_i) − g(T_j)) / λ) / (number of counted pairs); margin λ: float or 0-dim tensor.
    Pairs with equal gaps contribute a constant 1 and no gradient; `count_tied_pairs` decides whether they count.
    """
    d_gap, pair_ok = time_pairs(gaps, valid, block, gap_transform, count_tied_pairs, dtype=dt.dtype)
    d_dt, _ = block_pairs(dt, valid, block)
    hinge = torch.relu(1.0 - d_dt * d_gap / margin)
    n_pairs = pair_ok.sum()
    return torch.where(pair_ok, hinge, torch.zeros_like(hinge)).sum() / n_pairs.clamp_min(1)


def estimate_time_margin(gap_batches, block: int = 16, gap_transform: str = "hours",
                         max_pairs: int = 2_000_000) -> float:
    """λ = median |g(T_i) − g(T_j)| over the training pairs L_time will see (non-zero differences, so that data with
    many equal gaps — day-resolution Amazon times — never yields λ = 0).

    gap_batches: iterable of (gaps, valid) tensors as returned by `gap_sequence`.
    """
    diffs, seen = [], 0
    for gaps, valid in gap_batches:
        d_gap, pair_ok = time_pairs(gaps, valid, block, gap_transform, count_tied_pairs=False)
        d = d_gap.abs()[pair_ok]
        diffs.append(d)
        seen += d.numel()
        if seen >= max_pairs:
            break
    if not diffs or seen == 0:
        return 1.0
    return float(torch.cat(diffs).float().median())


def interest_state_loss(h_n: torch.Tensor, h_next: torch.Tensor, dt_next: torch.Tensor, q: torch.Tensor,
                        x_n: torch.Tensor, A: torch.Tensor, floor: float = 1e-3, norm: str = "fro") -> torch.Tensor:
    """L_state: reconstruct h_n backwards from the one-step extrapolation ĥ_{n+1} (docs/model.md §4).

    h_n, h_next: (batch, d_state, d); dt_next = Δ̂_{n+1}: (batch,); q = Linear_2(x_n): (batch, d_state);
    x_n: (batch, d). With P̄ = −1/A: ĥᵇ_n = P̄ ĥ_{n+1} + (Δ̂ Q) ⊗ x_n.
    "fro": ‖h_n − ĥᵇ_n‖_F / max(Δ̂, δ)²;  "squared": ‖·‖²_F / max(Δ̂, δ)²;  "relative": ‖·‖_F / ‖h_n‖_F.
    Averaged over the batch → 0-dim tensor; A: the block's scalar decay (< 0); floor δ.

    Raises:
        ValueError: an unknown norm.
    """
    p_bar = -1.0 / A
    h_back = p_bar * h_next + (dt_next[:, None] * q)[:, :, None] * x_n[:, None, :]
    err = (h_n - h_back).flatten(1).norm(dim=1)
    if norm == "relative":
        return (err / h_n.flatten(1).norm(dim=1).clamp_min(1e-6)).mean()
    scale = dt_next.clamp_min(floor).pow(2)
    if norm == "fro":
        return (err / scale).mean()
    if norm == "squared":
        return (err.pow(2) / scale).mean()
    raise ValueError(f"unknown state_norm {norm!r}; expected one of {STATE_NORMS}")
