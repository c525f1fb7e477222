"""SASRec baseline (Kang & McAuley 2018) as RecBole trains it, behind the same interface as T2ARec.

item embedding + learned position embedding → LayerNorm → Dropout → `n_layers` post-LN Transformer blocks
(causal multi-head self-attention, GELU FFN of width 4d) → o_i; scores = o · Eᵀ (tied embedding); softmax
cross-entropy over all items at every non-pad position (RecBole's loss_type="CE").

Positions (option `position_origin`), both independent of how much left padding a batch adds (a padded and an
unpadded sequence give the same o_n); longer inputs keep their last max_len items:
  * "end" (the default; the original SASRec code): a batch of width L uses positions max_len−L .. max_len−1, so the
    most recent input always has position max_len−1. Only the last column's query sees that layout at training
    time: a query at column j < L−1 sees its history ending at position max_len−L+j, while at inference the
    history always ends at max_len−1.
  * "start" (RecBole): the first real input of each row has position 0, so position i means "the i-th event of the
    history" for every query of the causal pass, in training and at inference alike. On amazon-beauty both give
    the same validation curve (docs/results.md, "Why our SASRec trailed RecBole's").
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from t2arec_fast.config import ModelConfig
from t2arec_fast.errors import InputError

from .base import SequentialRecommender
from .checkpoint import save_checkpoint


POSITION_ORIGINS = ("end", "start")


class CausalSelfAttentionBlock(nn.Module):
    """Post-LN Transformer layer (RecBole's TransformerLayer): x ← LN(x + Drop(MHA(x))); x ← LN(x + Drop(FFN(x)))."""

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        if d % n_heads:
            raise ValueError(f"SASRec: d={d} must be divisible by n_heads={n_heads}")
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.out_proj = nn.Linear(d, d)
        self.norm1 = nn.LayerNorm(d, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.norm2 = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """h: (batch, L, d); attn_mask: (batch, 1, L, L) bool, True = may attend."""
        batch, L, d = h.shape
        q, k, v = self.qkv(h).view(batch, L, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        h = self.norm1(h + self.drop(self.out_proj(a.transpose(1, 2).reshape(batch, L, d))))
        return self.norm2(h + self.drop(self.ffn(h)))


class SASRec(SequentialRecommender):
    """The SASRec baseline (module docstring). n_items: real items 1..n_items (0 = padding); max_len: positions
    (longer inputs keep their last max_len items); d, n_layers, n_heads, dropout; options: other ModelConfig fields
    (position_origin, ce_impl). Keeps no recurrent state, so it is not a model.StepModel (serving refuses it).

    Raises:
        InputError: n_items < 1 or max_len < 1.
        ValueError: d not divisible by n_heads.
        ConfigError: an option value that ModelConfig refuses.
        TypeError: an option ModelConfig does not have.
    """

    model_name = "sasrec"

    def __init__(self, n_items: int, max_len: int = 200, d: int = 64, n_layers: int = 2, n_heads: int = 2,
                 dropout: float = 0.2, **options):
        super().__init__()
        if n_items < 1:
            raise InputError(f"SASRec: n_items must be ≥ 1, got {n_items}")
        if max_len < 1:
            raise InputError(f"SASRec: max_len must be ≥ 1, got {max_len}")
        options["model"] = self.model_name
        self.config = ModelConfig(d=d, n_layers=n_layers, n_heads=n_heads, dropout=dropout, **options)
        self.n_items, self.max_len = n_items, max_len
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, d)
        self.emb_norm = nn.LayerNorm(d, eps=1e-12)
        self.emb_drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(CausalSelfAttentionBlock(d, n_heads, dropout) for _ in range(n_layers))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        """RecBole's initialisation: N(0, 0.02) weights, zero biases, LayerNorm (1, 0)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # -- forward --------------------------------------------------------------------------------------------------
    def _run_sequence(self, item_ids: torch.Tensor) -> torch.Tensor:
        """All positions: item_ids (batch, L) LEFT-padded → o (batch, L, d). Causal: o_i sees items ≤ i only."""
        item_ids = item_ids[:, -self.max_len:]
        L = item_ids.shape[1]
        real = item_ids != 0
        positions = self._positions(real)
        h = self.emb_drop(self.emb_norm(self.item_emb(item_ids) + self.pos_emb(positions)))
        causal = torch.ones(L, L, dtype=torch.bool, device=item_ids.device).tril()
        # a pad query sees only itself (its output is never used); real queries never see pad keys
        attn_mask = ((causal & real[:, None, :]) | torch.eye(L, dtype=torch.bool, device=item_ids.device))[:, None]
        for layer in self.layers:
            h = layer(h, attn_mask)
        return h

    def _positions(self, real: torch.Tensor) -> torch.Tensor:
        """Position ids (batch, L) or (L,) of a LEFT-padded batch whose real inputs are `real` (batch, L) bool."""
        L = real.shape[1]
        if self.config.position_origin == "start":
            return (real.cumsum(1) - 1).clamp_min(0)              # pads (left of the first input) share id 0
        return torch.arange(self.max_len - L, self.max_len, device=real.device)

    def sequence_output(self, item_ids: torch.Tensor) -> torch.Tensor:
        return self._run_sequence(item_ids)[:, -1]

    def encode(self, item_ids: torch.Tensor, timestamps: Optional[torch.Tensor] = None):
        """item_ids (batch, L) int64 LEFT-padded; timestamps (batch, L) int64 seconds, optional, checked but not
        used. → (o_n (batch, d), None): SASRec keeps no recurrent state.

        Raises:
            InputError: a batch `check_inputs` refuses (naming row and column).
        """
        self.check_inputs(item_ids, timestamps)
        return self._run_sequence(item_ids)[:, -1], None

    # -- losses -------------------------------------------------------------------------------------------------
    def losses(self, item_ids, timestamps, next_items, target_times, with_aux: bool = True):
        """rec = CE (mean) at every position that has a target (next_items ≠ 0: every non-pad position of a window,
        the last one of a prefix sample); SASRec has no alignment losses (time = state = 0)."""
        o = self._run_sequence(item_ids)
        next_items = next_items[:, -self.max_len:]
        rec = self.recommendation_loss(o, next_items != 0, next_items)
        zero = rec.new_zeros(())
        return {"rec": rec, "time": zero, "state": zero}

    def aux_losses(self, item_ids, timestamps, target_times):
        """No self-supervised losses: zeros without a graph, so the test-time step leaves SASRec unchanged."""
        o_n = self._run_sequence(item_ids)[:, -1]
        zero = o_n.new_zeros(())
        return {"time": zero, "state": zero, "o_n": o_n}

    # -- persistence --------------------------------------------------------------------------------------------
    def save(self, directory, id_maps: Optional[dict] = None, extra: Optional[dict] = None) -> None:
        """Weights and config into `directory` (model/checkpoint.py); read back by `SASRec.load` / `load_model`."""
        config = {"n_items": self.n_items, "max_len": self.max_len, **dataclasses.asdict(self.config)}
        save_checkpoint(self, directory, config, id_maps=id_maps, extra=extra)
