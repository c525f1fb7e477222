"""ops/state_step.py: the pooled reference step equals the functional one and skips slot −1, bad slots are named, and
the step output from a carried readout hᵀC (the extrapolation) equals the one-step reference. The Triton kernel:
test_state_step_triton.py."""
import pytest
import torch

from t2arec_fast.ops import selective_state_step, state_step_output, state_step_reference

from .helpers import rel_err


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


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-14), (torch.float32, 1e-6)])
def test_reference_step_is_the_recurrence_as_written_forward_and_backward(dtype, tol):
    """The reference (bmm readout, fused update) is h ← exp(dt·A) h + (dt·B) ⊗ x, y = hᵀC + D ⊙ x, ⊙ SiLU(z)
    as docs/model.md writes it, values and gradients, and leaves h untouched."""
    g = torch.Generator().manual_seed(1)
    b, n, d = 5, 4, 6
    mk = lambda *s: torch.randn(*s, generator=g, dtype=dtype).requires_grad_()      # noqa: E731
    h, x, z, B, C, D = mk(b, n, d), mk(b, d), mk(b, d), mk(b, n), mk(b, n), mk(d)
    dt = torch.rand(b, generator=g, dtype=dtype).requires_grad_()
    A = torch.tensor(-0.7, dtype=dtype, requires_grad=True)
    before = h.detach().clone()
    y, h_new = state_step_reference(h, x, dt, A, B, C, D, z)
    h_want = torch.exp(dt * A)[:, None, None] * h + (dt[:, None] * B)[:, :, None] * x[:, None, :]
    y_want = ((h_want * C[:, :, None]).sum(1) + D * x) * torch.nn.functional.silu(z)
    assert torch.equal(h.detach(), before)
    assert rel_err(h_new, h_want) <= tol and rel_err(y, y_want) <= tol
    inputs = (h, x, z, B, C, D, dt, A)
    got = torch.autograd.grad((y.sum(), h_new.square().sum()), inputs)
    want = torch.autograd.grad((y_want.sum(), h_want.square().sum()), inputs)
    for a, w in zip(got, want):
        assert rel_err(a, w) <= 10 * tol


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_in_place_step_on_strided_views_gives_the_functional_floats(dtype):
    """Serving steps views of its flat (users, size) buffers, rows strided: in_place overwrites them with the
    functional step's h_new bit for bit and returns the same y; the buffer's other columns stay."""
    g = torch.Generator().manual_seed(4)
    b, n, d = 6, 4, 8
    buffer = torch.randn(b, 3 + n * d + 5, generator=g, dtype=dtype)
    before = buffer.clone()
    h = buffer[:, 3:3 + n * d].view(b, n, d)
    x, z = torch.randn(b, d, generator=g, dtype=dtype), torch.randn(b, d, generator=g, dtype=dtype)
    B, C = torch.randn(b, n, generator=g, dtype=dtype), torch.randn(b, n, generator=g, dtype=dtype)
    dt, A, D = torch.rand(b, generator=g, dtype=dtype), torch.tensor(-0.7, dtype=dtype), torch.randn(d, dtype=dtype)
    y_want, h_want = state_step_reference(h.clone(), x, dt, A, B, C, D, z)
    y, h_out = selective_state_step(h, x, dt, A, B, C, D, z, backend="reference", in_place=True)
    assert h_out is h and torch.equal(h, h_want) and torch.equal(y, y_want)
    assert torch.equal(buffer[:, :3], before[:, :3]) and torch.equal(buffer[:, 3 + n * d:], before[:, 3 + n * d:])


def test_the_functional_step_runs_under_vmap_of_grad_without_a_per_sample_fallback():
    """The per-user test-time step (adapt.py) runs vmap(grad(...)) through this function: every op in it needs a
    batching rule — without one torch.func warns and runs sample by sample (addcmul_ and baddbmm_ have none; the
    out-of-place addcmul has). Same gradients as one sample at a time."""
    import warnings

    from torch.func import grad, vmap
    g = torch.Generator().manual_seed(5)
    users, b, n, d = 4, 3, 4, 6
    h, x = torch.randn(users, b, n, d, generator=g), torch.randn(users, b, d, generator=g)
    dt, B, C = torch.rand(users, b, generator=g), torch.randn(users, b, n, generator=g), torch.randn(users, b, n,
                                                                                                   generator=g)
    A = torch.tensor(-0.5)

    def objective(h, x, dt, B, C):
        y, h_new = state_step_reference(h, x, dt, A, B, C)
        return y.sum() + h_new.square().sum()

    per_user = grad(objective, argnums=(0, 1, 2, 3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = vmap(per_user)(h, x, dt, B, C)
    for u in range(users):
        for a, w in zip(got, per_user(h[u], x[u], dt[u], B[u], C[u])):
            torch.testing.assert_close(a[u], w, rtol=1e-6, atol=1e-6)
