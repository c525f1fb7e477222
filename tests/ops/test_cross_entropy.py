"""linear_cross_entropy: every implementation equals F.cross_entropy on the materialised logits, value and
gradients (float64 truth; liger-kernel's Triton kernel runs in Triton's interpreter on CPU, in float32)."""
import pytest
import torch
import torch.nn.functional as F

from t2arec_fast.ops import linear_cross_entropy
from t2arec_fast.ops.cross_entropy import IGNORE_INDEX, liger_available


def _inputs(rows=37, d=16, items=50, ignored=(0, 5, 6), dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    weight = torch.randn(items, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    targets = torch.randint(0, items, (rows,), generator=g)
    targets[list(ignored)] = IGNORE_INDEX
    return hidden, weight, targets


def _value_and_grads(fn, hidden, weight, targets):
    h, w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    loss = fn(h, w, targets)
    loss.backward()
    return loss.detach(), h.grad, w.grad


def _truth(h, w, t):
    return F.cross_entropy(h @ w.t(), t, ignore_index=IGNORE_INDEX)


@pytest.mark.parametrize("impl, chunk_rows", [("plain", None), ("chunked", None), ("chunked", 1), ("chunked", 8),
                                              ("chunked", 37), ("chunked", 100)])
def test_equals_the_plain_loss_and_its_gradients_float64(impl, chunk_rows):
    hidden, weight, targets = _inputs()
    want = _value_and_grads(_truth, hidden, weight, targets)
    got = _value_and_grads(lambda h, w, t: linear_cross_entropy(h, w, t, impl=impl, chunk_rows=chunk_rows),
                           hidden, weight, targets)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_chunked_scales_by_the_upstream_gradient_and_skips_unneeded_grads():
    hidden, weight, targets = _inputs()
    w = weight.detach()                                            # no gradient wanted for the weight
    loss = 3.0 * linear_cross_entropy(hidden, w, targets, impl="chunked", chunk_rows=4)
    (g,) = torch.autograd.grad(loss, [hidden])
    (want,) = torch.autograd.grad(3.0 * _truth(hidden, w, targets), [hidden])
    torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-12)


def test_float32_and_bfloat16_accumulate_in_float32():
    hidden, weight, targets = _inputs(dtype=torch.float64)
    truth = _truth(hidden, weight, targets).item()
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
        h, w = hidden.detach().to(dtype), weight.detach().to(dtype)
        got = linear_cross_entropy(h, w, targets, impl="chunked", chunk_rows=5)
        assert got.dtype == dtype
        assert abs(got.float().item() - _truth(h.double(), w.double(), targets).item()) <= tol * abs(truth)


def test_all_rows_ignored_gives_nan_like_cross_entropy():
    hidden, weight, targets = _inputs(rows=4, ignored=(0, 1, 2, 3))
    assert torch.isnan(linear_cross_entropy(hidden, weight, targets, impl="chunked"))
    assert torch.isnan(_truth(hidden, weight, targets))


def test_bad_arguments_are_named():
    hidden, weight, targets = _inputs()
    with pytest.raises(ValueError, match="unknown cross-entropy implementation 'fused'"):
        linear_cross_entropy(hidden, weight, targets, impl="fused")
    with pytest.raises(ValueError, match="need hidden"):
        linear_cross_entropy(hidden, weight[:, :3], targets)


def test_auto_chunks_on_cpu_only_when_the_logits_exceed_one_chunk(monkeypatch):
    from t2arec_fast.ops import cross_entropy as ce
    calls = []
    monkeypatch.setattr(ce._ChunkedLinearCrossEntropy, "apply", lambda *a: calls.append(a[4]) or _truth(*a[:3]))
    hidden, weight, targets = _inputs()                        # 37 rows × 50 items
    linear_cross_entropy(hidden, weight, targets)
    assert calls == []                                         # one chunk's worth: the plain loss
    monkeypatch.setattr(ce, "CHUNK_LOGITS", 500)
    linear_cross_entropy(hidden, weight, targets)
    assert calls == [10]                                       # 500 // 50 rows per chunk


@pytest.mark.skipif(not liger_available(), reason="liger-kernel not installed (optional extra 'gpu')")
def test_liger_fused_kernel_equals_the_plain_loss():
    """liger-kernel's fused linear CE (Triton; interpreter on CPU), float32 against the float64 truth."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    hidden, weight, targets = _inputs()
    want = _value_and_grads(_truth, hidden, weight, targets)
    got = _value_and_grads(lambda h, w, t: linear_cross_entropy(h, w, t.to(device), impl="liger"),
                           hidden.detach().float().to(device), weight.detach().float().to(device), targets)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.double().cpu(), w, rtol=1e-4, atol=1e-5)
