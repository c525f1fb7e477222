"""Fused selective scan (one head, scalar decay per step) in Triton: forward, backward, custom op, autograd.

    h_t = exp(dt_t·A)·h_{t-1} + (dt_t·B_t) ⊗ x_t        h_t: (d_state, d)
    y_t = (h_tᵀ C_t + D ⊙ x_t) ⊙ SiLU(z_t)              (D and z optional)

Shapes: x, z, y (batch, seqlen, d); dt (batch, seqlen), already softplus'ed, 0 at left-pad positions; A scalar
tensor; B, C (batch, seqlen, d_state); D (d,); initial_state, final_state (batch, d_state, d).

Two implementations, one op (docs/kernels.md has the long form and the measurements):
  * "sequential" (this file; the default for every dtype): one program per (sequence, slice of d) keeps its
    (d_state × BLOCK_D) slice of the state in registers and walks the sequence once, fusing exp(dt·A), dt·B, the
    D skip and the SiLU gate. The next step's inputs are loaded before the current step is computed (a one-step
    software prefetch). One warp per program: each step's reductions then stay inside the warp. Accumulation is
    float32 for bf16/fp16/fp32 inputs, float64 for float64.
  * "chunked" (experimental_selective_scan_chunked.py, EXPERIMENTAL opt-in): tl.dot over chunks of steps;
    correct (same tests), slower everywhere measured (docs/kernels.md).
Sequential backward: no per-step state is stored. Two independent kernels, both fully parallel over (sequence,
d slice):
  - `_scan_bwd_states_kernel` walks FORWARD in time recomputing h_t from the initial state and produces dz, dC and
    the scalars Σ_d y_t·dy_t ("query" term of the decay gradient);
  - `_scan_bwd_adjoint_kernel` walks BACKWARD in time carrying the adjoint g_t = ∂L/∂h_t (seeded with the gradient
    of the final state) and produces dx, dB, d(initial_state) and Σ_n B_t·(g_t x_t).
  The gradient of the per-step log-decay l_t = dt_t·A needs ⟨g_t, h_{t-1}⟩, i.e. both walks at once; instead we use
  the identity (the one flash-linear-attention uses for gated linear attention)
      ∂L/∂l_t = Σ_{u≥t} ( ⟨C_u, dC_u⟩ − ⟨B_u, dB_u⟩ ) + ⟨dh_final, h_final⟩
  (a reverse cumulative sum of per-step scalars, done in float64), so the two walks never need each other.
  Memory: O(batch·seqlen·(d + d_state)) — the inputs' size; nothing of size batch·seqlen·d·d_state.
Determinism: no atomics anywhere. Where d is split across programs (BLOCK_D < d), each program writes its own
partial dB/dC rows and the sum over slices is a fixed-order torch reduction: results are reproducible run to run.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ._common import (accumulator_dtype, check_device, interpreting, new_output, next_pow2, silu, silu_with_grad,
                      state_tile, tl_dtype)
from .experimental_selective_scan_chunked import chunk_length, chunked_bwd, chunked_fwd

# ---------------------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------------------


@triton.jit
def _load_step(x_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, dy_ptr, seq, t, L, d, n, offs_d, offs_n, mask_d, mask_n,
               HAS_Z: tl.constexpr, HAS_DY: tl.constexpr, ACC: tl.constexpr):
    """Inputs of step t of sequence `seq`, converted to the accumulator dtype. t is clamped into [0, L) so that the
    prefetch one step past either end re-reads a valid step instead of needing a mask (the value is never used)."""
    t = tl.maximum(tl.minimum(t, L - 1), 0)
    row_d = (seq * L + t) * d
    row_n = (seq * L + t) * n
    x = tl.load(x_ptr + row_d + offs_d, mask=mask_d, other=0.0).to(ACC)
    dt = tl.load(dt_ptr + seq * L + t).to(ACC)
    b = tl.load(B_ptr + row_n + offs_n, mask=mask_n, other=0.0).to(ACC)
    c = tl.load(C_ptr + row_n + offs_n, mask=mask_n, other=0.0).to(ACC)
    if HAS_Z:
        z = tl.load(z_ptr + row_d + offs_d, mask=mask_d, other=0.0).to(ACC)
    else:
        z = x  # placeholder, never read
    if HAS_DY:
        dy = tl.load(dy_ptr + row_d + offs_d, mask=mask_d, other=0.0).to(ACC)
    else:
        dy = x  # placeholder, never read
    return x, dt, b, c, z, dy


@triton.jit
def _scan_fwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, h0_ptr,   # inputs
    y_ptr, hT_ptr,                                              # outputs
    L, d, n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_H0: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
):
    seq = tl.program_id(0).to(tl.int64)
    offs_d, offs_n, mask_d, mask_n, state_offs, state_mask = state_tile(seq, tl.program_id(1), d, n, BLOCK_N, BLOCK_D)

    A = tl.load(A_ptr).to(ACC)
    if HAS_D:
        D = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
    if HAS_H0:
        h = tl.load(h0_ptr + state_offs, mask=state_mask, other=0.0).to(ACC)
    else:
        h = tl.zeros((BLOCK_N, BLOCK_D), dtype=ACC)

    x, dt, b, c, z, _ = _load_step(x_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, x_ptr, seq, 0, L, d, n,
                                   offs_d, offs_n, mask_d, mask_n, HAS_Z, False, ACC)
    for t in range(L):
        # prefetch step t+1 while step t computes
        x_nx, dt_nx, b_nx, c_nx, z_nx, _ = _load_step(x_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, x_ptr, seq, t + 1, L, d,
                                                      n, offs_d, offs_n, mask_d, mask_n, HAS_Z, False, ACC)
        h = h * tl.exp(dt * A) + (dt * b)[:, None] * x[None, :]
        y = tl.sum(h * c[:, None], axis=0)
        if HAS_D:
            y += D * x
        if HAS_Z:
            y = y * silu(z)
        tl.store(y_ptr + (seq * L + t) * d + offs_d, y.to(y_ptr.dtype.element_ty), mask=mask_d)
        x, dt, b, c, z = x_nx, dt_nx, b_nx, c_nx, z_nx
    tl.store(hT_ptr + state_offs, h.to(hT_ptr.dtype.element_ty), mask=state_mask)


@triton.jit
def _scan_bwd_states_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, h0_ptr, dy_ptr, dhT_ptr,   # inputs
    dz_ptr, dC_part_ptr, cdc_part_ptr, dD_part_ptr, hterm_part_ptr,             # outputs
    nseq, L, d, n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_H0: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
):
    """Forward-in-time half of the backward: recompute h_t; emit dz, this slice's dC and Σ_d (hᵀC)_t·dyp_t."""
    seq = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    offs_d, offs_n, mask_d, mask_n, state_offs, state_mask = state_tile(seq, blk, d, n, BLOCK_N, BLOCK_D)
    part_row = blk * nseq + seq          # row of this (slice, sequence) in the partial buffers

    A = tl.load(A_ptr).to(ACC)
    if HAS_D:
        D = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
    if HAS_H0:
        h = tl.load(h0_ptr + state_offs, mask=state_mask, other=0.0).to(ACC)
    else:
        h = tl.zeros((BLOCK_N, BLOCK_D), dtype=ACC)
    dD = tl.zeros((BLOCK_D,), dtype=ACC)

    x, dt, b, c, z, dy = _load_step(x_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, dy_ptr, seq, 0, L, d, n,
                                    offs_d, offs_n, mask_d, mask_n, HAS_Z, True, ACC)
    for t in range(L):
        x_nx, dt_nx, b_nx, c_nx, z_nx, dy_nx = _load_step(x_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, dy_ptr, seq, t + 1, L,
                                                          d, n, offs_d, offs_n, mask_d, mask_n, HAS_Z, True, ACC)
        h = h * tl.exp(dt * A) + (dt * b)[:, None] * x[None, :]
        s = tl.sum(h * c[:, None], axis=0)                 # hᵀC: the scan's part of y (before skip and gate)
        if HAS_Z:
            gate, dgate = silu_with_grad(z)
            y_pre = s
            if HAS_D:
                y_pre += D * x
            dz = dy * y_pre * dgate
            tl.store(dz_ptr + (seq * L + t) * d + offs_d, dz.to(dz_ptr.dtype.element_ty), mask=mask_d)
            dyp = dy * gate
        else:
            dyp = dy
        dc = tl.sum(h * dyp[None, :], axis=1)               # this slice's share of dC_t
        tl.store(dC_part_ptr + (part_row * L + t) * n + offs_n, dc, mask=mask_n)
        tl.store(cdc_part_ptr + part_row * L + t, tl.sum(s * dyp, axis=0))
        dD += dyp * x
        x, dt, b, c, z, dy = x_nx, dt_nx, b_nx, c_nx, z_nx, dy_nx

    tl.store(dD_part_ptr + seq * d + offs_d, dD, mask=mask_d)
    dhT = tl.load(dhT_ptr + state_offs, mask=state_mask, other=0.0).to(ACC)
    tl.store(hterm_part_ptr + part_row, tl.sum(tl.sum(h * dhT, axis=1), axis=0))


