"""T2ARec (docs/model.md §2-§4): embedding → T2A-Mamba layers (block, Add&Norm, FFN) → tied scoring head,
plus the two alignment losses computed from one forward pass.

Public API (other code relies on these names):
    T2ARec(n_items, d=64, d_state=32, n_layers=1, **options)      options = ModelConfig fields
    encode(item_ids, timestamps) -> (o_n, states)                  LEFT-padded int64 (batch, L), 0 = padding
    scores(item_ids, timestamps, request_times=None) -> (batch, n_items + 1)   column 0 (padding) is −inf
    step(item_ids_t, states) -> (o, new_states)                    one more event per user, O(1)
    scores_from_state(o_n, states, last_times=None, request_times=None) -> scores, as the readout reads them
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
from .losses import gap_sequence, interest_state_loss, time_interval_loss
from .readout import READOUTS, REQUEST_GAP_BUCKETS, make_readout


class T2ALayer(nn.Module):
    """A T2A-Mamba block followed by Add & Norm and a position-wise FFN (docs/model.md §2.3)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.block = T2AMambaBlock(cfg.d, cfg.d_state, cfg.conv_kernel, backend=cfg.backend, expand=cfg.expand)
        self.drop = nn.Dropout(cfg.dropout)
        self.norm1 = nn.LayerNorm(cfg.d)
        self.ffn = nn.Sequential(nn.Linear(cfg.d, 4 * cfg.d), nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(4 * cfg.d, cfg.d))
        self.norm2 = nn.LayerNorm(cfg.d)

    def _finish(self, u, block_out):
        a = self.norm1(u + self.drop(block_out))
        return self.norm2(a + self.drop(self.ffn(a)))

    def forward(self, u, mask, state=None, last_only: bool = False):
        """last_only: Add&Norm and FFN at the last position only (position-wise, so o_n is the same) — for callers
        that need o_n and the block's internals but not o at every position."""
        out, new_state, internals = self.block(u, mask, state)
        if last_only:
            u, out = u[:, -1:], out[:, -1:]
        return self._finish(u, out), new_state, internals

    def step(self, u_t, state):
        """One event: u_t (batch, d) → (o (batch, d), new BlockState, BlockInternals)."""
        out, new_state, internals = self.block.step(u_t, state)
        return self._finish(u_t, out), new_state, internals

    def step_in_place(self, u_t, state):
        """`step` with the state updated in place (T2AMambaBlock.step_in_place): → o (batch, d)."""
        return self._finish(u_t, self.block.step_in_place(u_t, state))

    def step_pooled(self, u_t, pool, slots):
        """One event on pooled states, updated in place (T2AMambaBlock.step_pooled): → o (batch, d)."""
        return self._finish(u_t, self.block.step_pooled(u_t, pool, slots))

    def extrapolate(self, u_next, internals):
        """`step` at every position at once (T2AMambaBlock.extrapolate), then Add&Norm and FFN: (batch, L, d)."""
        return self._finish(u_next, self.block.extrapolate(u_next, internals))


