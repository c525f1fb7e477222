"""ops/selective_scan.py (and ops/_common.py's checks): the loop and chunked references agree (chunk sizes, gradients,
gradcheck), left padding passes the state through, bad shapes get clear errors. The Triton kernels:
test_selective_scan_triton.py."""
import pytest
import torch

from t2arec_fast.ops import selective_scan, selective_scan_chunked, selective_scan_loop

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
