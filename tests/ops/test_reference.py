"""The plain PyTorch reference ops (t2arec_fast.ops): loop vs chunked, chunk sizes, gradcheck, padding, errors."""
import pytest
import torch

from t2arec_fast.ops import (resolve_backend, selective_scan, selective_scan_chunked, selective_scan_loop,
                             selective_state_step, state_step_output, state_step_reference)

from .helpers import SCAN_ARG_NAMES, make_scan_inputs, rel_err, run_with_grads


@pytest.mark.parametrize("L, chunk", [(1, 64), (7, 3), (63, 64), (64, 64), (65, 64), (65, 1), (200, 16), (200, 200)])
def test_chunked_matches_loop_forward_and_gradients(L, chunk):
    inputs = make_scan_inputs(2, L, 12, 8, pads=(min(5, L), 0))
    g = torch.Generator().manual_seed(1)
    gy = torch.randn(2, L, 12, generator=g, dtype=torch.float64)
    gh = torch.randn(2, 8, 12, generator=g, dtype=torch.float64)
    truth = run_with_grads(selective_scan_loop, inputs, gy, gh)
    got = run_with_grads(lambda *a: selective_scan_chunked(*a, chunk_size=chunk), inputs, gy, gh)
    for name in truth:
        assert rel_err(got[name], truth[name]) <= 1e-12, name


@pytest.mark.parametrize("fn", [selective_scan_loop, selective_scan_chunked], ids=["loop", "chunked"])
def test_gradcheck_tiny(fn):
    inputs = make_scan_inputs(2, 5, 3, 2, pads=(2, 0))
    args = tuple(inputs[k] for k in SCAN_ARG_NAMES)
    assert torch.autograd.gradcheck(lambda *a: fn(*a), args)


def test_left_padding_gives_the_unpadded_final_state():
    """dt = 0 at left pads: the padded and the unpadded sequence end in the same state (docs/model.md §2)."""
    full = make_scan_inputs(1, 9, 8, 4, with_h0=False)
    args = [None if full[k] is None else full[k].detach() for k in SCAN_ARG_NAMES]
    x, dt, A, B, C, D, z, _ = args
    pad = 4
    padded = [torch.cat([torch.randn(1, pad, *t.shape[2:], dtype=t.dtype), t], 1) for t in (x, B, C, z)]
    dt_padded = torch.cat([torch.zeros(1, pad, dtype=dt.dtype), dt], 1)
    for fn in (selective_scan_loop, selective_scan_chunked):
        y, h = fn(x, dt, A, B, C, D, z)
        y_p, h_p = fn(padded[0], dt_padded, A, padded[1], padded[2], D, padded[3])
        assert rel_err(h_p, h) <= 1e-13 and rel_err(y_p[:, pad:], y) <= 1e-13


def test_scan_rejects_bad_shapes_with_clear_messages():
    inputs = make_scan_inputs(2, 5, 8, 4)
    a = {k: None if v is None else v.detach() for k, v in inputs.items()}
    cases = [
        (dict(x=a["x"][0]), r"x must be \(batch, seqlen, d\)"),
        (dict(dt=a["dt"][:, :3]), r"dt must be \(batch, seqlen\)"),
        (dict(B=a["B"][..., :3]), r"B and C must be"),
        (dict(A=torch.ones(2)), r"A must be a scalar"),
        (dict(D=torch.ones(7, dtype=torch.float64)), r"D must be \(d,\)"),
        (dict(z=a["z"][:, :4]), r"z must have x's shape"),
        (dict(initial_state=a["initial_state"][:, :3]), r"initial_state must be \(batch, d_state, d\)"),
    ]
    for change, message in cases:
        args = {**a, **change}
        for backend in ("reference", "loop"):
            with pytest.raises(ValueError, match=message):
                selective_scan(*(args[k] for k in SCAN_ARG_NAMES), backend=backend)
    with pytest.raises(TypeError, match="dt must be a floating tensor"):
        selective_scan(a["x"], torch.ones(2, 5, dtype=torch.long), *(a[k] for k in SCAN_ARG_NAMES[2:]))


def test_backend_switch():
    cpu = torch.zeros(1)
    assert resolve_backend("auto", cpu) == "reference"
    assert resolve_backend("loop", cpu) == "loop"
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_backend("cuda-magic", cpu)


def test_reference_pooled_step_matches_functional_and_skips():
    g = torch.Generator().manual_seed(0)
    d, n = 6, 4
    pool = torch.randn(5, n, d, generator=g, dtype=torch.float64)
    before = pool.clone()
    x, z = torch.randn(3, d, generator=g, dtype=torch.float64), torch.randn(3, d, generator=g, dtype=torch.float64)
    B, C = torch.randn(3, n, generator=g, dtype=torch.float64), torch.randn(3, n, generator=g, dtype=torch.float64)
    dt = torch.rand(3, generator=g, dtype=torch.float64)
    A, D = torch.tensor(-1.0, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    slots = torch.tensor([2, -1, 0])
    y, _ = selective_state_step(pool, x, dt, A, B, C, D, z, slots=slots, backend="reference")
    y_f, h_f = state_step_reference(before[[2, 0]], x[[0, 2]], dt[[0, 2]], A, B[[0, 2]], C[[0, 2]], D, z[[0, 2]])
    assert torch.equal(y[1], torch.zeros(d, dtype=torch.float64))
    assert rel_err(y[[0, 2]], y_f) <= 1e-14 and rel_err(pool[[2, 0]], h_f) <= 1e-14
    assert torch.equal(pool[[1, 3, 4]], before[[1, 3, 4]])


def test_step_rejects_bad_slots():
    h = torch.zeros(3, 4, 6)
    args = (torch.zeros(2, 6), torch.zeros(2), torch.tensor(-1.0), torch.zeros(2, 4), torch.zeros(2, 4))
    with pytest.raises(IndexError, match=r"slots must lie in \[-1, 2\]; row 1 has slot 3"):
        selective_state_step(h, *args, slots=torch.tensor([0, 3]), backend="reference")
    with pytest.raises(ValueError, match="slots must be int"):
        selective_state_step(h, *args, slots=torch.tensor([0.0, 1.0]), backend="reference")


@pytest.mark.parametrize("with_dz", [True, False])
def test_step_output_from_the_carried_readout_equals_the_one_step_reference(with_dz):
    """state_step_output (extrapolation: hᵀC known, h not) is the same step as state_step_reference."""
    g = torch.Generator().manual_seed(3)
    b, n, d = 5, 4, 6
    h, x, z = torch.randn(b, n, d, generator=g), torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    dt, B, C = torch.rand(b, generator=g), torch.randn(b, n, generator=g), torch.randn(b, n, generator=g)
    A, D = torch.tensor(-1.3), torch.randn(d, generator=g)
    args = [t.double() for t in (x, dt, A, B, C)]
    extra = (D.double(), z.double()) if with_dz else (None, None)
    y_ref, _ = state_step_reference(h.double(), *args, *extra)
    carried = torch.bmm(C.double()[:, None, :], h.double())[:, 0]                   # hᵀC of the OLD state
    torch.testing.assert_close(state_step_output(carried, *args, *extra), y_ref, rtol=1e-12, atol=1e-12)