class T2ARec(SequentialRecommender):
    """T2ARec and its backbone (option model="backbone": the same network, no alignment losses); docs/model.md.

    n_items: real items 1..n_items (0 = padding); d: width; d_state: SSM state size; n_layers: T2A layers;
    options: the other ModelConfig fields (readout, backend, losses' settings, ...). Implements model.StepModel.
    Inputs everywhere: item_ids (batch, L) int64 LEFT-padded with 0, timestamps (batch, L) int64 unix seconds.

    Raises:
        InputError: n_items < 1 or an unknown readout.
        ConfigError: an option value that ModelConfig refuses.
        TypeError: an option ModelConfig does not have.
    """

    model_name = "t2arec"

    def __init__(self, n_items: int, d: int = 64, d_state: int = 32, n_layers: int = 1, **options):
        super().__init__()
        if n_items < 1:
            raise InputError(f"T2ARec: n_items must be ≥ 1, got {n_items}")
        if options.get("readout", "last") not in READOUTS:
            raise InputError(f"T2ARec: readout must be one of {READOUTS}, got {options['readout']!r}")
        options.setdefault("model", self.model_name)
        self.config = ModelConfig(d=d, d_state=d_state, n_layers=n_layers, **options)
        self.n_items = n_items
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.emb_drop = nn.Dropout(self.config.dropout)
        self.emb_norm = nn.LayerNorm(d)
        self.layers = nn.ModuleList(T2ALayer(self.config) for _ in range(n_layers))
        # readout "request_gap": the extrapolation's input is o_n + an embedding of the request gap's bucket
        self.request_gap_emb = nn.Embedding(REQUEST_GAP_BUCKETS, d) if self.config.readout == "request_gap" else None
        self.readout = make_readout(self.config.readout, self.request_gap_emb)     # model/readout.py
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
        """Store λ, L_time's margin (in units of g(T), docs/model.md §3), in the `time_margin` buffer (saved).

        Raises:
            ValueError: λ not a positive finite number.
        """
        if not (lam > 0 and math.isfinite(lam)):
            raise ValueError(f"time margin λ must be a positive finite number, got {lam}")
        self.time_margin.fill_(float(lam))

    @property
    def width(self) -> int:
        """d: the length of o_n and of every output vector."""
        return self.config.d

    @property
    def needs_request_time(self) -> bool:
        """scores() and scores_from_state() must be told when each request is made (t_{n+1})."""
        return self.readout.needs_request_time

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
        """The state before any event: one all-zero BlockState per layer (T2AMambaBlock.empty_state)."""
        return [layer.block.empty_state(batch, device, dtype) for layer in self.layers]

    def _run_sequence(self, item_ids: torch.Tensor, states: Optional[List[BlockState]] = None,
                      stop_embedding_grad: bool = False, last_only: bool = False):
        """All positions: → (o (batch, L, d), final states, per-layer internals).

        stop_embedding_grad: the item table is looked up through a stopped gradient (aux_stop_embedding).
        last_only: o only at the last position, (batch, 1, d): the last layer's Add&Norm and FFN — two thirds of a
        layer's arithmetic — then run on one position instead of L (everything but the CE loss needs only o_n)."""
        mask = item_ids != 0
        h = self.embed(item_ids, stop_grad=stop_embedding_grad)
        new_states, internals = [], []
        last_layer = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h, st, inner = layer(h, mask, None if states is None else states[i], last_only and i == last_layer)
            new_states.append(st)
            internals.append(inner)
        return h, new_states, internals

    def run_step(self, u_t: torch.Tensor, states: List[BlockState]):
        """One event per user given its input vector u_t (batch, d) — an embedding, or o_n for Δ̂_{n+1} and the
        extrapolated readouts. → (o (batch, d), new states, per-layer internals)."""
        h, new_states, internals = u_t, [], []
        for layer, st in zip(self.layers, states):
            h, st_new, inner = layer.step(h, st)
            new_states.append(st_new)
            internals.append(inner)
        return h, new_states, internals

    def extrapolate_sequence(self, u_next: torch.Tensor, internals) -> torch.Tensor:
        """`run_step` at every position i at once, fed with u_next[:, i] from the state after position i:
        (batch, L, d) → (batch, L, d) (training of the extrapolated readouts)."""
        h = u_next
        for layer, inner in zip(self.layers, internals):
            h = layer.extrapolate(h, inner)
        return h

    def scores_from_state(self, o_n: torch.Tensor, states: List[BlockState],
                          last_times: Optional[torch.Tensor] = None,
                          request_times: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(batch, n_items + 1) scores from an encoded state (encode/step), as the readout reads them — O(1), as
        serving needs. last_times, request_times: (batch,) int64 t_n and t_{n+1}, needed when
        `needs_request_time` (ignored otherwise).

        Raises:
            InputError: the readout needs the request time and none was given.
        """
        gaps = None
        if self.needs_request_time:
            if request_times is None or last_times is None:
                raise InputError(f"this model scores at the request time (readout={self.config.readout!r}): pass "
                                 "request_times, int64 (batch,) unix seconds")
            gaps = request_times - last_times
        return self.score_from(self.readout.output_from_state(self, o_n, states, gaps))

    def check_request_times(self, timestamps: Optional[torch.Tensor], request_times: Optional[torch.Tensor]) -> None:
        """Request times, when given: int64 (batch,) unix seconds, none before its row's last event.

        Raises:
            InputError: wrong dtype or shape, or a request time before its row's last event (naming the row).
        """
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

    def sequence_output(self, item_ids: torch.Tensor) -> torch.Tensor:
        return self._run_sequence(item_ids, last_only=True)[0][:, -1]

    # -- public inference API -----------------------------------------------------------------------------------
    def encode(self, item_ids: torch.Tensor, timestamps: Optional[torch.Tensor] = None):
        """item_ids (batch, L) int64, LEFT-padded; timestamps (batch, L) int64 seconds, optional (checked, not used
        by the encoder). → (o_n (batch, d) float, states: one BlockState per layer, after the last event).

        Raises:
            InputError: a batch that `check_inputs` refuses (naming row and column).
        """
        self.check_inputs(item_ids, timestamps)
        o, states, _ = self._run_sequence(item_ids, last_only=True)
        return o[:, -1], states

    def scores(self, item_ids: torch.Tensor, timestamps: Optional[torch.Tensor] = None,
               request_times: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(batch, n_items + 1) float scores for each row's next item, column 0 (padding) = −inf. item_ids,
        timestamps as in `encode`; request_times (batch,) int64 unix seconds = t_{n+1}, needed when
        `needs_request_time` (ignored otherwise).

        Raises:
            InputError: a batch `check_inputs` refuses, bad request times, or none where the readout needs them.
        """
        self.check_inputs(item_ids, timestamps)
        self.check_request_times(timestamps, request_times)
        return self.scores_unchecked(item_ids, timestamps, request_times)

    def scores_unchecked(self, item_ids: torch.Tensor, timestamps: Optional[torch.Tensor] = None,
                         request_times: Optional[torch.Tensor] = None) -> torch.Tensor:
        """scores() without the input checks, whose data-dependent branches torch.func.vmap cannot trace
        (per-user test-time steps, adapt.py). For callers that have checked the batch already."""
        o, states, _ = self._run_sequence(item_ids, last_only=True)
        last_times = None if timestamps is None else timestamps[:, -1]
        return self.scores_from_state(o[:, -1], states, last_times, request_times)

    def step(self, item_ids_t: torch.Tensor, states: List[BlockState]):
        """One new event per user: item_ids_t (batch,) int64 (no padding); states from `encode`, `step` or
        `empty_states`. → (o (batch, d), new states), equal to `encode` of the longer sequence. O(1) per event.

        Raises:
            InputError: item ids not int64 (batch,) in [1, n_items].
        """
        if item_ids_t.dim() != 1 or item_ids_t.dtype != torch.int64:
            raise InputError(f"step: item ids must be int64 (batch,), got {item_ids_t.dtype} {tuple(item_ids_t.shape)}")
        outside = (item_ids_t < 1) | (item_ids_t > self.n_items)
        if outside.any():
            row = int(outside.nonzero()[0])
            raise InputError(f"step: item id {int(item_ids_t[row])} of row {row} is outside [1, {self.n_items}] "
                             "(a step takes one real event per user: no padding 0)")
        o, new_states, _ = self.run_step(self.embed(item_ids_t), states)
        return o, new_states

    def step_in_place(self, item_ids_t: torch.Tensor, states: List[BlockState]) -> torch.Tensor:
        """`step` with `states` updated IN PLACE to the new states (conv and ssm of any strides: serving steps views
        of its flat state buffers): → o (batch, d), the same floats as `step`'s without copying the states back.
        Input checks are the caller's (`step`'s); no autograd. Source: docs/serving.md."""
        h = self.embed(item_ids_t)
        for layer, state in zip(self.layers, states):
            h = layer.step_in_place(h, state)
        return h

    def step_pooled(self, item_ids_t: torch.Tensor, pools: List[BlockState], slots: torch.Tensor) -> torch.Tensor:
        """`step` on states held in per-block pools (serving's device tier), updated IN PLACE: user i advances pool
        row slots[i] (distinct; −1 skips). item_ids_t, slots: (batch,) int64; pools: one BlockState per block with
        a leading pool axis (`empty_states(pool_size)`). → o (batch, d). Input checks are the caller's.
        Source: docs/serving.md (device tier)."""
        h = self.embed(item_ids_t)
        for layer, pool in zip(self.layers, pools):
            h = layer.step_pooled(h, pool, slots)
        return h

    # -- losses -------------------------------------------------------------------------------------------------
    def _alignment_losses(self, o_n, timestamps, mask, target_times, states, internals):
        """L_time and L_state from one pass (docs/model.md §3, §4), averaged over blocks.

        Δ̂_{n+1}, x̂, B̂ and ĥ_{n+1} come from the one-step update fed with o_n (detached), exactly as serving
        would advance the state — one definition of the block's maths.
        """
        cfg = self.config
        gaps, valid = gap_sequence(timestamps, mask, target_times)
        _, _, next_internals = self.run_step(o_n.detach(), states)
        # a tensor, not float(): no host sync and no graph break under torch.compile
        margin = torch.where(torch.isfinite(self.time_margin), self.time_margin, 1.0)
        l_time = o_n.new_zeros(())
        l_state = o_n.new_zeros(())
        for layer, inner, nxt in zip(self.layers, internals, next_internals):
            dts = torch.cat([inner.dt, nxt.dt[:, None]], dim=1)
            if cfg.dt_transform == "log":   # the hinge compares orderings; log Δ makes its margin scale-free
                dts = dts.clamp_min(1e-12).log()
            l_time = l_time + time_interval_loss(dts, gaps, valid, margin, cfg.pair_block, cfg.gap_transform,
                                                 cfg.count_tied_pairs)
            q = layer.block.q_proj(inner.x_last)
            l_state = l_state + interest_state_loss(inner.final_state, nxt.final_state, nxt.dt, q, inner.x_last,
                                                    layer.block.A, cfg.state_floor, cfg.state_norm)
        n = len(self.layers)
        return l_time / n, l_state / n

    def losses(self, item_ids, timestamps, next_items, target_times, with_aux: bool = True):
        """Training objective pieces (docs/model.md §5) → {"rec", "time", "state"}, 0-dim float tensors.

        item_ids, next_items (batch, L) int64 (next_items: the item after each position, 0 = none); timestamps
        (batch, L) int64 seconds; target_times (batch,) int64 = t_{n+1}. rec = CE (mean) at every position with a
        target (all non-pad positions of a window, the last of a prefix sample); time, state on the last position
        (0 when `with_aux` is False or for the backbone). Inputs are not checked (the training loop's batches are
        well formed by construction)."""
        mask = item_ids != 0
        o, states, internals = self._run_sequence(item_ids)
        rec = self.recommendation_loss(self._training_outputs(o, mask, timestamps, target_times, internals),
                                       next_items != 0, next_items)
        zero = rec.new_zeros(())
        if not (with_aux and self.uses_alignment):
            return {"rec": rec, "time": zero, "state": zero}
        if self.config.aux_stop_embedding:
            o, states, internals = self._run_sequence(item_ids, stop_embedding_grad=True, last_only=True)
        l_time, l_state = self._alignment_losses(o[:, -1], timestamps, mask, target_times, states, internals)
        return {"rec": rec, "time": l_time, "state": l_state}

    def _training_outputs(self, o, mask, timestamps, target_times, internals):
        """What CE sees at every position, as the readout reads it: o_i, or ô_{i+1} at the next event's time."""
        next_gaps = None
        if self.needs_request_time:               # the request at position i is event i+1
            next_gaps = gap_sequence(timestamps, mask, target_times)[0][:, 1:]
        return self.readout.training_outputs(self, o, internals, next_gaps)

    def aux_losses(self, item_ids, timestamps, target_times):
        """Self-supervised alignment losses only (no labels), for test-time alignment (docs/model.md §5,
        Algorithm 1). Inputs as in `losses`, unchecked. → {"time": 0-dim, "state": 0-dim, "o_n": (batch, d)}."""
        mask = item_ids != 0
        o, states, internals = self._run_sequence(item_ids, last_only=True)
        o_n = o[:, -1]
        l_time, l_state = self._alignment_losses(o_n, timestamps, mask, target_times, states, internals)
        return {"time": l_time, "state": l_state, "o_n": o_n}

    # -- persistence --------------------------------------------------------------------------------------------
    def save(self, directory, id_maps: Optional[dict] = None, extra: Optional[dict] = None) -> None:
        """Weights (safetensors), config, λ, id maps and versions into `directory` (model/checkpoint.py); read back
        by `T2ARec.load` / `model.load_model`.

        Raises:
            OSError: the directory cannot be written.
        """
        save_checkpoint(self, directory, {"n_items": self.n_items, **dataclasses.asdict(self.config)},
                        id_maps=id_maps, extra=extra)
