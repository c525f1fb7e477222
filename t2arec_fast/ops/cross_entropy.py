"""Cross-entropy over all items without materialising the (rows × items) logits.

    loss = mean over kept rows r of  logsumexp_v(h_r · w_v) − h_r · w_{t_r}          (rows with t_r = ignore_index
                                                                                     are left out of sum and count)

Training scores every position of every sequence against every item (docs/model.md, the recommendation loss): at
batch 4096 × 200 positions × 3,706 items the logits alone are 12 GB in float32. Three implementations of the one
definition above, chosen by `impl`:
  * "plain":   logits = h Wᵀ, then F.cross_entropy — the definition, and the fastest while the logits fit;
  * "chunked": rows in chunks of `chunk_rows`; the forward keeps only each row's log-sum-exp, the backward
               recomputes each chunk's logits (a custom autograd.Function): peak extra memory chunk_rows × items;
  * "liger":   liger-kernel's fused linear cross-entropy (Triton; the optional extra `gpu`), for CUDA tensors;
  * "auto":    "liger" on CUDA when liger-kernel is installed; else "plain" while the logits fit in one chunk
               (CHUNK_LOGITS: chunking would save nothing and "plain" is faster), "chunked" beyond.
Accumulation is in float32 at least (float64 inputs stay float64), whatever the inputs' dtype (bf16 autocast).
"""
from __future__ import annotations

import functools
import importlib.util
import os
from typing import Optional

import torch
import torch.nn.functional as F

from t2arec_fast.optional import require

from ._backend import check_choice

CE_IMPLS = ("auto", "plain", "chunked", "liger")
IGNORE_INDEX = -100
# Rows per chunk: 2^26 logits (256 MiB in float32) per chunk, e.g. 18,000 rows at 3,706 items.
CHUNK_LOGITS = 1 << 26


@functools.lru_cache(maxsize=None)
def liger_available() -> bool:
    """liger-kernel (optional extra `gpu`) is installed."""
    return importlib.util.find_spec("liger_kernel") is not None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                         ignore_index: int = IGNORE_INDEX, impl: str = "auto",
                         chunk_rows: Optional[int] = None) -> torch.Tensor:
    """Mean cross-entropy of the logits hidden @ weightᵀ against `targets`, never holding all logits at once.

    hidden: (rows, d); weight: (items, d); targets: (rows,) int64 in [0, items) or `ignore_index` (row left out).
    → 0-dim tensor in hidden's dtype (NaN when every row is ignored, as F.cross_entropy). chunk_rows: rows per
    chunk for impl="chunked" (None: CHUNK_LOGITS / items). Source: this module's docstring; docs/model.md.

    Raises:
        ValueError: bad shapes, an unknown impl, or impl="liger" on CPU tensors outside Triton's interpreter.
        MissingExtraError: impl="liger" without liger-kernel (the extra `gpu`).
    """
    check_choice("cross-entropy implementation", impl, CE_IMPLS)
    if (hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]
            or targets.shape != hidden.shape[:1]):
        raise ValueError(f"linear_cross_entropy: need hidden (rows, d), weight (items, d), targets (rows,); got "
                         f"{tuple(hidden.shape)}, {tuple(weight.shape)}, {tuple(targets.shape)}")
    if impl == "auto":
        small = hidden.shape[0] * weight.shape[0] <= CHUNK_LOGITS
        impl = "liger" if hidden.is_cuda and liger_available() else "plain" if small else "chunked"
    if impl == "plain":
        return F.cross_entropy(_chunk_logits(hidden, weight), targets, ignore_index=ignore_index).to(hidden.dtype)
    if impl == "liger":
        return _liger(hidden, weight, targets, ignore_index)
    rows = chunk_rows or max(1, CHUNK_LOGITS // max(weight.shape[0], 1))
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, targets, ignore_index, rows)


def _liger(hidden, weight, targets, ignore_index):
    if not hidden.is_cuda and os.environ.get("TRITON_INTERPRET", "0") != "1":
        raise ValueError("impl='liger' runs liger-kernel's Triton kernel: it needs CUDA tensors (or Triton's "
                         "interpreter, TRITON_INTERPRET=1); use impl='chunked' on CPU")
    liger = require("liger_kernel.transformers", "gpu", "The fused linear cross-entropy (ce_impl='liger')")
    loss = liger.LigerFusedLinearCrossEntropyLoss(ignore_index=ignore_index, reduction="mean")
    return loss(weight, hidden, targets)


def _chunk_logits(h, weight):
    acc = torch.float64 if torch.float64 in (h.dtype, weight.dtype) else torch.float32
    return (h @ weight.t()).to(acc)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Forward: per chunk, log-sum-exp and the target's logit (kept: rows floats). Backward: per chunk, recompute
    the logits, softmax − one-hot, scaled by the upstream gradient over the kept-row count:
        dH = G W,   dW = Gᵀ H   with G = (softmax(H Wᵀ) − onehot(t)) · keep / n_kept."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, chunk_rows):
        keep = targets != ignore_index
        safe = torch.where(keep, targets, 0)
        total = hidden.new_zeros((), dtype=torch.float64 if hidden.dtype == torch.float64 else torch.float32)
        for start in range(0, hidden.shape[0], chunk_rows):
            logits = _chunk_logits(hidden[start:start + chunk_rows], weight)
            rows = slice(start, start + chunk_rows)
            picked = logits.gather(1, safe[rows, None])[:, 0]
            total = total + ((torch.logsumexp(logits, dim=1) - picked) * keep[rows]).sum()
        count = keep.sum()
        ctx.save_for_backward(hidden, weight, safe, keep, count)
        ctx.chunk_rows = chunk_rows
        return (total / count).to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, safe, keep, count = ctx.saved_tensors
        d_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        d_weight = torch.zeros(weight.shape, dtype=torch.float64 if weight.dtype == torch.float64 else torch.float32,
                               device=weight.device) if ctx.needs_input_grad[1] else None
        scale = grad / count
        for start in range(0, hidden.shape[0], ctx.chunk_rows):
            rows = slice(start, start + ctx.chunk_rows)
            h = hidden[rows]
            g = torch.softmax(_chunk_logits(h, weight), dim=1)
            g[torch.arange(g.shape[0], device=g.device), safe[rows]] -= 1.0
            g = g * (keep[rows, None] * scale)
            if d_hidden is not None:
                d_hidden[rows] = (g @ weight.to(g.dtype)).to(hidden.dtype)
            if d_weight is not None:
                d_weight += g.t() @ h.to(g.dtype)
        return d_hidden, None if d_weight is None else d_weight.to(weight.dtype), None, None, None