@triton.jit
def _scan_bwd_adjoint_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dy_ptr, dhT_ptr,          # inputs
    dx_ptr, dB_part_ptr, bgx_part_ptr, dh0_ptr,                                 # outputs
    nseq, L, d, n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
):
    """Backward-in-time half: carry g_t = ∂L/∂h_t from g_L = dh_final; emit dx, this slice's dB, Σ_n B·(g x),
    and d(initial_state) = g_0."""
    seq = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    offs_d, offs_n, mask_d, mask_n, state_offs, state_mask = state_tile(seq, blk, d, n, BLOCK_N, BLOCK_D)
    part_row = blk * nseq + seq

    A = tl.load(A_ptr).to(ACC)
    if HAS_D:
        D = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
    g = tl.load(dhT_ptr + state_offs, mask=state_mask, other=0.0).to(ACC)

    x, dt, b, c, z, dy = _load_step(x_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, dy_ptr, seq, L - 1, L, d, n,
                                    offs_d, offs_n, mask_d, mask_n, HAS_Z, True, ACC)
    for i in range(L):
        t = L - 1 - i
        x_nx, dt_nx, b_nx, c_nx, z_nx, dy_nx = _load_step(x_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, dy_ptr, seq, t - 1, L,
                                                          d, n, offs_d, offs_n, mask_d, mask_n, HAS_Z, True, ACC)
        if HAS_Z:
            dyp = dy * silu(z)
        else:
            dyp = dy
        g += c[:, None] * dyp[None, :]                      # now g = ∂L/∂h_t
        dx = dt * tl.sum(g * b[:, None], axis=0)
        if HAS_D:
            dx += D * dyp
        tl.store(dx_ptr + (seq * L + t) * d + offs_d, dx.to(dx_ptr.dtype.element_ty), mask=mask_d)
        gx = tl.sum(g * x[None, :], axis=1)                 # (g_t x_t): this slice's share, (BLOCK_N,)
        tl.store(dB_part_ptr + (part_row * L + t) * n + offs_n, dt * gx, mask=mask_n)
        tl.store(bgx_part_ptr + part_row * L + t, tl.sum(b * gx, axis=0))
        g = g * tl.exp(dt * A)                              # ∂L/∂h_{t-1} before step t-1's own output term
        x, dt, b, c, z, dy = x_nx, dt_nx, b_nx, c_nx, z_nx, dy_nx

    tl.store(dh0_ptr + state_offs, g.to(dh0_ptr.dtype.element_ty), mask=state_mask)


