"""One selective-scan step for many users at once, in Triton (serving and the Δ̂_{n+1} extrapolation).

    h ← exp(dt·A)·h + (dt·B) ⊗ x,    y = hᵀC + D ⊙ x,    then y ⊙ SiLU(z) if z is given

Shapes: x, z, y (batch, d); dt (batch,); A scalar tensor; B, C (batch, d_state); D (d,).
  * functional (slots=None): h (batch, d_state, d) is read, a new state is returned, h is untouched;
  * pooled (slots: (batch,) int32/int64): h is a pool (pool_size, d_state, d) updated IN PLACE at rows slots[i];
    slot −1 skips row i (its y is 0). Slots must be distinct (two rows naming one slot race; the result is then
    undefined), which the serving cache guarantees by construction.

One program per (row, slice of d); the state slice lives in registers for the one step. The in-place kernel is
never autotuned (an autotuner would run it several times and so update the pool several times), and its launch
shape is fixed, so only the very first call per dtype pays Triton's compile.
No autograd here: the dispatcher (t2arec_fast.ops.state_step) uses the differentiable reference when grad is on.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ._common import accumulator_dtype, check_device, new_output, next_pow2, silu, state_tile, tl_dtype

STEP_BLOCK_D = 64
STEP_NUM_WARPS = 4


@triton.jit
def _state_step_kernel(
    h_in_ptr, h_out_ptr, slots_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr,   # inputs
    y_ptr,                                                                             # output (and h_out)
    d, n,
    HAS_SLOTS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64)
    if HAS_SLOTS:
        slot = tl.load(slots_ptr + i).to(tl.int64)
        row = tl.maximum(slot, 0)        # a valid address even for skipped rows; their accesses are masked anyway
    else:
        row = i
    offs_d, offs_n, mask_d, mask_n, state_offs, state_mask = state_tile(row, tl.program_id(1), d, n, BLOCK_N,
                                                                        BLOCK_D)
    if HAS_SLOTS:
        # `active` as a vector over d (not a scalar): Triton's interpreter rejects scalar masks combined this way
        active = (tl.zeros((BLOCK_D,), dtype=tl.int64) + slot) >= 0
        state_mask = state_mask & active[None, :]
    else:
        active = mask_d

    # Row i of the inputs always exists; only the state is addressed through the slot, so only state accesses
    # (and y, below) depend on `active`.
    h = tl.load(h_in_ptr + state_offs, mask=state_mask, other=0.0).to(ACC)
    x = tl.load(x_ptr + i * d + offs_d, mask=mask_d, other=0.0).to(ACC)
    dt = tl.load(dt_ptr + i).to(ACC)
    b = tl.load(B_ptr + i * n + offs_n, mask=mask_n, other=0.0).to(ACC)
    c = tl.load(C_ptr + i * n + offs_n, mask=mask_n, other=0.0).to(ACC)
    A = tl.load(A_ptr).to(ACC)

    h = h * tl.exp(dt * A) + (dt * b)[:, None] * x[None, :]
    y = tl.sum(h * c[:, None], axis=0)
    if HAS_D:
        y += tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(ACC) * x
    if HAS_Z:
        z = tl.load(z_ptr + i * d + offs_d, mask=mask_d, other=0.0).to(ACC)
        y = y * silu(z)
    y = tl.where(active, y, 0.0)         # a skipped row outputs 0

    tl.store(h_out_ptr + state_offs, h.to(h_out_ptr.dtype.element_ty), mask=state_mask)
    tl.store(y_ptr + i * d + offs_d, y.to(y_ptr.dtype.element_ty), mask=mask_d)


def state_step_launch(h, x, dt, A, B, C, D=None, z=None, slots=None):
    """Launch the step kernel (no autograd, no shape checks: the caller checks). Returns (y (batch, d) in x's
    dtype, h_out): a new (batch, d_state, d) state, or the pool `h` itself, updated in place, when slots are given.

    Raises:
        ValueError: tensors on several devices, or a pool that is not contiguous (it could not be updated in place).
        RuntimeError: CPU tensors outside Triton's interpreter.
    """
    check_device("state_step_triton", h, x, dt, A, B, C, D, z, slots)
    x, dt, B, C = x.contiguous(), dt.contiguous(), B.contiguous(), C.contiguous()
    D = None if D is None else D.contiguous()
    z = None if z is None else z.contiguous()
    nrows, d = x.shape
    n = B.shape[-1]
    if slots is not None:
        if not h.is_contiguous():
            raise ValueError("state_step_triton: the state pool must be contiguous to be updated in place")
        h_in = h_out = h
        slots = slots.contiguous()
    else:
        h_in = h.contiguous()
        h_out = new_output(h_in.shape, h_in.dtype, h_in.device)
    y = new_output((nrows, d), x.dtype, x.device)
    if nrows == 0:
        return y, h_out
    acc = accumulator_dtype(h.dtype, x.dtype, dt.dtype, B.dtype, C.dtype)
    block_d = next_pow2(min(STEP_BLOCK_D, d))
    grid = (nrows, triton.cdiv(d, block_d))
    _state_step_kernel[grid](
        h_in, h_out, slots if slots is not None else dt, x, dt, A, B, C,
        D if D is not None else x, z if z is not None else x, y, d, n,
        HAS_SLOTS=slots is not None, HAS_D=D is not None, HAS_Z=z is not None,
        BLOCK_N=next_pow2(n), BLOCK_D=block_d, ACC=tl_dtype(acc), num_warps=STEP_NUM_WARPS,
    )
    return y, h_out


# ---- custom ops: a functional step, and the in-place pooled step (declares that it mutates the pool) ----------

@torch.library.custom_op("t2arec_fast::state_step", mutates_args=())
def _state_step_op(h: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                   C: torch.Tensor, D: Optional[torch.Tensor], z: Optional[torch.Tensor],
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    return state_step_launch(h, x, dt, A, B, C, D, z, slots=None)


@_state_step_op.register_fake
def _(h, x, dt, A, B, C, D, z):
    return x.new_empty(x.shape), h.new_empty(h.shape)


@torch.library.custom_op("t2arec_fast::state_step_pooled_", mutates_args=("pool",))
def _state_step_pooled_op(pool: torch.Tensor, slots: torch.Tensor, x: torch.Tensor, dt: torch.Tensor,
                          A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, D: Optional[torch.Tensor],
                          z: Optional[torch.Tensor]) -> torch.Tensor:
    y, _ = state_step_launch(pool, x, dt, A, B, C, D, z, slots=slots)
    return y


@_state_step_pooled_op.register_fake
def _(pool, slots, x, dt, A, B, C, D, z):
    return x.new_empty(x.shape)


def state_step_triton(h, x, dt, A, B, C, D=None, z=None, slots=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """One step → (y (batch, d), h). slots None: h is (batch, d_state, d) and a NEW state is returned. slots
    (batch,) int: h is a pool (pool_size, d_state, d) updated in place at rows slots[i] (−1 = skip, y row 0) and
    returned. Shapes are checked by the caller (t2arec_fast.ops.selective_state_step); docs/kernels.md.

    Raises:
        ValueError, RuntimeError: as `state_step_launch` (devices, a non-contiguous pool).
    """
    if not torch.is_tensor(A):
        A = torch.tensor(float(A), dtype=dt.dtype, device=x.device)
    elif A.device != x.device:
        A = A.to(x.device)
    if slots is None:
        return torch.ops.t2arec_fast.state_step(h, x, dt, A, B, C, D, z)
    y = torch.ops.t2arec_fast.state_step_pooled_(h, slots, x, dt, A, B, C, D, z)
    return y, h
