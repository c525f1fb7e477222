"""triton_kernels/_common.py: the one SiLU and SiLU' every gating kernel inlines, against torch (float32 and
float64; in Triton's interpreter without a GPU)."""
import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

from t2arec_fast.triton_kernels._common import silu, silu_with_grad  # noqa: E402


@triton.jit
def _silu_kernel(z_ptr, y_ptr, gate_ptr, grad_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    z = tl.load(z_ptr + offs, mask=mask, other=0.0)
    tl.store(y_ptr + offs, silu(z), mask=mask)
    gate, grad = silu_with_grad(z)
    tl.store(gate_ptr + offs, gate, mask=mask)
    tl.store(grad_ptr + offs, grad, mask=mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_silu_and_its_derivative_match_torch(dtype, device):
    z = torch.cat([torch.linspace(-30, 30, 57, dtype=dtype), torch.tensor([0.0, -1e-7, 1e-7], dtype=dtype)])
    z = z.to(device)
    y, gate, grad = (torch.full_like(z, float("nan")) for _ in range(3))
    _silu_kernel[(1,)](z, y, gate, grad, z.numel(), BLOCK=64)
    ref = z.detach().clone().requires_grad_()
    want = torch.nn.functional.silu(ref)
    (want_grad,) = torch.autograd.grad(want.sum(), ref)
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(y, want.detach(), **tol)
    torch.testing.assert_close(gate, want.detach(), **tol)
    torch.testing.assert_close(grad, want_grad, **tol)