# ---------------------------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------------------------

# Launch shape of the sequential kernels, from a sweep on an H200 at (4096, 200, 64, 32) (docs/kernels.md): one warp
# per program keeps each step's reductions inside a warp (no shared-memory round trip per step).
SEQ_BLOCK_D = 64
SEQ_NUM_WARPS = 1

# Which kernels run: "sequential" (one step at a time, every dtype) or "chunked" (tl.dot per chunk, see
# experimental_selective_scan_chunked.py).
# Measured on an H200 at (4096, 200, 64, 32) (docs/kernels.md), the sequential kernels
# win today: forward+backward 2.8 ms in float32 and bfloat16, against 53 ms (float32, exact FMA dots) and 4.9 ms
# (bfloat16, TF32 dots) for the chunked ones, whose backward is the bottleneck. So the default is "sequential";
# "chunked" is kept, tested and selectable per call (`selective_scan(..., triton_impl="chunked")`) as the starting
# point for a faster tensor-core path. float64 always runs sequentially on GPUs (no portable float64 tl.dot).
# The choice is an argument of the custom ops, resolved once before the op is called, so that torch.compile's
# fake implementation (trace time) and the kernels (run time) can never see different settings.
IMPLS = ("sequential", "chunked")


def choose_impl(requested: str, acc_dtype) -> str:
    """The kernel family that runs for a request: "chunked" falls back to "sequential" for float64 on a GPU.

    Raises:
        ValueError: `requested` is not one of IMPLS.
    """
    if requested not in IMPLS:
        raise ValueError(f"unknown Triton scan implementation {requested!r}; expected one of {IMPLS}")
    if requested == "chunked" and (acc_dtype != torch.float64 or interpreting()):
        return "chunked"
    return "sequential"


