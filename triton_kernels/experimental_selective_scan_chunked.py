"""EXPERIMENTAL — chunked ("state-space dual") selective scan kernels: opt-in only (`selective_scan(...,
backend="triton", triton_impl="chunked")`), never chosen by "auto". Correct and tested, but slower than the
sequential kernels everywhere measured (H200, (4096, 200, 64, 32): fwd+bwd 51.5 ms vs 2.6 ms in float32, 5.0 vs
2.8 ms in bfloat16; bench/results and docs/kernels.md): the backward kernel holds a dozen (CHUNK × d) tiles at
once, and float32 "ieee" dots run on FMA units. Kept, behind this boundary, as the starting point for a tensor-core
path (fewer live tiles per program, bf16 operands); nothing outside selective_scan.py's impl="chunked" imports it.

Same recurrence and shapes as selective_scan.py. Each program owns one sequence and one slice of d and walks the
sequence CHUNK steps at a time, doing the work of a chunk with matrix products (tl.dot) instead of CHUNK dependent
vector steps. Within a chunk starting from state H0, with s_t = Σ_{τ≤t} dt_τ·A (cumulative log-decay, inclusive)
and the causal decay matrix M[t,τ] = exp(s_t − s_τ) for τ ≤ t (0 above the diagonal):

    Y     = ((C Bᵀ) ∘ M ∘ dt_τ) X  +  exp(s) ∘ (C H0)                      (T×d)
    H_end = exp(s_last) H0  +  (B ∘ exp(s_last − s)·dt)ᵀ X                  (n×d)

Backward, walking chunks in reverse and carrying G = ∂L/∂h flowing into the chunk's last state from the future
(G = d(final_state) for the last chunk), with P = X dYpᵀ (P[t,u] = x_t·dyp_u) and tail = exp(s_last − s):

    dX  = dt ∘ ( (C Bᵀ ∘ M)ᵀ dYp + tail ∘ (B G) )  +  D ∘ dYp
    gx  = (P ∘ Mᵀ) C + tail ∘ (X Gᵀ)           dB = dt ∘ gx               (gx_t = g_t x_t, g_t = ∂L/∂h_t)
    dC  = (Pᵀ ∘ M ∘ dt_τ) B + exp(s) ∘ (dYp H0ᵀ)
    G  ← (C ∘ exp(s))ᵀ dYp + exp(s_last) G
    ∂L/∂l_t (l = dt·A) = ⟨G, H_end⟩ + Σ_{u=t..last} (C_u·dC_u − dt_u B_u·gx_u)

The last identity needs the state at both ends of the chunk; the forward kernel therefore stores the state at every
chunk boundary (batch × (seqlen/CHUNK + 1) × d_state × d, float32: about d_state/CHUNK times the size of x, never
per step), and the backward anchors the decay gradient at each chunk end so that its sums run over ≤ CHUNK terms.

Precision: every tile is float32 (bf16/fp16 inputs are widened on load). Products of float32 inputs use
input_precision="ieee" (exact float32 FMA, no TF32), products for bf16/fp16 inputs use TF32 tensor cores (TF32
keeps 10 mantissa bits, more than bf16's 7, so the error stays below the inputs' own rounding).
float64 goes through the sequential kernels (tl.dot in float64 is not portable across GPUs and Triton versions);
the interpreter does run these kernels in float64, which is how tests check the algebra to 1e-10.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import accumulator_dtype, new_output, next_pow2, silu, silu_with_grad, state_tile, tl_dtype

DEFAULT_CHUNK = 32
DEFAULT_BLOCK_D = 64
DEFAULT_NUM_WARPS = 4


@triton.jit
def _chunk_tiles(x_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, dy_ptr, A, seq, t0, L, d, n,
                 offs_t, offs_d, offs_n, mask_d, mask_n,
                 HAS_Z: tl.constexpr, HAS_DY: tl.constexpr, ACC: tl.constexpr):
    """One chunk's inputs as ACC tiles; rows past the end of the sequence read as 0 (dt = 0: no decay, no input),
    so a partial last chunk behaves like right-padding that leaves the state untouched."""
    rows = t0 + offs_t
    row_ok = rows < L
    flat = seq * L + rows                                    # int64 (CHUNK,)
    mask_td = row_ok[:, None] & mask_d[None, :]
    mask_tn = row_ok[:, None] & mask_n[None, :]
    X = tl.load(x_ptr + flat[:, None] * d + offs_d[None, :], mask=mask_td, other=0.0).to(ACC)
    dt = tl.load(dt_ptr + flat, mask=row_ok, other=0.0).to(ACC)
    Bm = tl.load(B_ptr + flat[:, None] * n + offs_n[None, :], mask=mask_tn, other=0.0).to(ACC)
    Cm = tl.load(C_ptr + flat[:, None] * n + offs_n[None, :], mask=mask_tn, other=0.0).to(ACC)
    if HAS_Z:
        Z = tl.load(z_ptr + flat[:, None] * d + offs_d[None, :], mask=mask_td, other=0.0).to(ACC)
    else:
        Z = X  # placeholder, never read
    if HAS_DY:
        dY = tl.load(dy_ptr + flat[:, None] * d + offs_d[None, :], mask=mask_td, other=0.0).to(ACC)
    else:
        dY = X  # placeholder, never read
    s = tl.cumsum(dt * A, axis=0)
    return X, dt, Bm, Cm, Z, dY, s


@triton.jit
def _last(v, offs_t, CHUNK: tl.constexpr):
    """v[CHUNK − 1] of a (CHUNK,) tensor, as a scalar (register tensors cannot be indexed)."""
    return tl.sum(tl.where(offs_t == CHUNK - 1, v, 0.0), axis=0)


@triton.jit
def _scan_chunked_fwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, h0_ptr,        # inputs
    y_ptr, hT_ptr, states_ptr,                                       # outputs
    L, d, n, n_chunks,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_H0: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
):
    seq = tl.program_id(0).to(tl.int64)
    offs_d, offs_n, mask_d, mask_n, state_offs, state_mask = state_tile(0, tl.program_id(1), d, n, BLOCK_N, BLOCK_D)
    offs_t = tl.arange(0, CHUNK)
    causal = offs_t[:, None] >= offs_t[None, :]

    A = tl.load(A_ptr).to(ACC)
    if HAS_D:
        D = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
    if HAS_H0:
        h = tl.load(h0_ptr + seq * n * d + state_offs, mask=state_mask, other=0.0).to(ACC)
    else:
        h = tl.zeros((BLOCK_N, BLOCK_D), dtype=ACC)
    states_seq = states_ptr + seq * (n_chunks + 1) * n * d

    for c in range(n_chunks):
        tl.store(states_seq + c * n * d + state_offs, h, mask=state_mask)     # state entering chunk c
        t0 = c * CHUNK
        X, dt, Bm, Cm, Z, _, s = _chunk_tiles(x_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, x_ptr, A, seq, t0, L, d, n,
                                              offs_t, offs_d, offs_n, mask_d, mask_n, HAS_Z, False, ACC)
        s_last = _last(s, offs_t, CHUNK)
        decay = tl.exp(tl.where(causal, s[:, None] - s[None, :], float("-inf")))   # M; exp(−inf) = 0 above
        W = tl.dot(Cm, tl.trans(Bm), input_precision=PREC) * decay * dt[None, :]
        Y = tl.dot(W, X, input_precision=PREC) + tl.exp(s)[:, None] * tl.dot(Cm, h, input_precision=PREC)
        if HAS_D:
            Y += D[None, :] * X
        if HAS_Z:
            Y = Y * silu(Z)
        rows = t0 + offs_t
        tl.store(y_ptr + (seq * L + rows)[:, None] * d + offs_d[None, :], Y.to(y_ptr.dtype.element_ty),
                 mask=(rows < L)[:, None] & mask_d[None, :])
        w_end = tl.exp(s_last - s) * dt
        h = tl.exp(s_last) * h + tl.dot(tl.trans(Bm * w_end[:, None]), X, input_precision=PREC)

    tl.store(states_seq + n_chunks * n * d + state_offs, h, mask=state_mask)
    tl.store(hT_ptr + seq * n * d + state_offs, h.to(hT_ptr.dtype.element_ty), mask=state_mask)


@triton.jit
def _scan_chunked_bwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, states_ptr, dy_ptr, dhT_ptr,          # inputs
    dx_ptr, dz_ptr, dB_part_ptr, dC_part_ptr, dl_part_ptr, bgx_part_ptr, dD_part_ptr, dh0_ptr,  # outputs
    nseq, L, d, n, n_chunks,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
):
    seq = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1)
    offs_d, offs_n, mask_d, mask_n, state_offs, state_mask = state_tile(0, blk, d, n, BLOCK_N, BLOCK_D)
    offs_t = tl.arange(0, CHUNK)
    causal = offs_t[:, None] >= offs_t[None, :]         # [t, τ]: τ ≤ t
    part_row = blk * nseq + seq                          # this (slice, sequence) in the partial buffers

    A = tl.load(A_ptr).to(ACC)
    if HAS_D:
        D = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
    g = tl.load(dhT_ptr + seq * n * d + state_offs, mask=state_mask, other=0.0).to(ACC)
    dD = tl.zeros((BLOCK_D,), dtype=ACC)
    states_seq = states_ptr + seq * (n_chunks + 1) * n * d

    for i in range(n_chunks):
        c = n_chunks - 1 - i
        t0 = c * CHUNK
        X, dt, Bm, Cm, Z, dY, s = _chunk_tiles(x_ptr, dt_ptr, B_ptr, C_ptr, z_ptr, dy_ptr, A, seq, t0, L, d, n,
                                               offs_t, offs_d, offs_n, mask_d, mask_n, HAS_Z, True, ACC)
        h0 = tl.load(states_seq + c * n * d + state_offs, mask=state_mask, other=0.0)
        h_end = tl.load(states_seq + (c + 1) * n * d + state_offs, mask=state_mask, other=0.0)
        rows = t0 + offs_t
        row_ok = rows < L
        out_td = (seq * L + rows)[:, None] * d + offs_d[None, :]
        mask_td = row_ok[:, None] & mask_d[None, :]

        s_last = _last(s, offs_t, CHUNK)
        decay = tl.exp(tl.where(causal, s[:, None] - s[None, :], float("-inf")))   # M[t, τ]
        CBM = tl.dot(Cm, tl.trans(Bm), input_precision=PREC) * decay             # (C Bᵀ) ∘ M
        if HAS_Z:
            # the gate needs y before it: recompute the scan's output of this chunk
            y_pre = tl.dot(CBM * dt[None, :], X, input_precision=PREC) \
                + tl.exp(s)[:, None] * tl.dot(Cm, h0, input_precision=PREC)
            if HAS_D:
                y_pre += D[None, :] * X
            gate, dgate = silu_with_grad(Z)
            dZ = dY * y_pre * dgate
            tl.store(dz_ptr + out_td, dZ.to(dz_ptr.dtype.element_ty), mask=mask_td)
            dYp = dY * gate
        else:
            dYp = dY
        dD += tl.sum(dYp * X, axis=0)

        tail = tl.exp(s_last - s)
        dX = dt[:, None] * (tl.dot(tl.trans(CBM), dYp, input_precision=PREC)
                            + tail[:, None] * tl.dot(Bm, g, input_precision=PREC))
        if HAS_D:
            dX += D[None, :] * dYp
        tl.store(dx_ptr + out_td, dX.to(dx_ptr.dtype.element_ty), mask=mask_td)

        P = tl.dot(X, tl.trans(dYp), input_precision=PREC)                     # P[t, u] = x_t · dyp_u
        gx = tl.dot(P * tl.trans(decay), Cm, input_precision=PREC) \
            + tail[:, None] * tl.dot(X, tl.trans(g), input_precision=PREC)      # g_t x_t, (CHUNK, BLOCK_N)
        dC = tl.dot(tl.trans(P) * decay * dt[None, :], Bm, input_precision=PREC) \
            + tl.exp(s)[:, None] * tl.dot(dYp, tl.trans(h0), input_precision=PREC)
        out_tn = (part_row * L + rows)[:, None] * n + offs_n[None, :]
        mask_tn = row_ok[:, None] & mask_n[None, :]
        tl.store(dB_part_ptr + out_tn, dt[:, None] * gx, mask=mask_tn)
        tl.store(dC_part_ptr + out_tn, dC, mask=mask_tn)

        # decay gradient, anchored at this chunk's end: ⟨G, H_end⟩ + suffix sums of (C·dC − dt B·gx)
        bgx = tl.sum(Bm * gx, axis=1)
        per_step = tl.sum(Cm * dC, axis=1) - dt * bgx
        suffix = tl.sum(tl.where(tl.trans(causal), per_step[None, :], 0.0), axis=1)   # Σ_{u ≥ t}
        dl = tl.sum(tl.sum(g * h_end, axis=1), axis=0) + suffix
        tl.store(dl_part_ptr + part_row * L + rows, dl, mask=row_ok)
        tl.store(bgx_part_ptr + part_row * L + rows, bgx, mask=row_ok)

        g = tl.dot(tl.trans(Cm * tl.exp(s)[:, None]), dYp, input_precision=PREC) + tl.exp(s_last) * g

    tl.store(dD_part_ptr + seq * d + offs_d, dD, mask=mask_d)
    tl.store(dh0_ptr + seq * n * d + state_offs, g.to(dh0_ptr.dtype.element_ty), mask=state_mask)


def chunk_length(chunk=None) -> int:
    """The chunk length actually used: a power of two ≥ 16 (tl.dot needs every tile side ≥ 16)."""
    return max(16, next_pow2(chunk or DEFAULT_CHUNK))


def _config(x_dtype, d, n, chunk, block_d, num_warps, precision):
    block_n = max(16, next_pow2(n))
    block_d = max(16, next_pow2(min(block_d or DEFAULT_BLOCK_D, d)))
    prec = precision or ("ieee" if x_dtype in (torch.float32, torch.float64) else "tf32")
    return block_n, block_d, chunk_length(chunk), num_warps or DEFAULT_NUM_WARPS, prec


def chunked_fwd(x, dt, A, B, C, D, z, h0, state_dtype, *, chunk=None, block_d=None, num_warps=None,
                precision=None):
    """Contiguous inputs, L > 0, batch > 0. Returns (y, final_state, chunk_states float32/64)."""
    nseq, L, d = x.shape
    n = B.shape[-1]
    acc = accumulator_dtype(x.dtype, dt.dtype, B.dtype, C.dtype)
    block_n, block_d, chunk, warps, prec = _config(x.dtype, d, n, chunk, block_d, num_warps, precision)
    n_chunks = triton.cdiv(L, chunk)
    y = new_output((nseq, L, d), x.dtype, x.device)
    hT = new_output((nseq, n, d), state_dtype, x.device)
    states = new_output((nseq, n_chunks + 1, n, d), acc, x.device)
    _scan_chunked_fwd_kernel[(nseq, triton.cdiv(d, block_d))](
        x, dt, A, B, C, D if D is not None else x, z if z is not None else x, h0 if h0 is not None else x,
        y, hT, states, L, d, n, n_chunks,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_H0=h0 is not None,
        BLOCK_N=block_n, BLOCK_D=block_d, CHUNK=chunk, ACC=tl_dtype(acc), PREC=prec, num_warps=warps)
    return y, hT, states


def chunked_bwd(x, dt, A, B, C, D, z, states, dy, dhT, state_dtype, *, chunk=None, block_d=None, num_warps=None,
                precision=None):
    """Contiguous inputs, L > 0, batch > 0, `states` from chunked_fwd run with the same `chunk`. Returns (dx,
    dz | None, dB_part, dC_part, dl_part, bgx_part, dD_part, dh0); *_part buffers carry a leading axis over d
    slices, summed by the caller.

    Raises:
        ValueError: `states` does not hold one state per chunk boundary for this chunk length.
    """
    nseq, L, d = x.shape
    n = B.shape[-1]
    acc = states.dtype
    block_n, block_d, chunk, warps, prec = _config(x.dtype, d, n, chunk, block_d, num_warps, precision)
    n_chunks = triton.cdiv(L, chunk)
    if states.shape[:2] != (nseq, n_chunks + 1):
        raise ValueError(f"chunked_bwd: chunk states {tuple(states.shape)} do not come from a chunk length of {chunk} "
                         f"over {L} steps (expected ({nseq}, {n_chunks + 1}, ...))")
    n_blk = triton.cdiv(d, block_d)
    dev = x.device
    dx = new_output((nseq, L, d), x.dtype, dev)
    dz = new_output((nseq, L, d), x.dtype, dev) if z is not None else None
    dB_part = new_output((n_blk, nseq, L, n), acc, dev)
    dC_part = new_output((n_blk, nseq, L, n), acc, dev)
    dl_part = new_output((n_blk, nseq, L), acc, dev)
    bgx_part = new_output((n_blk, nseq, L), acc, dev)
    dD_part = new_output((nseq, d), acc, dev)
    dh0 = new_output((nseq, n, d), state_dtype, dev)
    _scan_chunked_bwd_kernel[(nseq, n_blk)](
        x, dt, A, B, C, D if D is not None else x, z if z is not None else x, states, dy, dhT,
        dx, dz if dz is not None else dx, dB_part, dC_part, dl_part, bgx_part, dD_part, dh0,
        nseq, L, d, n, n_chunks,
        HAS_D=D is not None, HAS_Z=z is not None,
        BLOCK_N=block_n, BLOCK_D=block_d, CHUNK=chunk, ACC=tl_dtype(acc), PREC=prec, num_warps=warps)
    return dx, dz, dB_part, dC_part, dl_part, bgx_part, dD_part, dh0
