"""Selective scan (Mamba-2 style, one head, scalar decay per step): reference forms and the public dispatcher.

Recurrence (docs/model.md §2), per sequence:
    h_t = exp(dt_t * A) * h_{t-1} + (dt_t * B_t) ⊗ x_t          h_t: (d_state, d)
    y_t = h_tᵀ C_t + D ⊙ x_t          then optionally y_t ← y_t ⊙ SiLU(z_t)

Shapes: x, z (batch, seqlen, d); dt (batch, seqlen) = Δ after softplus (0 at left-pad positions, which passes the state
through untouched); A scalar tensor (< 0); B, C (batch, seqlen, d_state); D (d,);
initial_state / final_state (batch, d_state, d).

Two reference forms with full autograd:
  * `selective_scan_loop`: the sequential recurrence, the definition everything is tested against;
  * `selective_scan_chunked`: the same maths in chunked matrix ("state-space dual") form, fast on CPU.
The Triton kernels (`t2arec_fast.triton_kernels`) plug in beneath `selective_scan(..., backend="triton")`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._backend import resolve_backend
from ._common import check_scan_inputs, finish_output
from .export_scan import selective_scan_export

DEFAULT_CHUNK = 64


def selective_scan_loop(x, dt, A, B, C, D=None, z=None, initial_state=None):
    """The recurrence as written, one step at a time → (y (batch, seqlen, d), final_state (batch, d_state, d)) in
    the inputs' dtype (shapes: module docstring). Slow; the ground truth for tests.

    Raises:
        ValueError: shapes that do not fit each other (naming the tensor and the shape expected).
        TypeError: dt, B or C not floating point.
    """
    check_scan_inputs(x, dt, A, B, C, D, z, initial_state)
    b, L, d = x.shape
    n = B.shape[-1]
    h = x.new_zeros(b, n, d) if initial_state is None else initial_state
    ys = []
    for t in range(L):
        decay = torch.exp(dt[:, t] * A)[:, None, None]
        h = decay * h + (dt[:, t, None] * B[:, t])[:, :, None] * x[:, t, None, :]
        ys.append(torch.einsum("bnd,bn->bd", h, C[:, t]))
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, d)
    return finish_output(y, x, D, z), h


def selective_scan_chunked(x, dt, A, B, C, D=None, z=None, initial_state=None, chunk_size=DEFAULT_CHUNK):
    """Chunked matrix form of the same recurrence.

    Inside a chunk of Q steps with cumulative log-decay s_t = Σ_{τ≤t} dt_τ A:
        y_t   = exp(s_t) C_t·h_0 + Σ_{τ≤t} exp(s_t − s_τ) (C_t·B_τ) dt_τ x_τ
        h_end = exp(s_Q) h_0     + Σ_τ   exp(s_Q − s_τ) dt_τ B_τ ⊗ x_τ
    and a short sequential pass carries h across chunks. exp() only ever sees non-positive arguments.
    → (y (batch, seqlen, d), final_state (batch, d_state, d)) as `selective_scan_loop`; chunk_size Q ≥ 1.

    Raises:
        ValueError: shapes that do not fit each other (naming the tensor and the shape expected).
        TypeError: dt, B or C not floating point.
    """
    check_scan_inputs(x, dt, A, B, C, D, z, initial_state)
    b, L, d = x.shape
    n = B.shape[-1]
    h = x.new_zeros(b, n, d) if initial_state is None else initial_state
    if L == 0:
        return finish_output(x.new_zeros(b, 0, d), x, D, z), h
    Q = min(chunk_size, L)
    pad = (-L) % Q
    xs, dts, Bs, Cs = x, dt, B, C
    if pad:  # right-pad with dt = 0: those steps leave the state untouched and their outputs are dropped
        xs = F.pad(x, (0, 0, 0, pad))
        dts = F.pad(dt, (0, pad))
        Bs = F.pad(B, (0, 0, 0, pad))
        Cs = F.pad(C, (0, 0, 0, pad))
    nc = (L + pad) // Q
    xc = xs.reshape(b, nc, Q, d)
    dtc = dts.reshape(b, nc, Q)
    Bc = Bs.reshape(b, nc, Q, n)
    Cc = Cs.reshape(b, nc, Q, n)

    s = torch.cumsum(dtc * A, dim=-1)                                   # (b, nc, Q), non-increasing
    seg = s[..., :, None] - s[..., None, :]                             # s_t − s_τ
    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
    # Decays below the dtype's smallest normal number are flushed to 0: x86 multiplies denormals ~100× slower, and
    # long chunks with large Δ·A produce many of them (float32: exp(x) is denormal for x < −87.3).
    underflow = seg < math.log(torch.finfo(seg.dtype).tiny)
    decay_mat = torch.exp(seg.masked_fill(~causal | underflow, float("-inf")))   # (b, nc, Q, Q)
    scores = torch.einsum("bctn,bcsn->bcts", Cc, Bc) * decay_mat
    y_intra = torch.einsum("bcts,bcsd->bctd", scores, xc * dtc[..., None])

    w_end = torch.exp(s[..., -1:] - s) * dtc                            # (b, nc, Q)
    chunk_states = torch.einsum("bcsn,bcsd->bcnd", Bc * w_end[..., None], xc)
    chunk_decay = torch.exp(s[..., -1])                                 # (b, nc)

    starts = []
    for c in range(nc):                                                 # nc = L/Q steps: short
        starts.append(h)
        h = chunk_decay[:, c, None, None] * h + chunk_states[:, c]
    h0 = torch.stack(starts, dim=1)                                     # state entering each chunk (b, nc, n, d)
    y_inter = torch.einsum("bctn,bcnd->bctd", Cc * torch.exp(s)[..., None], h0)
    y = (y_intra + y_inter).reshape(b, nc * Q, d)[:, :L]
    return finish_output(y, x, D, z), h


def selective_scan(x, dt, A, B, C, D=None, z=None, initial_state=None, backend="auto", *,
                   triton_impl="sequential", chunk_size=None, export_form="matrix"):
    """Selective scan → (y (batch, seqlen, d), final_state (batch, d_state, d)). See the module docstring for shapes.

    Every setting is an argument, fixed by the caller (a model stores its own): nothing is read from the
    environment or a module global, so a traced (torch.compile) call and its run see the same choice.
      backend: "auto" (Triton on CUDA tensors, the chunked reference elsewhere), "triton", "reference" (chunked),
        "loop" (the sequential definition) or "export" (loop-free graph for ONNX, see export_scan.py);
      triton_impl: which Triton kernels run, "sequential" (default) or "chunked" (opt-in, docs/kernels.md);
      chunk_size: chunk length of the chunked forms (reference: DEFAULT_CHUNK; Triton chunked: its own default);
      export_form: the graph form of backend="export", "matrix" (default) or "linear_attention" (opset 27).
    Source: docs/model.md (the recurrence), docs/kernels.md (the kernels), docs/onnx.md (the export forms).

    Raises:
        ValueError: bad shapes, or an unknown backend / triton_impl / export_form.
        TypeError: dt, B or C not floating point.
        RuntimeError: backend="triton" without an importable triton.
    """
    backend = resolve_backend(backend, x)
    if backend == "triton":
        from t2arec_fast.triton_kernels.selective_scan import selective_scan_triton
        check_scan_inputs(x, dt, A, B, C, D, z, initial_state)
        return selective_scan_triton(x, dt, A, B, C, D, z, initial_state, impl=triton_impl, chunk=chunk_size)
    if backend == "loop":
        return selective_scan_loop(x, dt, A, B, C, D, z, initial_state)
    if backend == "export":
        return selective_scan_export(x, dt, A, B, C, D, z, initial_state, form=export_form)
    return selective_scan_chunked(x, dt, A, B, C, D, z, initial_state, chunk_size=chunk_size or DEFAULT_CHUNK)