def _state_dtype(x, initial_state):
    return x.dtype if initial_state is None else initial_state.dtype


def _contiguous(*tensors):
    return [None if t is None else t.contiguous() for t in tensors]


def scan_fwd(x, dt, A, B, C, D=None, z=None, initial_state=None, *, impl="sequential", chunk=None, block_d=None,
             num_warps=None, precision=None):
    """Launch the forward. Returns (y, final_state, chunk_states); no autograd (see selective_scan_triton).

    impl: "sequential" | "chunked" (see IMPLS; float64 on a GPU always runs sequentially); chunk: the chunked
    kernels' chunk length (a power of two ≥ 16; None = DEFAULT_CHUNK). chunk_states (batch, ceil(seqlen/chunk) + 1,
    d_state, d) in the accumulator dtype is what the chunked backward needs; it is empty for the sequential
    implementation, whose backward recomputes everything from the initial state.
    """
    check_device("selective_scan_triton", x, dt, A, B, C, D, z, initial_state)
    x, dt, B, C, D, z, h0 = _contiguous(x, dt, B, C, D, z, initial_state)
    nseq, L, d = x.shape
    n = B.shape[-1]
    acc = accumulator_dtype(x.dtype, dt.dtype, B.dtype, C.dtype)
    impl = choose_impl(impl, acc)
    state_dtype = _state_dtype(x, h0)
    if nseq == 0 or L == 0:  # nothing to scan: the state passes through
        y = new_output((nseq, L, d), x.dtype, x.device)
        hT = h0.clone() if h0 is not None else x.new_zeros((nseq, n, d), dtype=state_dtype)
        return y, hT, x.new_empty((0,), dtype=acc)
    if impl == "chunked":
        return chunked_fwd(x, dt, A, B, C, D, z, h0, state_dtype, chunk=chunk, block_d=block_d,
                           num_warps=num_warps, precision=precision)
    y = new_output((nseq, L, d), x.dtype, x.device)
    hT = new_output((nseq, n, d), state_dtype, x.device)
    block_d = next_pow2(min(block_d or SEQ_BLOCK_D, d))
    _scan_fwd_kernel[(nseq, triton.cdiv(d, block_d))](
        x, dt, A, B, C, D if D is not None else x, z if z is not None else x, h0 if h0 is not None else x,
        y, hT, L, d, n,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_H0=h0 is not None,
        BLOCK_N=next_pow2(n), BLOCK_D=block_d, ACC=tl_dtype(acc), num_warps=num_warps or SEQ_NUM_WARPS,
    )
    return y, hT, x.new_empty((0,), dtype=acc)


