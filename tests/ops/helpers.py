"""Input builders and error measures shared by the op tests."""
from __future__ import annotations

import torch

SCAN_ARG_NAMES = ("x", "dt", "A", "B", "C", "D", "z", "initial_state")


def make_scan_inputs(batch, seqlen, d, d_state, *, dtype=torch.float64, device="cpu", with_z=True,
                     with_h0=True, with_D=True, pads=None, seed=0):
    """Random scan inputs as a dict of leaf tensors (requires_grad) in SCAN_ARG_NAMES order.

    pads[i] left-pads row i: dt = 0 there (the state passes through) and x, B, C are still random, exactly as the
    model produces them. A is a 0-dim tensor < 0; dt is in (0, 0.3], so decays range from ~1 down to ~e^-1.
    """
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    dt = torch.rand(batch, seqlen, generator=g, dtype=torch.float64) * 0.3 + 1e-3
    for row, p in enumerate(pads or ()):
        dt[row, :p] = 0.0
    inputs = {
        "x": rand(batch, seqlen, d), "dt": dt, "A": torch.tensor(-1.7, dtype=torch.float64),
        "B": rand(batch, seqlen, d_state), "C": rand(batch, seqlen, d_state),
        "D": rand(d) if with_D else None, "z": rand(batch, seqlen, d) if with_z else None,
        "initial_state": rand(batch, d_state, d) if with_h0 else None,
    }
    return {k: None if v is None else v.to(device=device, dtype=dtype).requires_grad_() for k, v in inputs.items()}


def cast_inputs(inputs, dtype):
    """Fresh leaves of `inputs` in another dtype (A, dt follow too)."""
    return {k: None if v is None else v.detach().to(dtype).requires_grad_() for k, v in inputs.items()}


def run_with_grads(fn, inputs, grad_y, grad_h):
    """y, final_state and the gradients of <y, grad_y> + <final_state, grad_h> w.r.t. every non-None input.

    Returns a dict name -> tensor (float64 copies), with 'y' and 'final_state' included.
    """
    args = [inputs[k] for k in SCAN_ARG_NAMES]
    y, h = fn(*args)
    loss = (y * grad_y.to(y.dtype)).sum() + (h * grad_h.to(h.dtype)).sum()
    leaves = [(k, v) for k, v in inputs.items() if v is not None]
    grads = torch.autograd.grad(loss, [v for _, v in leaves])
    out = {"y": y, "final_state": h}
    out.update({"d" + k: g for (k, _), g in zip(leaves, grads)})
    return {k: v.detach().double().cpu() for k, v in out.items()}


def rel_err(a, b):
    """Max abs error normalised by the max magnitude of the truth b (normwise relative error); an all-zero truth
    (e.g. dA when no step sees a non-zero state) is compared in absolute terms."""
    if b.numel() == 0:
        return 0.0
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / (scale if scale > 0 else 1.0)
