"""What every sequential recommender of the package shares: input checks, tied-embedding scoring, the
recommendation loss and checkpoint loading (docs/architecture.md, "Contracts"). Subclasses provide `item_emb`,
`n_items`, `config` (a ModelConfig), `model_name`, `encode`, `losses`, `aux_losses` and `save`."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from t2arec_fast.config import ModelConfig, upgrade_options
from t2arec_fast.errors import InputError
from t2arec_fast.ops.cross_entropy import IGNORE_INDEX, linear_cross_entropy

from .checkpoint import load_checkpoint
from .contrastive import augment, info_nce


def check_left_padded(item_ids: torch.Tensor) -> torch.Tensor:
    """item_ids (batch, L), 0 = padding, must be LEFT-padded with at least one item per row (docs/data.md).

    Returns the mask of real items (batch, L) bool.

    Raises:
        InputError: naming the first row where padding follows an item, or that holds no item.
    """
    real = item_ids != 0
    gap = real[:, :-1] & ~real[:, 1:]
    if gap.any():
        raise InputError(f"row {int(gap.any(1).nonzero()[0])} is not LEFT-padded: padding (0) follows a real item")
    if not real[:, -1].all():
        raise InputError(f"row {int((~real[:, -1]).nonzero()[0])} has no items (all padding)")
    return real


class SequentialRecommender(nn.Module):
    """Base class of T2ARec and SASRec: what train, evaluate, adapt and the CLI may use of any model."""

    item_emb: nn.Embedding                   # (n_items + 1, d), row 0 = padding; also the scoring head (tied)
    n_items: int
    config: ModelConfig
    model_name: str                          # the key of model.MODEL_CLASSES a checkpoint is loaded by
    id_maps: Optional[dict] = None           # raw ids by model id, set when loaded from a checkpoint that has them
    checkpoint_meta: Optional[dict] = None   # the checkpoint's config.json, set when loaded from one
    uses_alignment: bool = False             # has the alignment losses (and so a test-time step that changes it)

    # -- input checks (public entry points only; the training loop uses the unchecked paths) -------------------
    def check_inputs(self, item_ids: torch.Tensor, timestamps: Optional[torch.Tensor] = None) -> None:
        """A valid batch: item_ids int64 (batch, L), LEFT-padded with 0, ids in [0, n_items]; timestamps, when
        given, int64 (batch, L) unix seconds, non-decreasing along each row's real events (docs/data.md).

        Raises:
            InputError: the first violation, naming the row and column (or the shape and dtype found).
        """
        if not isinstance(item_ids, torch.Tensor) or item_ids.dim() != 2:
            raise InputError(f"item_ids must be a (batch, L) tensor, got {getattr(item_ids, 'shape', type(item_ids))}")
        if item_ids.dtype != torch.int64:
            raise InputError(f"item_ids must be int64, got {item_ids.dtype}")
        if item_ids.shape[0] == 0 or item_ids.shape[1] == 0:
            raise InputError(f"empty batch: item_ids has shape {tuple(item_ids.shape)}")
        lo, hi = int(item_ids.min()), int(item_ids.max())
        if lo < 0 or hi > self.n_items:
            bad = ((item_ids < 0) | (item_ids > self.n_items)).nonzero()[0].tolist()
            raise InputError(f"item id {int(item_ids[bad[0], bad[1]])} at (row {bad[0]}, column {bad[1]}) is outside "
                             f"[0, {self.n_items}] (0 = padding)")
        real = check_left_padded(item_ids)
        if timestamps is not None:
            self._check_timestamps(item_ids, real, timestamps)

    @staticmethod
    def _check_timestamps(item_ids, real, timestamps) -> None:
        if not isinstance(timestamps, torch.Tensor) or timestamps.shape != item_ids.shape:
            raise InputError(f"timestamps must have item_ids' shape {tuple(item_ids.shape)}, "
                             f"got {getattr(timestamps, 'shape', type(timestamps))}")
        if timestamps.dtype != torch.int64:
            raise InputError(f"timestamps must be int64 seconds, got {timestamps.dtype} (float32 cannot hold unix "
                             "seconds exactly)")
        backwards = real[:, 1:] & real[:, :-1] & (timestamps[:, 1:] < timestamps[:, :-1])
        if backwards.any():
            row, col = backwards.nonzero()[0].tolist()
            raise InputError(f"timestamps go backwards in row {row} at column {col + 1} "
                             f"({int(timestamps[row, col])} → {int(timestamps[row, col + 1])})")

    # -- scoring ------------------------------------------------------------------------------------------------
    def score_from(self, o: torch.Tensor) -> torch.Tensor:
        """Tied-embedding scores o · Eᵀ for output vectors o (..., d) float → (..., n_items + 1); padding column 0
        = −inf. Unchecked (o comes from the model)."""
        logits = o @ self.item_emb.weight.t()
        logits[..., 0] = float("-inf")
        return logits

    def scores(self, item_ids: torch.Tensor, timestamps: Optional[torch.Tensor] = None,
               request_times: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(batch, n_items + 1) scores of each row's next item from `encode`; inputs as in `check_inputs`.
        request_times (t_{n+1}) matter only to a model that scores at the request time; ignored here.

        Raises:
            InputError: a batch `check_inputs` refuses.
        """
        return self.score_from(self.encode(item_ids, timestamps)[0])

    def recommendation_loss(self, o: torch.Tensor, mask: torch.Tensor, next_items: torch.Tensor) -> torch.Tensor:
        """Cross-entropy at every real position over the n_items real items (docs/model.md §2.4), through
        `ops.linear_cross_entropy` (config `ce_impl`): the (positions × items) logits are never held at once.
        Scoring columns 1..n_items only leaves no −inf padding column. Eager code keeps the real positions only
        (fewer rows); under torch.compile every position enters with padding ignored, so shapes stay static."""
        weight = self.item_emb.weight[1:]
        impl = self.config.ce_impl
        if torch.compiler.is_compiling():
            targets = torch.where(mask, next_items - 1, IGNORE_INDEX).reshape(-1)
            return linear_cross_entropy(o.reshape(-1, o.shape[-1]), weight, targets, impl=impl)
        return linear_cross_entropy(o[mask], weight, next_items[mask] - 1, impl=impl)

    def sequence_output(self, item_ids: torch.Tensor) -> torch.Tensor:
        """o_n, the last position's output (batch, d), of a LEFT-padded (batch, L) int64 batch; unchecked, in
        training mode when the model is (dropout on): the representation the contrastive loss compares."""
        raise NotImplementedError

    def contrastive_loss(self, item_ids: torch.Tensor, timestamps: torch.Tensor, train) -> torch.Tensor:
        """L_cl of two augmented views of every row (model/contrastive.py; docs/model.md, "Contrastive
        augmentation"): item_ids, timestamps (batch, L) int64 LEFT-padded training inputs; `train` a TrainConfig
        (cl_crop, cl_drop, cl_reorder, cl_temperature). Both views run as one (2·batch, L) pass. → 0-dim float."""
        views = [augment(item_ids, timestamps, train.cl_crop, train.cl_drop, train.cl_reorder) for _ in range(2)]
        z = self.sequence_output(torch.cat([views[0][0], views[1][0]]))
        return info_nce(z[:item_ids.shape[0]], z[item_ids.shape[0]:], train.cl_temperature)

    # -- persistence --------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, directory, map_location="cpu"):
        """The model saved in `directory`, which must be a `cls` (else InputError); see checkpoint.load_checkpoint,
        whose errors it raises."""
        return load_checkpoint(directory, map_location=map_location, expect=cls)

    @classmethod
    def from_config(cls, cfg: dict):
        """The model a checkpoint's config.json describes (options removed since it was saved are dropped when
        off, refused when on — config.REMOVED_OPTIONS; renamed ones
        load under their new names — config.RENAMED_OPTIONS)."""
        cfg = upgrade_options(cfg, "checkpoint config")
        return cls(cfg.pop("n_items"), **cfg)
