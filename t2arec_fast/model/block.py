"""The T2A-Mamba block (docs/model.md §2): a Mamba-2 block with one head of width d and one B/C group.

Two forms share every weight and every helper below:
  * `forward(u, mask, state)`  — a whole left-padded sequence through the selective scan;
  * `step(u_t, state)`         — one more event in O(1), through the one-step state update.
Running `step` n times from an empty state equals `forward` on the n events (tests/model check it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from t2arec_fast.ops import selective_scan, selective_state_step, state_step_output


@dataclass
class BlockState:
    """Recurrent state of one block for a batch of users.

    conv: (batch, conv_kernel − 1, d + 2·d_state)  the last k−1 conv inputs (pre-conv xBC), oldest first
    ssm:  (batch, d_state, d)                     the scan state h
    """
    conv: torch.Tensor
    ssm: torch.Tensor

    def detach(self) -> "BlockState":
        """The same state cut from the autograd graph (no copy)."""
        return BlockState(self.conv.detach(), self.ssm.detach())


@dataclass
class BlockInternals:
    """What the alignment losses need from a block's pass (all at the last position unless noted)."""
    dt: torch.Tensor            # (batch, L) step sizes Δ_1..Δ_n (0 at pads); for a step: (batch,)
    x_last: torch.Tensor        # (batch, d) post-conv x at the last position
    final_state: torch.Tensor   # (batch, d_state, d) h_n
    # Per-position inputs of a full-sequence pass, kept for `extrapolate` (None for a step):
    window: Optional[torch.Tensor] = None       # (batch, k−1+L, conv_dim) initial conv window + masked xBC
    x: Optional[torch.Tensor] = None            # (batch, L, d) post-conv x
    B: Optional[torch.Tensor] = None            # (batch, L, d_state)
    initial_ssm: Optional[torch.Tensor] = None  # (batch, d_state, d) h_0


