"""Loop-free selective scan for ONNX export (`selective_scan(..., backend="export")`).

An exported graph must not contain a Loop/Scan node (slow in ONNX Runtime) nor one node per time step (the graph
would grow with the sequence length). Two forms satisfy that, both traceable with dynamic batch and length:

  * "matrix" (default, any opset ≥ 14): the whole sequence in one state-space-dual block. With the per-step
    log-decay a_t = dt_t·A and its prefix sum s_t = Σ_{k≤t} a_k,
        y_t = Σ_{τ≤t} exp(s_t − s_τ) (C_t·B_τ) dt_τ x_τ  +  exp(s_t) C_t·h_0
        h_L = Σ_τ exp(s_L − s_τ) dt_τ B_τ ⊗ x_τ          +  exp(s_L) h_0
    i.e. a masked (L × L) attention-like product per sequence: O(L²) work, but L ≤ a few hundred in
    recommendation and every op is a large batched MatMul, which ONNX Runtime runs well.
  * "linear_attention" (opset 27): one ONNX `LinearAttention` node with update_rule="gated" — exactly this
    recurrence with query = C, key = dt·B, value = x, decay = dt·A, one head, scale 1. PyTorch has no such op, so
    the node comes from `_GatedLinearAttention.symbolic`; in eager PyTorch the same function evaluates the matrix
    form, so tracing and validation see identical numbers.

The form is an argument (`selective_scan(..., backend="export", export_form=...)`); a model being exported stores
it with its backend (`T2ARec.set_backend("export", export_form=...)`).
"""
from __future__ import annotations

import torch

from ._backend import check_choice
from ._common import check_scan_inputs, finish_output

SCAN_FORMS = ("matrix", "linear_attention")


def check_scan_form(form: str) -> str:
    """→ form, if it is one of SCAN_FORMS.

    Raises:
        ValueError: any other form, naming the choices.
    """
    return check_choice("scan form", form, SCAN_FORMS)


def selective_scan_export(x, dt, A, B, C, D=None, z=None, initial_state=None, form="matrix"):
    """Same contract as `selective_scan`: → (y (batch, L, d), final_state (batch, d_state, d)).

    form: "matrix" or "linear_attention" (the latter emits its ONNX node only while exporting; in eager PyTorch it
    evaluates the matrix form). Source: docs/onnx.md.

    Raises:
        ValueError: an unknown form, or shapes that do not fit.
        TypeError: dt, B or C not floating point.
    """
    check_scan_form(form)
    check_scan_inputs(x, dt, A, B, C, D, z, initial_state)
    if initial_state is None:
        initial_state = x.new_zeros(x.shape[0], B.shape[-1], x.shape[-1])
    log_decay = dt * A                                                   # (b, L) per-step log-decay, ≤ 0
    if form == "linear_attention" and torch.onnx.is_in_onnx_export():
        y, h = _GatedLinearAttention.apply(C, B * dt[..., None], x, initial_state, log_decay)
    else:
        y, h = _matrix_scan(x, dt, log_decay, B, C, initial_state)
    return finish_output(y, x, D, z), h


def _matrix_scan(x, dt, log_decay, B, C, h0):
    """The dual form above (without the D skip and the gate). h0: (b, n, d)."""
    L = x.shape[1]
    s = torch.cumsum(log_decay, dim=1)                                   # (b, L), non-increasing
    # exp(s_t − s_τ) for τ ≤ t; above the diagonal the difference is positive, so mask it BEFORE exp.
    pos = torch.arange(L, device=x.device)
    causal = pos[:, None] >= pos[None, :]                                # (L, L)
    seg = s[:, :, None] - s[:, None, :]
    decay = torch.exp(torch.where(causal, seg, torch.full_like(seg, float("-inf"))))
    scores = torch.matmul(C, B.transpose(1, 2)) * decay                  # (b, t, τ)
    y = torch.matmul(scores, x * dt[..., None])                          # (b, L, d)
    y = y + torch.exp(s)[..., None] * torch.matmul(C, h0)                # carried-in state
    s_last = s[:, -1:]                                                   # (b, 1)
    w_end = torch.exp(s_last - s) * dt                                   # weight of step τ in h_L
    h = torch.matmul((B * w_end[..., None]).transpose(1, 2), x)          # (b, n, d)
    h = h + torch.exp(s_last)[..., None] * h0
    return y, h


class _GatedLinearAttention(torch.autograd.Function):
    """ONNX `LinearAttention(update_rule="gated")` with one head: S_t = exp(g_t) S_{t−1} + k_t ⊗ v_t, o_t = q_tᵀ S_t.

    query (b, L, n), key (b, L, n), value (b, L, d), past_state (b, n, d), decay g (b, L) → (o (b, L, d), S_L).
    Only used while exporting; `forward` is the matrix form so the traced shapes and values are right.
    """

    @staticmethod
    def forward(ctx, query, key, value, past_state, decay):
        ones = torch.ones_like(decay)                       # key already carries dt; the matrix form wants dt apart
        return _matrix_scan(value, ones, decay, key, query, past_state)

    @staticmethod
    def symbolic(g, query, key, value, past_state, decay):
        # The op's state and decay carry a head axis: state (b, H=1, n, d), scalar decay per head (b, L, H=1).
        axis1 = g.op("Constant", value_t=torch.tensor([1], dtype=torch.int64))
        axis2 = g.op("Constant", value_t=torch.tensor([2], dtype=torch.int64))
        past4 = g.op("Unsqueeze", past_state, axis1)
        decay3 = g.op("Unsqueeze", decay, axis2)
        out, present4 = g.op("LinearAttention", query, key, value, past4, decay3, outputs=2,
                             update_rule_s="gated", q_num_heads_i=1, kv_num_heads_i=1, scale_f=1.0)
        present = g.op("Squeeze", present4, axis1)
        # The exporter cannot infer shapes through an op it does not know; without them it wraps later
        # squeezes in If nodes. Shapes equal value's and past_state's.
        out.setType(value.type())
        present.setType(past_state.type())
        return out, present