def scan_bwd(x, dt, A, B, C, D, z, initial_state, chunk_states, dy, dhT, *, impl="sequential", chunk=None,
             block_d=None, num_warps=None, precision=None):
    """Launch the backward matching the forward that produced `chunk_states`, given that forward's `impl` and
    `chunk` (the same arguments as scan_fwd's).

    Returns (dx, ddt, dA, dB, dC, dD, dz, dh0) with dD of shape (d,) even when D is None, dz empty when z is None,
    and dh0 (batch, d_state, d) even when there was no initial state (the custom op has fixed outputs).
    """
    check_device("selective_scan_triton (backward)", x, dt, A, B, C, D, z, initial_state, dy, dhT)
    x, dt, B, C, D, z, h0, dy, dhT = _contiguous(x, dt, B, C, D, z, initial_state, dy, dhT)
    nseq, L, d = x.shape
    acc = accumulator_dtype(x.dtype, dt.dtype, B.dtype, C.dtype)
    state_dtype = _state_dtype(x, h0)
    if nseq == 0 or L == 0:  # the final state is the initial state
        zeros_d = torch.zeros((d,), dtype=D.dtype if D is not None else x.dtype, device=x.device)
        return (torch.zeros_like(x), torch.zeros_like(dt), torch.zeros_like(A), torch.zeros_like(B),
                torch.zeros_like(C), zeros_d, torch.zeros_like(x) if z is not None else x.new_empty((0,)),
                dhT.to(state_dtype).clone())
    if choose_impl(impl, acc) == "chunked":
        dx, dz, dB_part, dC_part, dl_part, bgx_part, dD_part, dh0 = chunked_bwd(
            x, dt, A, B, C, D, z, chunk_states, dy, dhT, state_dtype, chunk=chunk, block_d=block_d,
            num_warps=num_warps, precision=precision)
        dl = dl_part.sum(0, dtype=torch.float64)
        bgx = bgx_part.sum(0, dtype=torch.float64)
    else:
        dx, dz, dB_part, dC_part, cdc_part, bgx_part, dD_part, hterm_part, dh0 = _sequential_bwd(
            x, dt, A, B, C, D, z, h0, dy, dhT, acc, state_dtype, block_d, num_warps)
        bgx = bgx_part.sum(0, dtype=torch.float64)
        dl = _decay_grad_from_sums(dt, cdc_part.sum(0, dtype=torch.float64), bgx,
                                   hterm_part.sum(0, dtype=torch.float64))
    # With l_t = dt_t·A:  d(dt_t) = A·∂L/∂l_t + B_t·(g_t x_t)  and  dA = Σ_t dt_t·∂L/∂l_t  (sums in float64: cheap
    # on (batch, seqlen) scalars, and dA is a sum over every step of every sequence).
    ddt = A.to(torch.float64).reshape(()) * dl + bgx
    dA = (dt.to(torch.float64) * dl).sum()
    dD = dD_part.sum(0).to(D.dtype if D is not None else x.dtype)
    return (dx, ddt.to(dt.dtype), dA.reshape(A.shape).to(A.dtype), _sum_slices(dB_part).to(B.dtype),
            _sum_slices(dC_part).to(C.dtype), dD, dz if dz is not None else x.new_empty((0,)), dh0)


def _sum_slices(part):
    """Sum per-d-slice partials in a fixed order (deterministic); a single slice is returned as a view."""
    return part[0] if part.shape[0] == 1 else part.sum(0)


