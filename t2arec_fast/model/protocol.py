"""The contract between a recurrent recommender and what runs it online (docs/architecture.md, "Contracts").

`StepModel` is everything `OnlineRecommender` (t2arec_fast/serving/) uses of a model. Two classes implement it:
`T2ARec` (PyTorch) and `export.runtime.OnnxStepModel` (encode and step in ONNX Runtime). SASRec does not: it keeps
no recurrent state, so serving refuses it by this type (`OnlineRecommender` raises InputError).
"""
from __future__ import annotations

from typing import List, Optional, Protocol, Tuple, runtime_checkable

import torch

from .block import BlockState


@runtime_checkable
class StepModel(Protocol):
    """A recommender whose state after n events is a fixed-size `BlockState` per block, advanced in O(1) per event.

    Shapes: batch of users b, LEFT-padded sequences of length L, width d (`width`), item ids 1..n_items (0 = padding).
    """

    n_items: int
    id_maps: Optional[dict]          # raw ids by model id ({"item_ids": ..., "user_ids": ...}) when known, else None

    @property
    def width(self) -> int:
        """d: the length of o_n."""

    @property
    def needs_request_time(self) -> bool:
        """True when scores_from_state must be given the request time (readout "request_gap")."""

    def empty_states(self, batch: int, device=None, dtype=None) -> List[BlockState]:
        """The state before any event: one BlockState per block, all zeros."""

    def encode(self, item_ids: torch.Tensor, timestamps: Optional[torch.Tensor] = None
               ) -> Tuple[torch.Tensor, List[BlockState]]:
        """(b, L) int64 item ids (+ times) → (o_n (b, d), states after the last event)."""

    def step(self, item_ids_t: torch.Tensor, states: List[BlockState]) -> Tuple[torch.Tensor, List[BlockState]]:
        """One more event per user: (b,) int64 item ids → (o (b, d), new states), as encode of the longer sequence."""

    def step_in_place(self, item_ids_t: torch.Tensor, states: List[BlockState]) -> torch.Tensor:
        """`step` with `states` overwritten by the new states (views of any strides) → o (b, d); inputs unchecked."""

    def scores_from_state(self, o_n: torch.Tensor, states: List[BlockState], last_times: Optional[torch.Tensor] = None,
                          request_times: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(b, n_items + 1) scores (column 0 = −inf) from an encoded state; last_times, request_times (b,) int64."""

    def save(self, directory, id_maps: Optional[dict] = None, extra: Optional[dict] = None) -> None:
        """A checkpoint that `model.load_model` reads back."""

    def to(self, device):
        """The model on `device` (returns it)."""

    def eval(self):
        """The model in inference mode (returns it)."""
