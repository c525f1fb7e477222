"""Triton one-step update vs the reference step: functional mode, pooled in-place mode with slot −1, repeated calls,
and agreement with the full-sequence scan kernel."""
import pytest
import torch

from t2arec_fast.ops import selective_scan_loop, selective_state_step, state_step_reference
from t2arec_fast.triton_kernels import state_step as ts

from .helpers import rel_err


def _step_inputs(rows, d, n, *, dtype=torch.float64, device="cpu", with_z=True, with_D=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)

    dt = (torch.rand(rows, generator=g, dtype=torch.float64) * 0.3).to(device=device, dtype=dtype)
    dt[0] = 0.0   # a pad step: the state passes through
    return dict(x=rand(rows, d), dt=dt, A=torch.tensor(-1.3, dtype=dtype, device=device), B=rand(rows, n),
                C=rand(rows, n), D=rand(d) if with_D else None, z=rand(rows, d) if with_z else None)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rows, d, n, with_z, with_D", [(3, 60, 16, True, True), (2, 16, 32, False, False),
                                                        (1, 64, 32, True, False)])
def test_functional_step_matches_reference(dtype, rows, d, n, with_z, with_D, device):
    inp = _step_inputs(rows, d, n, dtype=dtype, device=device, with_z=with_z, with_D=with_D)
    h = torch.randn(rows, n, d, dtype=dtype, device=device)
    h_before = h.clone()
    y, h_new = ts.state_step_triton(h, **inp)
    y_ref, h_ref = state_step_reference(h.double(), *(None if v is None else v.double() for v in inp.values()))
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    assert rel_err(y.double(), y_ref) <= tol and rel_err(h_new.double(), h_ref) <= tol
    assert torch.equal(h, h_before), "functional mode must not touch its input state"


@pytest.mark.parametrize("slot_dtype", [torch.int64, torch.int32])
def test_pooled_step_updates_only_named_slots_and_skips_minus_one(slot_dtype, device):
    pool_size, d, n = 7, 60, 16
    pool = torch.randn(pool_size, n, d, dtype=torch.float64, device=device)
    expected = pool.clone()
    slots = torch.tensor([3, -1, 0, 6], dtype=slot_dtype, device=device)
    for call in range(3):   # repeated calls keep advancing the same rows
        inp = _step_inputs(4, d, n, device=device, seed=call)
        y, out = ts.state_step_triton(pool, **inp, slots=slots)
        assert out is pool
        keep = slots >= 0
        rows = slots[keep].long()
        sub = {k: (v[keep] if k in ("x", "dt", "B", "C", "z") and v is not None else v) for k, v in inp.items()}
        y_keep, h_keep = state_step_reference(expected[rows], **sub)
        expected[rows] = h_keep
        assert torch.equal(y[~keep], torch.zeros_like(y[~keep])), "a skipped row's y must be 0"
        assert rel_err(y[keep], y_keep) <= 1e-12
        assert rel_err(pool, expected) <= 1e-12
    untouched = [1, 2, 4, 5]
    assert torch.equal(pool[untouched], expected[untouched])


def test_pooled_float32_pool_with_float64_inputs_keeps_pool_dtype(device):
    pool = torch.randn(3, 16, 16, dtype=torch.float32, device=device)
    before = pool.clone()
    inp = _step_inputs(2, 16, 16, device=device)
    y, _ = ts.state_step_triton(pool, **inp, slots=torch.tensor([2, 0], device=device))
    assert pool.dtype == torch.float32 and y.dtype == torch.float64
    _, h_ref = state_step_reference(before[[2, 0]].double(), **inp)
    assert rel_err(pool[[2, 0]].double(), h_ref) <= 1e-6


def test_dispatcher_pooled_triton_equals_pooled_reference(device):
    d, n = 16, 16
    pool_t = torch.randn(5, n, d, dtype=torch.float64, device=device)
    pool_r = pool_t.clone()
    slots = torch.tensor([4, -1, 1], device=device)
    inp = _step_inputs(3, d, n, device=device)
    y_t, _ = selective_state_step(pool_t, **inp, slots=slots, backend="triton")
    y_r, _ = selective_state_step(pool_r, **inp, slots=slots, backend="reference")
    assert rel_err(y_t, y_r) <= 1e-12 and rel_err(pool_t, pool_r) <= 1e-12


def test_steps_reproduce_the_full_sequence_scan(device):
    """Running the step kernel L times from h0 gives the scan's outputs and final state (one definition)."""
    b, L, d, n = 2, 6, 16, 16
    g = torch.Generator().manual_seed(4)
    x, z = (torch.randn(b, L, d, generator=g, dtype=torch.float64).to(device) for _ in range(2))
    B, C = (torch.randn(b, L, n, generator=g, dtype=torch.float64).to(device) for _ in range(2))
    dt = (torch.rand(b, L, generator=g, dtype=torch.float64) * 0.3).to(device)
    dt[0, :2] = 0.0
    A = torch.tensor(-0.9, dtype=torch.float64, device=device)
    D = torch.randn(d, generator=g, dtype=torch.float64).to(device)
    h = torch.randn(b, n, d, generator=g, dtype=torch.float64).to(device)
    y_seq, h_seq = selective_scan_loop(x, dt, A, B, C, D, z, h)
    ys = []
    for t in range(L):
        y_t, h = ts.state_step_triton(h, x[:, t], dt[:, t], A, B[:, t], C[:, t], D, z[:, t])
        ys.append(y_t)
    assert rel_err(torch.stack(ys, 1), y_seq) <= 1e-12 and rel_err(h, h_seq) <= 1e-12


def test_step_ops_opcheck(device):
    d, n = 16, 16
    inp = _step_inputs(2, d, n, device=device)
    args = (inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], inp["D"], inp["z"])
    h = torch.randn(2, n, d, dtype=torch.float64, device=device)
    torch.library.opcheck(torch.ops.t2arec_fast.state_step.default, (h,) + args,
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))
    pool = torch.randn(4, n, d, dtype=torch.float64, device=device)
    slots = torch.tensor([1, 3], device=device)
    torch.library.opcheck(torch.ops.t2arec_fast.state_step_pooled_.default, (pool, slots) + args,
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dispatcher_in_place_triton_writes_the_triton_step_into_the_state(dtype, device):
    d, n = 16, 16
    h = torch.randn(3, n, d, dtype=dtype, device=device)
    inp = _step_inputs(3, d, n, dtype=dtype, device=device)
    y_want, h_want = ts.state_step_triton(h.clone(), **inp)
    with torch.no_grad():                                 # (with autograd on, the reference runs)
        y, h_out = selective_state_step(h, **inp, backend="triton", in_place=True)
    assert h_out is h and torch.equal(h, h_want) and torch.equal(y, y_want)
