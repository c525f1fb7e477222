"""Triton selective scan vs the float64 loop (the definition) and the chunked PyTorch reference.

Both kernel implementations are tested: "sequential" (one step at a time; the default) and "chunked" (tl.dot per
chunk; opt-in). Every output buffer starts as NaN (conftest), so an element a kernel never
writes fails. float64: ≤ 1e-10 relative. float32: the kernel's error against float64 must stay within a small
multiple of the PyTorch float32 reference's own error (flash-attention style), so tolerances follow the shape and
the conditioning of each case.
"""
import functools

import pytest
import torch

from t2arec_fast.ops import selective_scan, selective_scan_chunked, selective_scan_loop
from t2arec_fast.triton_kernels import selective_scan as tk

from .helpers import SCAN_ARG_NAMES, cast_inputs, make_scan_inputs, rel_err, run_with_grads

# (batch, seqlen, d, d_state, with_z, with_h0, with_D, pads per row)
CASES = [
    pytest.param(1, 1, 16, 16, True, False, True, (0,), id="L1"),
    pytest.param(3, 7, 60, 32, True, True, True, (3, 0, 7), id="L7-d60-allpad-row"),
    pytest.param(1, 63, 64, 16, False, True, True, (10,), id="L63-noz"),
    pytest.param(3, 64, 16, 32, True, False, False, (0, 64, 5), id="L64-noD"),
    pytest.param(1, 65, 60, 16, False, False, False, (0,), id="L65-bare"),
    pytest.param(1, 200, 16, 16, True, True, True, (37,), id="L200-small"),
    pytest.param(3, 200, 64, 32, True, True, True, (150, 0, 200), id="L200-big", marks=pytest.mark.slow),
    pytest.param(3, 200, 60, 16, False, True, True, (0, 13, 1), id="L200-d60", marks=pytest.mark.slow),
]
# float32 tolerance = FACTOR × (PyTorch float32 reference's error) + FLOOR (both relative to max |truth|). dA sums
# over every step of every sequence through a reverse cumulative sum (module docstring of the kernel): its
# rounding error is a few times the reference's, hence the larger factor.
# The reference's own error on that scalar is itself noisy (it can be 1e-8 by luck), so dA also gets a floor.
FP32_FACTOR = {"dA": 10.0}
FP32_DEFAULT_FACTOR = 4.0
FP32_FLOOR = {"dA": 5e-5}
FP32_DEFAULT_FLOOR = 2e-6
@pytest.fixture(params=tk.IMPLS)
def impl(request):
    """Run the test with each kernel implementation ("chunked" + float64 runs only in the interpreter)."""
    return request.param


def triton_scan(impl):
    """The Triton scan with `impl` chosen explicitly (an argument, never a global)."""
    return functools.partial(tk.selective_scan_triton, impl=impl)


def _skip_chunked_float64_on_gpu(impl, device):
    if impl == "chunked" and device == "cuda":
        pytest.skip("float64 tl.dot is interpreter-only; on GPUs float64 always runs the sequential kernels")


def _upstream(inputs, seed=1):
    g = torch.Generator().manual_seed(seed)
    x, B = inputs["x"], inputs["B"]
    b, L, d = x.shape
    n = B.shape[-1]
    grad_y = torch.randn(b, L, d, generator=g, dtype=torch.float64).to(x.device)
    grad_h = torch.randn(b, n, d, generator=g, dtype=torch.float64).to(x.device)
    return grad_y, grad_h


@pytest.mark.parametrize("b, L, d, n, with_z, with_h0, with_D, pads", CASES)
def test_float64_matches_loop(b, L, d, n, with_z, with_h0, with_D, pads, device, impl):
    _skip_chunked_float64_on_gpu(impl, device)
    inputs = make_scan_inputs(b, L, d, n, device=device, with_z=with_z, with_h0=with_h0, with_D=with_D, pads=pads)
    gy, gh = _upstream(inputs)
    truth = run_with_grads(selective_scan_loop, inputs, gy, gh)
    got = run_with_grads(triton_scan(impl), inputs, gy, gh)
    assert truth.keys() == got.keys()
    for name in truth:
        assert got[name].shape == truth[name].shape, name
        assert torch.isfinite(got[name]).all(), f"{name} has NaN/inf (unwritten output?)"
        assert rel_err(got[name], truth[name]) <= 1e-10, name


@pytest.mark.parametrize("b, L, d, n, with_z, with_h0, with_D, pads", CASES)
def test_float32_within_reference_error(b, L, d, n, with_z, with_h0, with_D, pads, device, impl):
    inputs64 = make_scan_inputs(b, L, d, n, device=device, with_z=with_z, with_h0=with_h0, with_D=with_D,
                                pads=pads, seed=2)
    gy, gh = _upstream(inputs64, seed=3)
    truth = run_with_grads(selective_scan_loop, inputs64, gy, gh)
    ref = run_with_grads(selective_scan_chunked, cast_inputs(inputs64, torch.float32), gy, gh)
    got = run_with_grads(triton_scan(impl), cast_inputs(inputs64, torch.float32), gy, gh)
    for name in truth:
        ref_err = rel_err(ref[name], truth[name])
        err = rel_err(got[name], truth[name])
        bound = FP32_FACTOR.get(name, FP32_DEFAULT_FACTOR) * ref_err + FP32_FLOOR.get(name, FP32_DEFAULT_FLOOR)
        assert err <= bound, f"{name}: kernel error {err:.2e} > {bound:.2e} (reference error {ref_err:.2e})"