def _sequential_bwd(x, dt, A, B, C, D, z, h0, dy, dhT, acc, state_dtype, block_d, num_warps):
    nseq, L, d = x.shape
    n = B.shape[-1]
    block_d = next_pow2(min(block_d or SEQ_BLOCK_D, d))
    n_blk = triton.cdiv(d, block_d)
    dev = x.device
    dx = new_output((nseq, L, d), x.dtype, dev)
    dz = new_output((nseq, L, d), x.dtype, dev) if z is not None else None
    dh0 = new_output((nseq, n, d), state_dtype, dev)
    dC_part = new_output((n_blk, nseq, L, n), acc, dev)
    dB_part = new_output((n_blk, nseq, L, n), acc, dev)
    cdc_part = new_output((n_blk, nseq, L), acc, dev)
    bgx_part = new_output((n_blk, nseq, L), acc, dev)
    dD_part = new_output((nseq, d), acc, dev)
    hterm_part = new_output((n_blk, nseq), acc, dev)
    flags = dict(HAS_D=D is not None, HAS_Z=z is not None, BLOCK_N=next_pow2(n), BLOCK_D=block_d,
                 ACC=tl_dtype(acc), num_warps=num_warps or SEQ_NUM_WARPS)
    D_arg = D if D is not None else x
    z_arg = z if z is not None else x
    grid = (nseq, n_blk)
    _scan_bwd_states_kernel[grid](
        x, dt, A, B, C, D_arg, z_arg, h0 if h0 is not None else x, dy, dhT,
        dz if dz is not None else x, dC_part, cdc_part, dD_part, hterm_part,
        nseq, L, d, n, HAS_H0=h0 is not None, **flags)
    _scan_bwd_adjoint_kernel[grid](
        x, dt, A, B, C, D_arg, z_arg, dy, dhT,
        dx, dB_part, bgx_part, dh0,
        nseq, L, d, n, **flags)
    return dx, dz, dB_part, dC_part, cdc_part, bgx_part, dD_part, hterm_part, dh0


def _decay_grad_from_sums(dt, cdc, bgx, hterm):
    """∂L/∂l_t = Σ_{u≥t} (cdc_u − dt_u·bgx_u) + ⟨dh_final, h_final⟩, in float64: the reverse cumulative sum runs over
    the whole sequence, subtracting sums that grow with its length from each other."""
    per_step = cdc - dt.to(torch.float64) * bgx
    per_step[:, -1] += hterm
    return per_step.flip(1).cumsum(1).flip(1)


# ---------------------------------------------------------------------------------------------------------------
# torch.library custom ops (one opaque op each for torch.compile / tracing) and autograd
# ---------------------------------------------------------------------------------------------------------------

