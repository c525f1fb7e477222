"""T2ARec (model-spec §2-§4): embedding → T2A-Mamba layers (block, Add&Norm, FFN) → tied scoring head,
plus the two alignment losses computed from one forward pass.

Public API (other code relies on these names):
    T2ARec(n_items, d=64, d_state=32, n_blocks=1, **options)      options = ModelConfig fields
    encode(item_ids, timestamps) -> (o_n, states)                  LEFT-padded int64 (batch, L), 0 = padding
    scores(item_ids, timestamps, request_times=None) -> (batch, n_items + 1)   column 0 (padding) is −inf
    step(item_ids_t, states, gaps=None) -> (o, new_states)         one more event per user, O(1)
    losses(item_ids, timestamps, next_items, target_times) -> {"rec", "time", "state"}
    aux_losses(item_ids, timestamps, target_times) -> {"time", "state", "o_n"}
    save(dir) / T2ARec.load(dir)
"""
from __future__ import annotations

import dataclasses
import math
from typing import List, Optional

import torch
import torch.nn as nn

from t2arec_fast.config import ModelConfig
from t2arec_fast.errors import InputError
from t2arec_fast.ops import check_backend
from t2arec_fast.ops.export_scan import check_scan_form

from .block import BlockState, T2AMambaBlock
from .base import SequentialRecommender
from .checkpoint import save_checkpoint
from .losses import (event_gaps, gap_buckets, gap_feature, gap_sequence, interest_state_loss,
                     time_interval_loss)


READOUTS = ("last", "extrapolated", "request_gap")
REQUEST_GAP_BUCKETS = 24          # log2-minute buckets of the request gap (readout "request_gap")


class T2ALayer(nn.Module):
    """A T2A-Mamba block followed by Add & Norm and a position-wise FFN (model-spec §2.3)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.block = T2AMambaBlock(cfg.d, cfg.d_state, cfg.conv_kernel, backend=cfg.backend,
                                   time_aware_dt=cfg.time_aware_dt)
        self.drop = nn.Dropout(cfg.dropout)
        self.norm1 = nn.LayerNorm(cfg.d)
        self.ffn = nn.Sequential(nn.Linear(cfg.d, 4 * cfg.d), nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(4 * cfg.d, cfg.d))
        self.norm2 = nn.LayerNorm(cfg.d)

    def _finish(self, u, block_out):
        a = self.norm1(u + self.drop(block_out))
        return self.norm2(a + self.drop(self.ffn(a)))

    def forward(self, u, mask, state=None, last_only: bool = False, gap_feature=None):
        """last_only: Add&Norm and FFN at the last position only (position-wise, so o_n is the same) — for callers
        that need o_n and the block's internals but not o at every position."""
        out, new_state, internals = self.block(u, mask, state, gap_feature)
        if last_only:
            u, out = u[:, -1:], out[:, -1:]
        return self._finish(u, out), new_state, internals

    def step(self, u_t, state, gap_feature=None):
        out, new_state, internals = self.block.step(u_t, state, gap_feature)
        return self._finish(u_t, out), new_state, internals


