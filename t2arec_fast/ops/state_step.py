"""One step of the selective scan for many users at once (serving, and Δ̂_{n+1} extrapolation in the losses).

    h ← exp(dt·A) h + (dt·B) ⊗ x,    y = hᵀC + D ⊙ x    (then y ⊙ SiLU(z) if z is given)

Shapes: x, z (batch, d); dt (batch,); A scalar tensor; B, C (batch, d_state); D (d,).
Three modes:
  * functional (slots=None): h is (batch, d_state, d); returns (y, h_new) and leaves h untouched (differentiable);
  * in place (in_place=True): h (batch, d_state, d), any strides, becomes h_new; returns (y, h). The same floats
    as the functional mode; serving steps views of its flat state buffers this way (no copy back);
  * pooled (slots given): h is a pool (pool_size, d_state, d) updated IN PLACE at rows slots[i]; slot −1 skips
    that row (its y is 0). Returns (y, h). Used by serving on a device-resident pool of user states.
"""
from __future__ import annotations

import torch

from ._backend import resolve_backend
from ._common import finish_output


def _check_step_inputs(h, x, dt, A, B, C, D, z, slots):
    if x.dim() != 2:
        raise ValueError(f"selective_state_step: x must be (batch, d), got {tuple(x.shape)}")
    b, d = x.shape
    if dt.shape != (b,):
        raise ValueError(f"selective_state_step: dt must be (batch,)={(b,)}, got {tuple(dt.shape)}")
    if B.dim() != 2 or B.shape[0] != b or C.shape != B.shape:
        raise ValueError(f"selective_state_step: B, C must be (batch, d_state); got {tuple(B.shape)}, {tuple(C.shape)}")
    n = B.shape[1]
    if h.dim() != 3 or h.shape[1:] != (n, d):
        raise ValueError(f"selective_state_step: state must be (*, d_state, d)=(*, {n}, {d}), got {tuple(h.shape)}")
    if slots is None and h.shape[0] != b:
        raise ValueError(f"selective_state_step: state batch {h.shape[0]} != x batch {b}")
    if slots is not None:
        if slots.shape != (b,) or slots.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"selective_state_step: slots must be int (batch,)={(b,)}, got {tuple(slots.shape)} "
                             f"{slots.dtype}")
        outside = (slots >= h.shape[0]) | (slots < -1)
        if outside.any():
            row = int(outside.nonzero()[0])
            raise IndexError(f"selective_state_step: slots must lie in [-1, {h.shape[0] - 1}]; row {row} has slot "
                             f"{int(slots[row])}")
    if D is not None and D.shape != (d,):
        raise ValueError(f"selective_state_step: D must be (d,)={(d,)}, got {tuple(D.shape)}")
    if z is not None and z.shape != x.shape:
        raise ValueError(f"selective_state_step: z must have x's shape, got {tuple(z.shape)}")


def state_step_reference(h, x, dt, A, B, C, D=None, z=None, in_place: bool = False):
    """Single step: h (batch, d_state, d), other inputs as in the module docstring → (y (batch, d), h_new
    (batch, d_state, d)); h is not modified, or (in_place) h is h_new (no autograd through it). The one
    definition the pooled and Triton forms are tested against. Unchecked (callers check: `selective_state_step`)."""
    decay = torch.exp(dt * A)[:, None, None]
    # decay·h + (dt·B) ⊗ x with the outer product added in one fused pass, no (batch, d_state, d) temporary for it
    # (at batch 64 on CPU 2.2× faster out of place, 3.2× in place than the broadcast product and sum). Out of place
    # it is torch.addcmul, not addcmul_, which torch.func has no batching rule for (the per-user test-time step
    # vmaps this function); both give the same floats.
    outer = ((dt[:, None] * B)[:, :, None], x[:, None, :])
    h_new = h.mul_(decay).addcmul_(*outer) if in_place else torch.addcmul(decay * h, *outer)
    y = torch.bmm(C[:, None, :], h_new)[:, 0]         # hᵀC; 6× faster than the einsum on CPU (no transposed copy)
    return finish_output(y, x, D, z), h_new


def state_step_output(carried, x, dt, A, B, C, D=None, z=None):
    """The output y of the same one step when the old state is only known through carried = hᵀC (its readout with
    the step's own C): y = exp(dt·A)·carried + dt·(B·C)·x (+ D ⊙ x) (⊙ SiLU(z)), equal to `state_step_reference`'s
    y because hᵀ_newC = exp(dt·A)·hᵀC + dt·(B·C)·x.

    Any leading dims: carried, x, z (..., d); dt (...,); B, C (..., d_state); A scalar; D (d,). Used by
    `T2AMambaBlock.extrapolate`, which gets hᵢᵀĈᵢ₊₁ at every position from one scan instead of materialising the
    states. Source: docs/model.md (one-step extrapolation)."""
    return finish_output(torch.exp(dt * A)[..., None] * carried + (dt * (B * C).sum(-1))[..., None] * x, x, D, z)


def selective_state_step(h, x, dt, A, B, C, D=None, z=None, slots=None, backend="auto", in_place: bool = False):
    """One step for a batch of users → (y (batch, d), h): the new state, or `h` itself updated in place when
    `slots` is given (a pool) or in_place is True (module docstring). backend: "auto" | "triton" | "reference"
    (others run the reference). The Triton kernel runs only without autograd (serving); with grad enabled the
    reference runs; in place on the Triton backend, its result is copied into h.
    Source: docs/model.md (the recurrence), docs/serving.md (the pooled device tier).

    Raises:
        ValueError: shapes that do not fit, or slots not an int (batch,) tensor; an unknown backend.
        IndexError: a slot outside [−1, pool_size − 1].
        RuntimeError: backend="triton" without an importable triton, or (Triton) tensors not on CUDA outside
            Triton's interpreter.
    """
    _check_step_inputs(h, x, dt, A, B, C, D, z, slots)
    backend = resolve_backend(backend, x)
    if slots is None:
        if backend == "triton" and not torch.is_grad_enabled():
            from t2arec_fast.triton_kernels.state_step import state_step_triton
            y, h_new = state_step_triton(h, x, dt, A, B, C, D, z, slots=None)
            return (y, h.copy_(h_new)) if in_place else (y, h_new)
        return state_step_reference(h, x, dt, A, B, C, D, z, in_place=in_place)
    if backend == "triton":
        from t2arec_fast.triton_kernels.state_step import state_step_triton
        return state_step_triton(h, x, dt, A, B, C, D, z, slots=slots)
    keep = slots >= 0
    y = x.new_zeros(x.shape)
    rows = slots[keep].long()
    y_keep, h_keep = state_step_reference(h[rows], x[keep], dt[keep], A, B[keep], C[keep],
                                          D, None if z is None else z[keep])
    h[rows] = h_keep.to(h.dtype)
    y[keep] = y_keep
    return y, h
