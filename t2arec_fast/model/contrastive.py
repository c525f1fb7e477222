"""Contrastive self-supervision for training (an option, off by default): two augmented views of every training
sequence should map to nearby representations and away from the batch's other sequences (docs/model.md,
"Contrastive augmentation"; the recipe of CL4SRec, Xie et al., ICDE 2022, §3.2–3.3, with its three augmentations).

Views are built on LEFT-padded (batch, L) batches in torch, one augmentation drawn per row and view:
- crop: keep a contiguous window of ⌈η·n⌉ of the row's n events (η = `crop`, the kept fraction);
- drop: remove each event with probability γ (`drop`), at least one kept — CL4SRec's "mask" without a mask token
  (our models have no such item: a removed event closes up, so rows stay left-padded and timestamps in order);
- reorder: shuffle the items inside a window of ⌈β·n⌉ events (β = `reorder`); the timestamps stay where they
  were, so a view keeps the row's timeline and only the order of its items changes.
Random numbers come from torch's global generator (saved with a run's checkpoint, so `resume` continues it).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

def _window(real_len: torch.Tensor, fraction: float, L: int) -> tuple:
    """A random window of ⌈fraction·n⌉ (at least 1) events per row → (first column, width), both (batch,) int64.
    real_len: (batch,) events per row; the row's events occupy columns L − n .. L − 1."""
    width = torch.clamp(torch.ceil(real_len.double() * fraction).long(), min=1)
    width = torch.minimum(width, real_len)
    offset = (torch.rand(real_len.shape, device=real_len.device) * (real_len - width + 1)).long()
    return L - real_len + offset, width


def _keep_left(items: torch.Tensor, times: torch.Tensor, keep: torch.Tensor) -> tuple:
    """Rows of only the `keep` columns (batch, L bool), in order, LEFT-padded again (pads: item 0, time 0)."""
    L = items.shape[1]
    column = torch.arange(L, device=items.device)
    order = torch.argsort(torch.where(keep, column + L, column), dim=1, stable=True)   # kept columns last
    real = column >= L - keep.sum(1, keepdim=True)
    return (torch.where(real, items.gather(1, order), items.new_zeros(())),
            torch.where(real, times.gather(1, order), times.new_zeros(())))


def crop(items: torch.Tensor, times: torch.Tensor, fraction: float) -> tuple:
    """Each row's events in a random window of ⌈fraction·n⌉ of them. items, times: (batch, L) int64 LEFT-padded,
    at least one event per row → (items, times) of the same shape and dtype."""
    L = items.shape[1]
    first, width = _window((items != 0).sum(1), fraction, L)
    column = torch.arange(L, device=items.device)
    keep = (column >= first[:, None]) & (column < (first + width)[:, None])
    return _keep_left(items, times, keep)


def drop(items: torch.Tensor, times: torch.Tensor, rate: float) -> tuple:
    """Each event removed with probability `rate`; a row that would lose all keeps its last event. Shapes as `crop`."""
    real = items != 0
    keep = real & (torch.rand(items.shape, device=items.device) >= rate)
    keep[:, -1] |= ~keep.any(1)
    return _keep_left(items, times, keep)


def reorder(items: torch.Tensor, times: torch.Tensor, fraction: float) -> tuple:
    """Items of a random window of ⌈fraction·n⌉ events shuffled; times unchanged. Shapes as `crop`."""
    L = items.shape[1]
    first, width = _window((items != 0).sum(1), fraction, L)
    column = torch.arange(L, device=items.device)
    inside = (column >= first[:, None]) & (column < (first + width)[:, None])
    # a column inside the window gets a random key in [first, first + width): sorting the keys permutes the window
    # and leaves every other column (integer key, outside that interval) where it is
    noise = torch.rand(items.shape, dtype=torch.float64, device=items.device)
    key = torch.where(inside, first[:, None] + noise * width[:, None], column.double())
    return items.gather(1, torch.argsort(key, dim=1)), times


def augment(items: torch.Tensor, times: torch.Tensor, crop_fraction: float, drop_rate: float,
            reorder_fraction: float) -> tuple:
    """One view: per row, one augmentation drawn uniformly among those switched on (crop_fraction < 1, drop_rate
    > 0, reorder_fraction > 0). items, times: (batch, L) int64 LEFT-padded, ≥ 1 event per row → (items, times),
    same shape, still left-padded with times in order.

    Raises:
        ValueError: none of the three is switched on.
    """
    views = []
    if crop_fraction < 1:
        views.append(crop(items, times, crop_fraction))
    if drop_rate > 0:
        views.append(drop(items, times, drop_rate))
    if reorder_fraction > 0:
        views.append(reorder(items, times, reorder_fraction))
    if not views:
        raise ValueError("contrastive views need an augmentation: cl_crop < 1, cl_drop > 0 or cl_reorder > 0")
    pick = torch.randint(len(views), (items.shape[0], 1), device=items.device)
    out_items, out_times = views[0]
    for j, (v_items, v_times) in enumerate(views[1:], start=1):
        out_items = torch.where(pick == j, v_items, out_items)
        out_times = torch.where(pick == j, v_times, out_times)
    return out_items, out_times


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over a batch (CL4SRec Eq. 6): for each of the 2B representations the other view of the same row is
    the positive, the 2B − 2 views of the other rows the negatives; similarity = dot product / temperature.
    z1, z2: (B, d) float → 0-dim mean loss (0 for B = 1: no negatives)."""
    B = z1.shape[0]
    if B < 2:
        return z1.sum() * 0.0
    z = torch.cat([z1, z2], dim=0)
    sim = (z @ z.t()) / temperature
    sim = sim.masked_fill(torch.eye(2 * B, dtype=torch.bool, device=z.device), -math.inf)
    positive = torch.cat([torch.arange(B, 2 * B), torch.arange(0, B)]).to(z.device)
    return F.cross_entropy(sim, positive)
