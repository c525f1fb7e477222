"""Readouts: which output vector T2ARec's scores are read from (option `readout`; docs/model.md, "Readout").

    "last"          the paper: score o_n (training: o_i at every position i).
    "extrapolated"  beyond the paper: score ô_{n+1}, one more step of the model's one-step update fed with o_n from
                    the final states — the extrapolation the alignment losses make for Δ̂_{n+1}.
    "request_gap"   as "extrapolated", fed with o_n + E_gap[⌊log2(1 + T_{n+1} in minutes)⌋], T_{n+1} = request time
                    − last event (a 24-row embedding, starting at 0).

A readout owns everything that differs between them: what the training loss scores at every position, what is
scored from an encoded state (serving's O(1) path), whether it needs the request time and whether the ONNX graphs
(which score o_n) can serve it. T2ARec builds one from its config (`make_readout`); nothing else branches on the
option.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn as nn

from .block import BlockInternals, BlockState
from .losses import gap_buckets

READOUTS = ("last", "extrapolated", "request_gap")
REQUEST_GAP_BUCKETS = 24          # log2-minute buckets of the request gap (readout "request_gap")


class LastReadout:
    """The paper's readout: scores from o_n."""
    name = "last"
    needs_request_time = False
    exports = True                # the ONNX graphs score o_n

    def training_outputs(self, model, o: torch.Tensor, internals: List[BlockInternals],
                         next_gaps: Optional[torch.Tensor]) -> torch.Tensor:
        """What the recommendation loss scores at every position: o (batch, L, d) itself."""
        return o

    def output_from_state(self, model, o_n: torch.Tensor, states: List[BlockState],
                          request_gaps: Optional[torch.Tensor]) -> torch.Tensor:
        """What is scored after an encode or step: o_n (batch, d) itself; the states are not read."""
        return o_n


class ExtrapolatedReadout:
    """Scores from ô_{n+1} = one more step fed with o_n (+ the request gap's embedding when `gap_embedding` is set).

    gap_embedding: the model's (REQUEST_GAP_BUCKETS, d) nn.Embedding of readout "request_gap" (registered on the
    model, so checkpoints and test-time parameter groups see it under `request_gap_emb`), or None.
    """
    exports = False               # the ONNX graphs score o_n; this readout needs one more step

    def __init__(self, gap_embedding: Optional[nn.Embedding] = None):
        self.gap_embedding = gap_embedding
        self.name = "extrapolated" if gap_embedding is None else "request_gap"

    @property
    def needs_request_time(self) -> bool:
        """True for "request_gap": the extra step is fed the request gap's embedding."""
        return self.gap_embedding is not None

    def _step_input(self, o: torch.Tensor, gaps: Optional[torch.Tensor]) -> torch.Tensor:
        """What the extra step is fed: o (…, d), plus the request gap's embedding for "request_gap"."""
        if self.gap_embedding is None:
            return o
        return o + self.gap_embedding(gap_buckets(gaps, REQUEST_GAP_BUCKETS))

    def training_outputs(self, model, o: torch.Tensor, internals: List[BlockInternals],
                         next_gaps: Optional[torch.Tensor]) -> torch.Tensor:
        """ô_{i+1} at every position i (batch, L, d), in one pass; next_gaps (batch, L) int64 = t_{i+1} − t_i."""
        return model.extrapolate_sequence(self._step_input(o, next_gaps), internals)

    def output_from_state(self, model, o_n: torch.Tensor, states: List[BlockState],
                          request_gaps: Optional[torch.Tensor]) -> torch.Tensor:
        """ô_{n+1} (batch, d): one step from `states` fed with o_n; request_gaps (batch,) int64 seconds."""
        return model.run_step(self._step_input(o_n, request_gaps), states)[0]


def make_readout(name: str, gap_embedding: Optional[nn.Embedding] = None):
    """The readout object for option `name` (one of READOUTS); gap_embedding: the (REQUEST_GAP_BUCKETS, d)
    embedding, given for "request_gap" and only for it.

    Raises:
        ValueError: an unknown name, or a gap embedding missing for "request_gap" / given for another readout.
    """
    if name not in READOUTS:
        raise ValueError(f"unknown readout {name!r}; expected one of {READOUTS}")
    if (name == "request_gap") != (gap_embedding is not None):
        raise ValueError(f"readout {name!r}: a gap embedding is required by 'request_gap' and used by no other")
    return LastReadout() if name == "last" else ExtrapolatedReadout(gap_embedding)
