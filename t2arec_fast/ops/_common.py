"""What the scan forms (selective_scan.py, export_scan.py) and the one-step forms (state_step.py) share: the input
checks and the skip-and-gate output. Its own module so that those modules import it, not each other."""
from __future__ import annotations

import torch.nn.functional as F


def check_scan_inputs(x, dt, A, B, C, D, z, initial_state):
    """Shapes and dtypes of a selective scan's inputs (module docstring of selective_scan.py).

    Raises:
        ValueError: a shape that does not fit the others.
        TypeError: dt, B or C not floating point.
    """
    if x.dim() != 3:
        raise ValueError(f"selective_scan: x must be (batch, seqlen, d), got shape {tuple(x.shape)}")
    b, L, d = x.shape
    if dt.shape != (b, L):
        raise ValueError(f"selective_scan: dt must be (batch, seqlen)={(b, L)}, got {tuple(dt.shape)}")
    if B.dim() != 3 or B.shape[:2] != (b, L) or C.shape != B.shape:
        raise ValueError(
            f"selective_scan: B and C must be (batch, seqlen, d_state) with batch, seqlen = {(b, L)}; "
            f"got B {tuple(B.shape)}, C {tuple(C.shape)}")
    if A.numel() != 1:
        raise ValueError(f"selective_scan: A must be a scalar tensor, got shape {tuple(A.shape)}")
    if D is not None and D.shape != (d,):
        raise ValueError(f"selective_scan: D must be (d,)={(d,)}, got {tuple(D.shape)}")
    if z is not None and z.shape != x.shape:
        raise ValueError(f"selective_scan: z must have x's shape {tuple(x.shape)}, got {tuple(z.shape)}")
    n = B.shape[-1]
    if initial_state is not None and initial_state.shape != (b, n, d):
        raise ValueError(
            f"selective_scan: initial_state must be (batch, d_state, d)={(b, n, d)}, got {tuple(initial_state.shape)}")
    for name, t in (("dt", dt), ("B", B), ("C", C)):
        if not t.is_floating_point():
            raise TypeError(f"selective_scan: {name} must be a floating tensor, got {t.dtype}")


def finish_output(y, x, D, z):
    """y + D ⊙ x, then ⊙ SiLU(z): the skip and the gate every scan and step form ends with (None skips either)."""
    if D is not None:
        y = y + x * D
    if z is not None:
        y = y * F.silu(z)
    return y