class T2ARec(SequentialRecommender):
    model_name = "t2arec"

    def __init__(self, n_items: int, d: int = 64, d_state: int = 32, n_blocks: int = 1, **options):
        super().__init__()
        if n_items < 1:
            raise InputError(f"T2ARec: n_items must be ≥ 1, got {n_items}")
        if options.get("readout", "last") not in READOUTS:
            raise InputError(f"T2ARec: readout must be one of {READOUTS}, got {options['readout']!r}")
        options.setdefault("model", self.model_name)
        self.config = ModelConfig(d=d, d_state=d_state, n_blocks=n_blocks, **options)
        self.n_items = n_items
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.emb_drop = nn.Dropout(self.config.dropout)
        self.emb_norm = nn.LayerNorm(d)
        self.layers = nn.ModuleList(T2ALayer(self.config) for _ in range(n_blocks))
        # readout "request_gap": the extrapolation's input is o_n + an embedding of the request gap's bucket
        self.request_gap_emb = nn.Embedding(REQUEST_GAP_BUCKETS, d) if self.config.readout == "request_gap" else None
        # λ of L_time: estimated from training data by the trainer (set_time_margin), saved with the weights.
        self.register_buffer("time_margin", torch.tensor(float("nan"), dtype=torch.float64))
        self._init_weights()

    def _init_weights(self):
        nn.init.normal_(self.item_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
            if self.request_gap_emb is not None:       # 0: starts as the plain extrapolated readout
                self.request_gap_emb.weight.zero_()

    # -- configuration ------------------------------------------------------------------------------------------
    @property
    def uses_alignment(self) -> bool:
        """False for the backbone baseline (μ = 0, no test-time step)."""
        return self.config.model != "backbone"

    def set_time_margin(self, lam: float) -> None:
        if not (lam > 0 and math.isfinite(lam)):
            raise ValueError(f"time margin λ must be a positive finite number, got {lam}")
        self.time_margin.fill_(float(lam))

    @property
    def time_aware(self) -> bool:
        """Δ also sees the gap since the user's previous event (option time_aware_dt, beyond the paper)."""
        return self.config.time_aware_dt

    @property
    def extrapolated_readout(self) -> bool:
        """Scores come from ô_{n+1}, the one-step update fed with o_n at the request (option readout, beyond the
        paper): the extrapolation Δ̂_{n+1} of the alignment losses, trained by the recommendation loss.
        readout "request_gap" feeds it o_n + an embedding of the request gap instead."""
        return self.config.readout != "last"

    @property
    def needs_request_time(self) -> bool:
        """scores() must be told when each request is made (t_{n+1})."""
        return self.config.readout == "request_gap" or (self.extrapolated_readout and self.time_aware)

    def set_backend(self, backend: str, export_form: str = "matrix") -> None:
        """Run every scan with `backend` ("auto" | "triton" | "reference" | "loop" | "export"); export_form is the
        ONNX graph form of backend="export" ("matrix" | "linear_attention", docs/onnx.md).

        Raises:
            ValueError: unknown backend or export form.
        """
        check_backend(backend)
        check_scan_form(export_form)
        self.config.backend = backend
        for layer in self.layers:
            layer.block.backend, layer.block.export_form = backend, export_form

    # -- forward pieces -----------------------------------------------------------------------------------------
    def embed(self, item_ids: torch.Tensor, stop_grad: bool = False) -> torch.Tensor:
        """u = LayerNorm(Dropout(E[v])); stop_grad looks the table up through a stopped gradient."""
        emb = self.item_emb(item_ids)
        return self.emb_norm(self.emb_drop(emb.detach() if stop_grad else emb))

    def empty_states(self, batch: int, device=None, dtype=None) -> List[BlockState]:
        return [layer.block.empty_state(batch, device, dtype) for layer in self.layers]

    def _sequence_gap_feature(self, item_ids: torch.Tensor, timestamps: Optional[torch.Tensor]):
        """What a time-aware Δ sees at each position (None for the paper's Δ, which sees items only)."""
        if not self.time_aware:
            return None
        if timestamps is None:
            raise InputError("this model's Δ sees the time gaps (time_aware_dt=True): pass timestamps")
        gaps, valid = event_gaps(timestamps, item_ids != 0)
        return gap_feature(gaps, valid, self.config.gap_transform)

    def _step_gap_feature(self, gaps: Optional[torch.Tensor]):
        if not self.time_aware:
            return None
        if gaps is None:
            raise InputError("this model's Δ sees the time gaps (time_aware_dt=True): pass gaps (seconds since each "
                             "user's previous event, 0 for a first event)")
        return gap_feature(gaps, gaps > 0, self.config.gap_transform)

    def _run_sequence(self, item_ids: torch.Tensor, states: Optional[List[BlockState]] = None,
                      stop_embedding_grad: bool = False, last_only: bool = False,
                      timestamps: Optional[torch.Tensor] = None):
        """All positions: → (o (batch, L, d), final states, per-layer internals).

        stop_embedding_grad: the item table is looked up through a stopped gradient (aux_stop_embedding).
        last_only: o only at the last position, (batch, 1, d): the last layer's Add&Norm and FFN — two thirds of a
        layer's arithmetic — then run on one position instead of L (everything but the CE loss needs only o_n)."""
        mask = item_ids != 0
        gap_feat = self._sequence_gap_feature(item_ids, timestamps)
        h = self.embed(item_ids, stop_grad=stop_embedding_grad)
        new_states, internals = [], []
        last_layer = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h, st, inner = layer(h, mask, None if states is None else states[i], last_only and i == last_layer,
                                 gap_feat)
            new_states.append(st)
            internals.append(inner)
        return h, new_states, internals

    def _run_step(self, u_t: torch.Tensor, states: List[BlockState], gap_feat: Optional[torch.Tensor] = None):
        """One event per user given its input vector u_t (an embedding, or o_n for Δ̂_{n+1})."""
        h, new_states, internals = u_t, [], []
        for layer, st in zip(self.layers, states):
            h, st_new, inner = layer.step(h, st, gap_feat)
            new_states.append(st_new)
            internals.append(inner)
        return h, new_states, internals

    def _extrapolation_input(self, o: torch.Tensor, request_gaps: Optional[torch.Tensor]) -> torch.Tensor:
        """What the readout's extra step is fed: o (…, d), plus the request gap's embedding for "request_gap"."""
        if self.request_gap_emb is None:
            return o
        return o + self.request_gap_emb(gap_buckets(request_gaps, REQUEST_GAP_BUCKETS))

    def _extrapolate_sequence(self, o: torch.Tensor, internals, next_gaps: torch.Tensor,
                              mask: torch.Tensor) -> torch.Tensor:
        """ô_{i+1} at every position i: `_run_step` fed with o_i from the state after position i, for all i at once
        (training). next_gaps (batch, L): t_{i+1} − t_i, the request gap each position is scored at."""
        gap_feat = gap_feature(next_gaps, mask, self.config.gap_transform) if self.time_aware else None
        h = self._extrapolation_input(o, next_gaps)
        for layer, inner in zip(self.layers, internals):
            h = layer._finish(h, layer.block.extrapolate(h, inner, gap_feat))
        return h

    def scores_from_state(self, o_n: torch.Tensor, states: List[BlockState],
                          last_times: Optional[torch.Tensor] = None,
                          request_times: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scores from an encoded state (encode/step): score_from(o_n), or with an extrapolated readout one more
        step fed with o_n at the request — O(1), as serving needs. last_times, request_times: (batch,) int64 t_n
        and t_{n+1}, needed when `needs_request_time`."""
        if not self.extrapolated_readout:
            return self.score_from(o_n)
        gaps = None
        if self.needs_request_time:
            if request_times is None or last_times is None:
                raise InputError(f"this model scores at the request time (readout={self.config.readout!r}"
                                 f"{', time_aware_dt' if self.time_aware else ''}): pass request_times, int64 "
                                 "(batch,) unix seconds")
            gaps = request_times - last_times
        u = self._extrapolation_input(o_n, gaps)
        return self.score_from(self._run_step(u, states, self._step_gap_feature(gaps))[0])

    def _check_request_times(self, timestamps: Optional[torch.Tensor], request_times: Optional[torch.Tensor]) -> None:
        """Request times, when given: int64 (batch,), none before its row's last event."""
        if request_times is None or timestamps is None:
            return
        if request_times.dtype != torch.int64 or request_times.shape != timestamps.shape[:1]:
            raise InputError(f"request_times must be int64 ({timestamps.shape[0]},) unix seconds, got "
                             f"{request_times.dtype} {tuple(request_times.shape)}")
        early = request_times < timestamps[:, -1]
        if early.any():
            row = int(early.nonzero()[0])
            raise InputError(f"request time {int(request_times[row])} of row {row} precedes its last event "
                             f"({int(timestamps[row, -1])})")

    # -- public inference API -----------------------------------------------------------------------------------
    def encode(self, item_ids: torch.Tensor, timestamps: Optional[torch.Tensor] = None):
        """→ (o_n (batch, d), states: one BlockState per block)."""
        self.check_inputs(item_ids, timestamps)
        o, states, _ = self._run_sequence(item_ids, last_only=True, timestamps=timestamps)
        return o[:, -1], states

    def scores(self, item_ids: torch.Tensor, timestamps: Optional[torch.Tensor] = None,
               request_times: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(batch, n_items + 1) scores for each row's next item; request_times (batch,) int64 = t_{n+1}, needed
        when `needs_request_time` (ignored otherwise)."""
        self.check_inputs(item_ids, timestamps)
        self._check_request_times(timestamps, request_times)
        return self._scores_unchecked(item_ids, timestamps, request_times)

    def _scores_unchecked(self, item_ids: torch.Tensor, timestamps: Optional[torch.Tensor] = None,
                          request_times: Optional[torch.Tensor] = None) -> torch.Tensor:
        """scores() without the input checks, whose data-dependent branches torch.func.vmap cannot trace
        (per-user test-time steps, adapt.py). Callers have checked the batch already."""
        o, states, _ = self._run_sequence(item_ids, last_only=True, timestamps=timestamps)
        last_times = None if timestamps is None else timestamps[:, -1]
        return self.scores_from_state(o[:, -1], states, last_times, request_times)

    def step(self, item_ids_t: torch.Tensor, states: List[BlockState], gaps: Optional[torch.Tensor] = None):
        """One new event per user: item_ids_t (batch,) int64 (no padding) → (o (batch, d), new states).
        gaps (batch,) int64: seconds since each user's previous event (0 for a first event); a time-aware model
        needs them, the paper's ignores them."""
        if item_ids_t.dim() != 1 or item_ids_t.dtype != torch.int64:
            raise InputError(f"step: item ids must be int64 (batch,), got {item_ids_t.dtype} {tuple(item_ids_t.shape)}")
        if item_ids_t.numel() and (int(item_ids_t.min()) < 1 or int(item_ids_t.max()) > self.n_items):
            raise InputError(f"step: item ids must lie in [1, {self.n_items}]")
        bad_gaps = gaps is not None and (gaps.shape != item_ids_t.shape or gaps.dtype != torch.int64
                                         or bool((gaps < 0).any()))
        if bad_gaps:
            raise InputError(f"step: gaps must be non-negative int64 seconds of shape {tuple(item_ids_t.shape)}, got "
                             f"{gaps.dtype} {tuple(gaps.shape)}")
        o, new_states, _ = self._run_step(self.embed(item_ids_t), states, self._step_gap_feature(gaps))
        return o, new_states

    def forward(self, item_ids, timestamps=None, target_times=None, task: str = "scores"):
        """Module entry point, so torch.func.functional_call can run any task with substituted parameters:
        "scores" → scores(); "encode" → encode(); "aux" → aux_losses() (needs target_times)."""
        if task == "scores":
            return self.scores(item_ids, timestamps, target_times)
        if task == "encode":
            return self.encode(item_ids, timestamps)
        if task == "aux":
            return self.aux_losses(item_ids, timestamps, target_times)
        raise ValueError(f"unknown task {task!r}; expected 'scores', 'encode' or 'aux'")

    # -- losses -------------------------------------------------------------------------------------------------
    def _alignment_losses(self, o_n, timestamps, mask, target_times, states, internals):
        """L_time and L_state from one pass (model-spec §3, §4), averaged over blocks.

        Δ̂_{n+1}, x̂, B̂ and ĥ_{n+1} come from the one-step update fed with o_n (detached), exactly as serving
        would advance the state — one definition of the block's maths.
        """
        cfg = self.config
        gaps, valid = gap_sequence(timestamps, mask, target_times)
        _, _, next_internals = self._run_step(o_n.detach(), states, self._step_gap_feature(gaps[:, -1]))
        margin = float(self.time_margin) if torch.isfinite(self.time_margin) else 1.0
        l_time = o_n.new_zeros(())
        l_state = o_n.new_zeros(())
        for layer, inner, nxt in zip(self.layers, internals, next_internals):
            steps = torch.cat([inner.dt, nxt.dt[:, None]], dim=1)
            if cfg.step_transform == "log":   # the hinge compares orderings; log Δ makes its margin scale-free
                steps = steps.clamp_min(1e-12).log()
            l_time = l_time + time_interval_loss(steps, gaps, valid, margin, cfg.pair_block, cfg.gap_transform,
                                                 cfg.count_tied_pairs)
            q = layer.block.q_proj(inner.x_last)
            l_state = l_state + interest_state_loss(inner.final_state, nxt.final_state, nxt.dt, q, inner.x_last,
                                                    layer.block.A, cfg.state_floor, cfg.state_norm)
        n = len(self.layers)
        return l_time / n, l_state / n

    def losses(self, item_ids, timestamps, next_items, target_times, with_aux: bool = True):
        """Training objective pieces. rec = CE over all non-pad positions (mean); time, state on the last position."""
        mask = item_ids != 0
        o, states, internals = self._run_sequence(item_ids, timestamps=timestamps)
        rec = self.recommendation_loss(self._training_readout(o, mask, timestamps, target_times, internals), mask,
                                       next_items)
        zero = rec.new_zeros(())
        if not (with_aux and self.uses_alignment):
            return {"rec": rec, "time": zero, "state": zero}
        if self.config.aux_stop_embedding:
            o, states, internals = self._run_sequence(item_ids, stop_embedding_grad=True, last_only=True,
                                                      timestamps=timestamps)
        l_time, l_state = self._alignment_losses(o[:, -1], timestamps, mask, target_times, states, internals)
        return {"rec": rec, "time": l_time, "state": l_state}

    def _training_readout(self, o, mask, timestamps, target_times, internals):
        """What CE sees at every position: o_i, or ô_{i+1} extrapolated to the next event's time t_{i+1}."""
        if not self.extrapolated_readout:
            return o
        next_gaps = gap_sequence(timestamps, mask, target_times)[0][:, 1:]
        return self._extrapolate_sequence(o, internals, next_gaps, mask)

    def aux_losses(self, item_ids, timestamps, target_times):
        """Self-supervised alignment losses only (no labels), for test-time alignment. → {"time", "state", "o_n"}."""
        mask = item_ids != 0
        o, states, internals = self._run_sequence(item_ids, last_only=True, timestamps=timestamps)
        o_n = o[:, -1]
        l_time, l_state = self._alignment_losses(o_n, timestamps, mask, target_times, states, internals)
        return {"time": l_time, "state": l_state, "o_n": o_n}

    # -- persistence --------------------------------------------------------------------------------------------
    def save(self, directory, id_maps: Optional[dict] = None, extra: Optional[dict] = None) -> None:
        """Weights (safetensors), config, λ, id maps and versions into `directory`."""
        save_checkpoint(self, directory, {"n_items": self.n_items, **dataclasses.asdict(self.config)},
                        id_maps=id_maps, extra=extra)
