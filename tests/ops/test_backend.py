"""ops/_backend.py, the one backend switch. Per-user test-time steps run the model under torch.func.vmap(grad(...)).
The Triton custom ops cannot be batched by vmap, so inside torch.func transforms the backend switch gives the
reference; outside, Triton still runs."""
import pytest
import torch

from t2arec_fast.adapt import adapted_scores
from t2arec_fast.config import TTTConfig
from t2arec_fast.model import T2ARec
from t2arec_fast.ops import resolve_backend
from t2arec_fast.triton_kernels import selective_scan as triton_scan

TTT = TTTConfig(ttt_lr=0.5, ttt_mu_time=1.0, ttt_mu_state=1.0, ttt_batch_size=1)


class _Batch:
    def __init__(self, items, times, target_times):
        self.items, self.times, self.target_times = items, times, target_times


def batch(n=3, length=7):
    g = torch.Generator().manual_seed(1)
    items = torch.randint(1, 31, (n, length), generator=g)
    items[0, :3] = 0                                             # a left-padded user
    times = torch.arange(length).repeat(n, 1) * 60 + 1_000_000_000
    return _Batch(items, times, times[:, -1] + 3600)


def model(backend):
    torch.manual_seed(0)
    return T2ARec(30, d=16, d_state=8, n_layers=1, backend=backend).eval()


def test_switch_gives_the_reference_inside_transforms_only():
    x = torch.zeros(2)
    seen = []
    torch.func.vmap(lambda row: seen.append(resolve_backend("triton", row)) or row)(x[:, None])
    assert seen == ["reference"] and resolve_backend("triton", x) == "triton"


def test_per_user_steps_with_a_triton_model_equal_the_reference_model(monkeypatch):
    b = batch()
    expected = adapted_scores(model("reference"), b.items, b.times, b.target_times, TTT, per_user=True).scores
    got = adapted_scores(model("triton"), b.items, b.times, b.target_times, TTT, per_user=True).scores
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_batch_episodes_still_run_the_triton_kernels(monkeypatch):
    calls = []
    original = triton_scan.selective_scan_triton
    monkeypatch.setattr(triton_scan, "selective_scan_triton", lambda *a, **k: calls.append(1) or original(*a, **k))
    b = batch()
    cfg = TTTConfig(ttt_lr=0.5, ttt_mu_time=1.0, ttt_mu_state=1.0)
    got = adapted_scores(model("triton"), b.items, b.times, b.target_times, cfg).scores
    expected = adapted_scores(model("reference"), b.items, b.times, b.target_times, cfg).scores
    assert calls
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_backend_switch():
    cpu = torch.zeros(1)
    assert resolve_backend("auto", cpu) == "reference"
    assert resolve_backend("loop", cpu) == "loop"
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_backend("cuda-magic", cpu)