class GatedRMSNorm(nn.Module):
    """RMSNorm(y) with a learnable weight; the SiLU(z) gate is fused into the scan before it."""

    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """y (..., d) float → RMS-normalised y of the same shape and dtype."""
        return y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class T2AMambaBlock(nn.Module):
    """One T2A-Mamba block (docs/model.md §2): in_proj → (z, xBC, Δ) → causal depthwise conv → SiLU → selective scan
    with skip D and gate SiLU(z) → gated RMSNorm → out_proj. Also holds q_proj, the Linear_2 of L_state (§4).

    d: model width; d_state: state size n; conv_kernel: k; backend: the scan/step implementation
    (ops.BACKENDS); dt_min, dt_max: range of Δ at initialisation; expand: inner width d_inner = expand·d.
    Shapes below: batch b, length L; inputs and outputs float (b, L, d) or (b, d) in the weights' dtype.

    Raises:
        ValueError: expand < 1.
    """

    def __init__(self, d: int = 64, d_state: int = 32, conv_kernel: int = 4, backend: str = "auto",
                 dt_min: float = 1e-3, dt_max: float = 1e-1, expand: int = 1):
        super().__init__()
        if expand < 1:
            raise ValueError(f"T2AMambaBlock: expand must be ≥ 1, got {expand}")
        self.d, self.d_state, self.conv_kernel, self.backend = d, d_state, conv_kernel, backend
        self.export_form = "matrix"          # the scan's ONNX graph form under backend="export" (set_backend)
        self.d_inner = expand * d
        self.conv_dim = self.d_inner + 2 * d_state
        self.in_proj = nn.Linear(d, self.d_inner + self.conv_dim + 1, bias=False)   # → z, xBC, dt
        self.conv = nn.Conv1d(self.conv_dim, self.conv_dim, conv_kernel, groups=self.conv_dim, bias=True)
        # Mamba-2 init: softplus(dt_bias) log-uniform in [dt_min, dt_max]; A = −exp(A_log), A_log = log U[1, 16].
        dt0 = math.exp(torch.empty(()).uniform_(math.log(dt_min), math.log(dt_max)).item())
        self.dt_bias = nn.Parameter(torch.tensor([dt0 + math.log(-math.expm1(-dt0))]))
        self.A_log = nn.Parameter(torch.log(torch.empty(1).uniform_(1.0, 16.0)))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.norm = GatedRMSNorm(self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d, bias=False)
        self.q_proj = nn.Linear(self.d_inner, d_state, bias=False)           # Q = Linear_2(x_n) of L_state

    # -- shared pieces ------------------------------------------------------------------------------------------
    @property
    def A(self) -> torch.Tensor:
        """The scalar decay rate A = −exp(A_log) < 0 (0-dim tensor)."""
        return -torch.exp(self.A_log[0])

    def empty_state(self, batch: int, device=None, dtype=None) -> BlockState:
        """The all-zero state before any event: conv (batch, k−1, conv_dim), ssm (batch, d_state, d_inner), on the
        weights' device and dtype unless given."""
        p = self.in_proj.weight
        device, dtype = device or p.device, dtype or p.dtype
        return BlockState(torch.zeros(batch, self.conv_kernel - 1, self.conv_dim, device=device, dtype=dtype),
                          torch.zeros(batch, self.d_state, self.d_inner, device=device, dtype=dtype))

    def _project(self, u: torch.Tensor):
        z, xbc, dt_raw = torch.split(self.in_proj(u), [self.d_inner, self.conv_dim, 1], dim=-1)
        return z, xbc, dt_raw.squeeze(-1)

    def _ssm_inputs(self, conv_out: torch.Tensor, dt_raw: torch.Tensor):
        x, B, C = torch.split(F.silu(conv_out), [self.d_inner, self.d_state, self.d_state], dim=-1)
        return x, B, C, F.softplus(dt_raw + self.dt_bias)

    def _output(self, y: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.norm(y))

    # -- full sequence ------------------------------------------------------------------------------------------
    def forward(self, u: torch.Tensor, mask: torch.Tensor, state: Optional[BlockState] = None):
        """A whole left-padded sequence: u (batch, L, d) float; mask (batch, L) bool, False at left pads; state: the
        state before the first column (None = empty). → (out (batch, L, d), state after the last column,
        BlockInternals for the alignment losses and `extrapolate`).

        Raises:
            ValueError: shapes that do not fit (from ops.selective_scan).
        """
        batch, L, _ = u.shape
        state = state or self.empty_state(batch, u.device, u.dtype)
        z, xbc, dt_raw = self._project(u)
        xbc = xbc * mask[..., None]                                          # conv input is 0 at pads
        window = torch.cat([state.conv, xbc], dim=1)                         # (batch, k−1+L, conv_dim)
        conv_out = F.conv1d(window.transpose(1, 2), self.conv.weight, self.conv.bias,
                            groups=self.conv_dim).transpose(1, 2)            # causal: (batch, L, conv_dim)
        x, B, C, dt = self._ssm_inputs(conv_out, dt_raw)
        dt = dt * mask                                                       # Δ = 0 at pads: state passes through
        y, h = selective_scan(x, dt, self.A, B, C, self.D, z=z, initial_state=state.ssm, backend=self.backend,
                              export_form=self.export_form)
        new_state = BlockState(window[:, window.shape[1] - (self.conv_kernel - 1):], h)
        return self._output(y), new_state, BlockInternals(dt=dt, x_last=x[:, -1], final_state=h, window=window, x=x,
                                                          B=B, initial_ssm=state.ssm)

    def extrapolate(self, u_next: torch.Tensor, inner: BlockInternals):
        """`step` applied at EVERY position at once: out[:, i] = step(u_next[:, i], state after position i)[0].

        u_next: (batch, L, d) the input of the extra step after each position; inner: this block's internals from
        `forward`. → (batch, L, d). The states after each position are never materialised: h_iᵀĈ_{i+1} is the
        scan's output with C replaced by Ĉ, and `ops.state_step_output` finishes the step from it (the one-step
        formula lives in ops/state_step.py only). Source: docs/model.md (readout "extrapolated").
        """
        z, xbc, dt_raw = self._project(u_next)
        taps = self.conv.weight
        k = self.conv_kernel
        # the extra step's conv window: the last k−1 real inputs up to i, then the new input
        conv_out = F.conv1d(inner.window[:, 1:].transpose(1, 2), taps[:, :, :k - 1], self.conv.bias,
                            groups=self.conv_dim).transpose(1, 2) + xbc * taps[:, 0, k - 1]
        x, B, C, dt = self._ssm_inputs(conv_out, dt_raw)
        carried, _ = selective_scan(inner.x, inner.dt, self.A, inner.B, C, initial_state=inner.initial_ssm,
                                    backend=self.backend, export_form=self.export_form)   # h_iᵀ Ĉ_{i+1}
        return self._output(state_step_output(carried, x, dt, self.A, B, C, self.D, z))

    # -- one step -----------------------------------------------------------------------------------------------
    def _step_inputs(self, u_t: torch.Tensor, conv: torch.Tensor):
        """What one step needs from its input and the last k−1 conv inputs: → (window (batch, k, conv_dim), z, x,
        B, C, dt), shared by `step` and `step_pooled`."""
        z, xbc, dt_raw = self._project(u_t)
        window = torch.cat([conv, xbc[:, None]], dim=1)                      # (batch, k, conv_dim)
        taps = self.conv.weight[:, 0, :].t().contiguous()                    # (k, conv_dim)
        conv_out = (window * taps).sum(1) + self.conv.bias                   # 9× faster than einsum at batch 64
        x, B, C, dt = self._ssm_inputs(conv_out, dt_raw)
        return window, z, x, B, C, dt

    def step(self, u_t: torch.Tensor, state: BlockState):
        """One more event per user in O(1): u_t (batch, d) float, state: the state after the previous event.
        → (out_t (batch, d), new state, BlockInternals with dt (batch,)). Equal to `forward` on the longer sequence.

        Raises:
            ValueError: shapes that do not fit (from ops.selective_state_step).
        """
        window, z, x, B, C, dt = self._step_inputs(u_t, state.conv)
        y, h = selective_state_step(state.ssm, x, dt, self.A, B, C, self.D, z=z, backend=self.backend)
        new_state = BlockState(window[:, 1:], h)
        return self._output(y), new_state, BlockInternals(dt=dt, x_last=x, final_state=h)

    def step_in_place(self, u_t: torch.Tensor, state: BlockState) -> torch.Tensor:
        """`step` with `state` (conv, ssm of any strides: views of serving's flat buffers) updated IN PLACE to the
        new state: → out_t (batch, d), the same floats as `step` without its copies (no autograd)."""
        window, z, x, B, C, dt = self._step_inputs(u_t, state.conv)
        y, _ = selective_state_step(state.ssm, x, dt, self.A, B, C, self.D, z=z, backend=self.backend,
                                    in_place=True)
        state.conv.copy_(window[:, 1:])
        return self._output(y)

    def step_pooled(self, u_t: torch.Tensor, pool: BlockState, slots: torch.Tensor) -> torch.Tensor:
        """`step` on states kept in a pool, updated IN PLACE: row i of the batch advances pool row slots[i]
        (distinct; −1 skips the row, whose output is then not meaningful). pool.conv (P, k−1, conv_dim), pool.ssm
        (P, d_state, d); u_t (batch, d); slots (batch,) int64. The SSM update is the pooled one-step kernel
        (`ops.selective_state_step(..., slots=...)`, Triton on CUDA). → out_t (batch, d). Serving's device tier."""
        keep = slots >= 0
        rows = slots.clamp_min(0)
        window, z, x, B, C, dt = self._step_inputs(u_t, pool.conv[rows])
        y, _ = selective_state_step(pool.ssm, x, dt, self.A, B, C, self.D, z=z, slots=slots, backend=self.backend)
        pool.conv[rows[keep]] = window[keep, 1:].to(pool.conv.dtype)
        return self._output(y)
