"""Models: T2ARec (and its backbone, the same network without alignment) and the SASRec baseline."""
from __future__ import annotations

import dataclasses

from .block import BlockState, T2AMambaBlock
from .checkpoint import load_checkpoint
from .losses import estimate_time_margin, interest_state_loss, time_interval_loss
from .sasrec import SASRec
from .t2arec import T2ARec

MODEL_CLASSES = {"t2arec": T2ARec, "backbone": T2ARec, "sasrec": SASRec}

# options of ModelConfig that only SASRec uses / only T2ARec uses
_T2AREC_ONLY = {"d_state", "conv_kernel", "backend", "gap_transform", "pair_block", "dt_transform",
                "count_tied_pairs", "time_margin", "state_floor", "state_norm", "aux_stop_embedding"}


def build_model(model_cfg, n_items: int, max_len: int = 200):
    """A fresh model from a ModelConfig: "t2arec" | "backbone" (T2ARec) or "sasrec" (SASRec, with max_len
    positions), for items 1..n_items. n_layers None means each model's default (1 for T2ARec, 2 for SASRec).

    Raises:
        ValueError: an unknown model name (or what the model's constructor raises).
    """
    fields = dataclasses.asdict(model_cfg)
    name = fields["model"]
    if name in ("t2arec", "backbone"):
        fields.pop("n_heads")
        d, d_state, n_layers = fields.pop("d"), fields.pop("d_state"), fields.pop("n_layers")
        return T2ARec(n_items, d=d, d_state=d_state, n_layers=1 if n_layers is None else n_layers, **fields)
    if name == "sasrec":
        kwargs = {k: v for k, v in fields.items() if k not in _T2AREC_ONLY and k != "model"}
        if kwargs["n_layers"] is None:
            kwargs["n_layers"] = 2
        return SASRec(n_items, max_len=max_len, **kwargs)
    raise ValueError(f"unknown model {name!r}; expected t2arec, backbone or sasrec")


def load_model(directory, map_location="cpu"):
    """Load any model saved by `model.save(directory)`, in eval mode on `map_location`.

    Raises:
        FileNotFoundError, InputError, ConfigError: as checkpoint.load_checkpoint (a missing file; an unreadable,
            inconsistent or unknown checkpoint, named; a removed option switched on).
    """
    return load_checkpoint(directory, map_location=map_location)


__all__ = ["T2ARec", "SASRec", "T2AMambaBlock", "BlockState", "build_model", "load_model",
           "time_interval_loss", "interest_state_loss", "estimate_time_margin", "MODEL_CLASSES"]