@torch.library.custom_op("t2arec_fast::selective_scan_fwd", mutates_args=())
def _selective_scan_fwd_op(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                           D: Optional[torch.Tensor], z: Optional[torch.Tensor],
                           initial_state: Optional[torch.Tensor], impl: str, chunk: int,
                           ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return scan_fwd(x, dt, A, B, C, D, z, initial_state, impl=impl, chunk=chunk)


@_selective_scan_fwd_op.register_fake
def _(x, dt, A, B, C, D, z, initial_state, impl, chunk):
    nseq, L, d = x.shape
    n = B.shape[-1]
    acc = accumulator_dtype(x.dtype, dt.dtype, B.dtype, C.dtype)
    if choose_impl(impl, acc) == "chunked" and nseq > 0 and L > 0:
        n_chunks = -(-L // chunk_length(chunk))
        states = x.new_empty((nseq, n_chunks + 1, n, d), dtype=acc)
    else:
        states = x.new_empty((0,), dtype=acc)
    return x.new_empty(x.shape), x.new_empty((nseq, n, d), dtype=_state_dtype(x, initial_state)), states


@torch.library.custom_op("t2arec_fast::selective_scan_bwd", mutates_args=())
def _selective_scan_bwd_op(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                           D: Optional[torch.Tensor], z: Optional[torch.Tensor],
                           initial_state: Optional[torch.Tensor], chunk_states: torch.Tensor, dy: torch.Tensor,
                           dfinal_state: torch.Tensor, impl: str, chunk: int,
                           ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                      torch.Tensor, torch.Tensor, torch.Tensor]:
    return scan_bwd(x, dt, A, B, C, D, z, initial_state, chunk_states, dy, dfinal_state, impl=impl, chunk=chunk)


@_selective_scan_bwd_op.register_fake
def _(x, dt, A, B, C, D, z, initial_state, chunk_states, dy, dfinal_state, impl, chunk):
    nseq, _, d = x.shape
    n = B.shape[-1]
    return (x.new_empty(x.shape), dt.new_empty(dt.shape), A.new_empty(A.shape), B.new_empty(B.shape),
            C.new_empty(C.shape), x.new_empty((d,), dtype=D.dtype if D is not None else x.dtype),
            x.new_empty(x.shape) if z is not None else x.new_empty((0,)),
            x.new_empty((nseq, n, d), dtype=_state_dtype(x, initial_state)))


def _setup_context(ctx, inputs, output):
    # x, dt, A, B, C, D, z, initial_state (None entries allowed) and the chunk-boundary states; the settings
    # (impl, chunk) are plain values kept on ctx and handed to the backward op unchanged
    *tensors, ctx.impl, ctx.chunk = inputs
    ctx.save_for_backward(*tensors, output[2])


def _backward(ctx, dy, dfinal_state, _dchunk_states):
    x, dt, A, B, C, D, z, h0, chunk_states = ctx.saved_tensors
    if dy is None:
        dy = torch.zeros_like(x)
    if dfinal_state is None:
        dfinal_state = x.new_zeros((x.shape[0], B.shape[-1], x.shape[-1]), dtype=_state_dtype(x, h0))
    dx, ddt, dA, dB, dC, dD, dz, dh0 = torch.ops.t2arec_fast.selective_scan_bwd(
        x, dt, A, B, C, D, z, h0, chunk_states, dy, dfinal_state, ctx.impl, ctx.chunk)
    return (dx, ddt, dA, dB, dC, dD if D is not None else None, dz if z is not None else None,
            dh0 if h0 is not None else None, None, None)


# register_autograd wraps the op in a torch.autograd.Function under the hood; registering it on the op (rather
# than calling the op from a hand-written Function) keeps it one differentiable op for torch.compile.
torch.library.register_autograd("t2arec_fast::selective_scan_fwd", _backward, setup_context=_setup_context)


def selective_scan_triton(x, dt, A, B, C, D=None, z=None, initial_state=None, *, impl="sequential", chunk=None):
    """Fused selective scan → (y, final_state), differentiable in every tensor input (first order).

    x, z: (batch, seqlen, d); dt: (batch, seqlen); A: scalar tensor; B, C: (batch, seqlen, d_state); D: (d,);
    initial_state: (batch, d_state, d). y has x's dtype; final_state has initial_state's dtype (x's if None).
    impl: "sequential" (default) | "chunked"; chunk: the chunked kernels' chunk length (None = that module's
    DEFAULT_CHUNK, 32). Shapes are checked by the caller (t2arec_fast.ops.selective_scan); docs/kernels.md
    describes both kernels.

    Raises:
        ValueError: unknown `impl`, or tensors on several devices.
        RuntimeError: CPU tensors outside Triton's interpreter.
    """
    acc = accumulator_dtype(x.dtype, dt.dtype, B.dtype, C.dtype)
    impl, chunk = choose_impl(impl, acc), chunk_length(chunk)     # resolved once: the op sees concrete values
    if not torch.is_tensor(A):
        A = torch.tensor(float(A), dtype=dt.dtype, device=x.device)
    elif A.device != x.device:
        A = A.to(x.device)
    y, final_state, _ = torch.ops.t2arec_fast.selective_scan_fwd(x, dt, A, B, C, D, z, initial_state, impl, chunk)
    return y, final_state