@pytest.mark.parametrize("block_d", [16, 32])
def test_split_d_partials_sum_to_the_whole(block_d, device, impl):
    """d = 60 split into slices of 16 or 32 (last slice partial): the per-slice dB/dC/decay partials must add up."""
    _skip_chunked_float64_on_gpu(impl, device)
    inputs = make_scan_inputs(2, 37, 60, 16, device=device, pads=(2, 0))
    args = [None if v is None else v.detach() for v in inputs.values()]
    y_ref, h_ref = selective_scan_loop(*args)
    gy, gh = _upstream(inputs)
    y, h, states = tk.scan_fwd(*args, impl=impl, block_d=block_d, chunk=16)
    grads = tk.scan_bwd(*args, states, gy, gh, impl=impl, chunk=16, block_d=block_d)
    grads_whole = tk.scan_bwd(*args, states, gy, gh, impl=impl, chunk=16, block_d=64)
    assert rel_err(y.double(), y_ref) <= 1e-12 and rel_err(h.double(), h_ref) <= 1e-12
    for g, g_whole in zip(grads, grads_whole):
        assert rel_err(g.double(), g_whole.double()) <= 1e-12


@pytest.mark.parametrize("chunk", [16, 64])
def test_chunk_lengths_agree(chunk, device):
    """Chunk lengths shorter and longer than the sequence (L = 40) give the same result; the backward is told the
    forward's chunk length (an argument of both ops, never recovered from a tensor's shape)."""
    if device == "cuda":
        pytest.skip("float64 tl.dot is interpreter-only")
    inputs = make_scan_inputs(1, 40, 16, 16, device=device, pads=(5,))
    args = [None if v is None else v.detach() for v in inputs.values()]
    gy, gh = _upstream(inputs)
    y, h, states = tk.scan_fwd(*args, impl="chunked", chunk=chunk)
    assert states.shape[1] == -(-40 // chunk) + 1
    grads = tk.scan_bwd(*args, states, gy, gh, impl="chunked", chunk=chunk)
    truth = run_with_grads(selective_scan_loop, inputs, gy, gh)
    assert rel_err(y, truth["y"]) <= 1e-12 and rel_err(grads[2], truth["dA"]) <= 1e-10
    got = run_with_grads(functools.partial(tk.selective_scan_triton, impl="chunked", chunk=chunk), inputs, gy, gh)
    for name in truth:
        assert rel_err(got[name], truth[name]) <= 1e-10, name


def test_backward_refuses_chunk_states_of_another_chunk_length(device):
    if device == "cuda":
        pytest.skip("float64 tl.dot is interpreter-only")
    inputs = make_scan_inputs(1, 40, 16, 16, device=device)
    args = [None if v is None else v.detach() for v in inputs.values()]
    gy, gh = _upstream(inputs)
    _, _, states = tk.scan_fwd(*args, impl="chunked", chunk=16)
    with pytest.raises(ValueError, match="chunk length of 32"):
        tk.scan_bwd(*args, states, gy, gh, impl="chunked", chunk=32)


def test_unknown_impl_is_refused():
    inputs = make_scan_inputs(1, 3, 16, 16)
    with pytest.raises(ValueError, match="unknown Triton scan implementation 'fast'"):
        tk.selective_scan_triton(*[inputs[k] for k in SCAN_ARG_NAMES], impl="fast")
    with pytest.raises(ValueError, match="unknown Triton scan implementation"):
        selective_scan(*[inputs[k] for k in SCAN_ARG_NAMES], backend="triton", triton_impl="fast")


def test_gradient_through_final_state_only(device, impl):
    """The interest-state loss uses h_n alone: y's gradient arrives as None/zeros."""
    _skip_chunked_float64_on_gpu(impl, device)
    inputs = make_scan_inputs(2, 8, 16, 16, device=device, pads=(3, 0))
    args = [inputs[k] for k in SCAN_ARG_NAMES]
    leaves = [v for v in args if v is not None]
    _, h = triton_scan(impl)(*args)
    got = torch.autograd.grad((h ** 2).sum(), leaves)
    _, h_ref = selective_scan_loop(*args)
    want = torch.autograd.grad((h_ref ** 2).sum(), leaves, allow_unused=True)   # C and z only reach y
    for g, w in zip(got, want):
        assert rel_err(g, torch.zeros_like(g) if w is None else w) <= 1e-10


def test_empty_sequence_passes_state_through(device):
    inputs = make_scan_inputs(2, 0, 16, 16, device=device)
    args = [inputs[k] for k in SCAN_ARG_NAMES]
    y, h = tk.selective_scan_triton(*args)
    assert y.shape == (2, 0, 16)
    assert torch.equal(h, inputs["initial_state"])
    (g,) = torch.autograd.grad(h.sum(), [inputs["initial_state"]])
    assert torch.equal(g, torch.ones_like(g))


def test_backward_is_deterministic(device, impl):
    inputs = make_scan_inputs(2, 12, 60, 16, dtype=torch.float32, device=device, pads=(4, 12))
    gy, gh = _upstream(inputs)
    first = run_with_grads(triton_scan(impl), inputs, gy, gh)
    second = run_with_grads(triton_scan(impl), inputs, gy, gh)
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_one_element_A_and_dtype_mix(device):
    """A of shape (1,) gets a (1,)-shaped gradient; a float32 initial state keeps its dtype."""
    inputs = make_scan_inputs(1, 5, 16, 16, device=device)
    inputs["A"] = inputs["A"].detach().reshape(1).requires_grad_()
    args = [inputs[k] for k in SCAN_ARG_NAMES]
    y, h = tk.selective_scan_triton(*args)
    (gA,) = torch.autograd.grad(y.sum() + h.sum(), [inputs["A"]])
    assert gA.shape == (1,)
    y_ref, h_ref = selective_scan_loop(*args)
    (gA_ref,) = torch.autograd.grad(y_ref.sum() + h_ref.sum(), [inputs["A"]])
    assert rel_err(gA, gA_ref) <= 1e-10


def test_dispatcher_routes_to_triton_and_auto_stays_on_reference_on_cpu(monkeypatch, device):
    inputs = make_scan_inputs(1, 4, 16, 16, device=device)
    args = [inputs[k] for k in SCAN_ARG_NAMES]
    y_t, _ = selective_scan(*args, backend="triton")
    y_l, _ = selective_scan_loop(*args)
    assert rel_err(y_t, y_l) <= 1e-10
    if device == "cpu":
        def boom(*a, **k):
            raise AssertionError("backend='auto' must not use Triton on CPU tensors")
        monkeypatch.setattr(tk, "selective_scan_triton", boom)
        y_auto, _ = selective_scan(*args, backend="auto")
        assert torch.equal(y_auto, selective_scan_chunked(*args)[0])


def test_custom_op_registration_opcheck(device, impl):
    """Fake (meta) implementations, schema and autograd registration agree with the real op (the chunked path's
    fake must predict the number of chunk states)."""
    inputs = make_scan_inputs(1, 19, 16, 16, dtype=torch.float32, device=device)
    args = tuple(inputs[k] for k in SCAN_ARG_NAMES)
    settings = (impl, 16)
    torch.library.opcheck(torch.ops.t2arec_fast.selective_scan_fwd.default, args + settings)
    detached = tuple(None if a is None else a.detach() for a in args)
    y, h, states = tk.scan_fwd(*detached, impl=impl, chunk=16)
    assert (states.numel() > 0) == (impl == "chunked")
    torch.library.opcheck(torch.ops.t2arec_fast.selective_scan_bwd.default,
                          detached + (states, torch.ones_like(y), torch.ones_like(h)) + settings)


def test_traces_as_one_op(device):
    """torch.compile (aot_eager: tracing only, no code generation) sees the scan as one opaque op, fwd and bwd."""
    inputs = make_scan_inputs(2, 6, 16, 16, device=device, pads=(2, 0))
    args = [inputs[k] for k in SCAN_ARG_NAMES]

    def loss_fn(*a):
        y, h = tk.selective_scan_triton(*a)
        return y.square().sum() + h.sum()

    compiled = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)
    leaves = [v for v in args if v is not None]
    got = torch.autograd.grad(compiled(*args), leaves)
    want = torch.autograd.grad(loss_fn(*args), leaves)
    for g, w in zip(got, want):
        assert rel_err(g, w) <= 1e-12


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bfloat16 path checked on CUDA only")
def test_bfloat16_accumulates_in_float32(impl):
    inputs64 = make_scan_inputs(4, 200, 64, 32, device="cuda", pads=(0, 50, 199, 200), seed=5)
    gy, gh = _upstream(inputs64)
    truth = run_with_grads(selective_scan_loop, inputs64, gy, gh)
    inputs_bf = {k: None if v is None else v.detach().to(torch.bfloat16).requires_grad_() for k, v in inputs64.items()}
    # the truth for bf16 inputs: float64 maths on the bf16-rounded inputs
    truth_rounded = run_with_grads(selective_scan_loop, cast_inputs(inputs_bf, torch.float64), gy, gh)
    ref = run_with_grads(selective_scan_chunked, inputs_bf, gy, gh)
    got = run_with_grads(triton_scan(impl), inputs_bf, gy, gh)
    assert truth.keys() == got.keys()
    for name in truth_rounded:
        err = rel_err(got[name], truth_rounded[name])
        ref_err = rel_err(ref[name], truth_rounded[name])
        assert err <= max(2.0 * ref_err, 1e-2), f"{name}: {err:.2e} vs reference {ref_err:.2e}"
