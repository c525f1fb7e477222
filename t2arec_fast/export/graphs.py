"""The PyTorch modules that are traced into ONNX graphs, and the graphs' input/output names.

Each wrapper only re-packs tensors around the model's own code paths — `T2ARec._run_sequence` for `encode`,
`T2ARec.embed` + `T2ARec.run_step` (+ `score_from`) for `step` — so the graphs are exported from the same modules
that PyTorch runs; there is no second, hand-written model to keep in sync.

State layout (the same as a list of `BlockState`): block i contributes two tensors,
    conv_i: (batch, conv_kernel − 1, d + 2·d_state)   the carried conv window
    ssm_i:  (batch, d_state, d)                       the scan state h
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn

from t2arec_fast.model.block import BlockState

GRAPH_KINDS = ("encode", "step", "step_topk")
ITEM_IDS = "item_ids"
OUTPUT = "o_n"
TOP_K = "k"
SCORES, TOP_SCORES, TOP_ITEMS = "scores", "top_scores", "top_items"


def state_names(n_layers: int, prefix: str = "") -> List[str]:
    """conv_0, ssm_0, conv_1, ... (with a prefix for the step graph's outputs, whose names must differ)."""
    return [f"{prefix}{part}_{i}" for i in range(n_layers) for part in ("conv", "ssm")]


def flatten_states(states: Sequence[BlockState]) -> List[torch.Tensor]:
    """[BlockState per block] → [conv_0, ssm_0, conv_1, ...], the graphs' order."""
    return [t for st in states for t in (st.conv, st.ssm)]


def unflatten_states(tensors: Sequence) -> List[BlockState]:
    """Inverse of `flatten_states`."""
    return [BlockState(tensors[i], tensors[i + 1]) for i in range(0, len(tensors), 2)]


def io_names(kind: str, n_layers: int):
    """→ (input names, output names) of one graph kind."""
    if kind == "encode":
        return [ITEM_IDS], [OUTPUT, *state_names(n_layers)]
    inputs = [ITEM_IDS, *state_names(n_layers)]
    outputs = [OUTPUT, *state_names(n_layers, prefix="next_")]
    if kind == "step_topk":
        return inputs + [TOP_K], outputs + [SCORES, TOP_SCORES, TOP_ITEMS]
    return inputs, outputs


def dynamic_axes(kind: str, n_layers: int) -> dict:
    """Batch is dynamic everywhere; the sequence length only on encode's input."""
    inputs, outputs = io_names(kind, n_layers)
    axes = {name: {0: "batch"} for name in inputs + outputs if name != TOP_K}
    if kind == "encode":
        axes[ITEM_IDS] = {0: "batch", 1: "length"}
    return axes


class EncodeGraph(nn.Module):
    """item_ids (batch, L) left-padded int64 → o_n (batch, d), conv_0, ssm_0, ... (final states)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, item_ids):
        o, states, _ = self.model._run_sequence(item_ids, last_only=True)
        return (o[:, -1], *flatten_states(states))


class StepGraph(nn.Module):
    """item_ids (batch,), conv_0, ssm_0, ... → o (batch, d), next_conv_0, next_ssm_0, ...

    With `top_k` set, also the scores (batch, n_items + 1; column 0 = −inf) and their top-k. The traced k is a
    placeholder: the exporter rewires the TopK node to the graph input `k` so that callers choose k per call.
    """

    def __init__(self, model, top_k: int = 0):
        super().__init__()
        self.model = model
        self.top_k = top_k

    def forward(self, item_ids, *states):
        o, new_states, _ = self.model.run_step(self.model.embed(item_ids), unflatten_states(states))
        outputs = (o, *flatten_states(new_states))
        if self.top_k:
            scores = self.model.score_from(o)
            top_scores, top_items = torch.topk(scores, self.top_k, dim=-1)
            outputs += (scores, top_scores, top_items)
        return outputs


def example_inputs(kind: str, model, batch: int = 3, length: int = 11, seed: int = 0):
    """Random inputs with mixed lengths (left padding) and non-trivial states, for tracing and validation.

    Batch and length differ from each other and from 1 so that no exporter mistakes a dynamic axis for a constant.
    """
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, model.n_items + 1, (batch, length), generator=g)
    for row in range(1, batch):                       # row 0 full, the others shorter (at least one item)
        ids[row, : min(length - 1, row * length // batch)] = 0
    if kind == "encode":
        return (ids,)
    with torch.no_grad():
        _, states, _ = model._run_sequence(ids)       # realistic states: the result of encoding a history
    step_ids = torch.randint(1, model.n_items + 1, (batch,), generator=g)
    return (step_ids, *flatten_states(states))
