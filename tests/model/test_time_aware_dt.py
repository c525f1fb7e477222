"""The time-aware Δ option (beyond the paper): Δ_t = softplus(a(x_t) + b + w·g(t_t − t_{t−1})).

Its one-step form, fed the gap since each user's previous event, must equal the full sequence; with w = 0 it is the
paper's model; it needs timestamps everywhere and says so; L_time trains w."""
import pytest
import torch

from t2arec_fast.errors import InputError
from t2arec_fast.model import T2ARec

from .test_t2arec import random_batch


def time_aware_model(weight=0.8, dtype=torch.float64, n_blocks=2):
    torch.manual_seed(0)
    model = T2ARec(40, d=16, d_state=8, n_blocks=n_blocks, dropout=0.0, time_aware_dt=True).to(dtype).eval()
    model.set_time_margin(0.5)
    with torch.no_grad():
        for layer in model.layers:
            layer.block.dt_gap_weight.fill_(weight)
    return model


def gaps_before(times, mask, t):
    """Seconds from column t to the row's previous real event, 0 when there is none."""
    if t == 0:
        return torch.zeros_like(times[:, 0])
    return torch.where(mask[:, t - 1], times[:, t] - times[:, t - 1], torch.zeros_like(times[:, t]))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_steps_with_gaps_equal_the_full_sequence(dtype, tol):
    model = time_aware_model(dtype=dtype)
    items, times, _ = random_batch(batch=3, length=12, pads=(0, 0, 0))
    o_full, states_full = model.encode(items, times)
    states = model.empty_states(3, dtype=dtype)
    for t in range(items.shape[1]):
        o_step, states = model.step(items[:, t], states, gaps=gaps_before(times, items != 0, t))
    torch.testing.assert_close(o_step, o_full, rtol=tol, atol=tol)
    for a, b in zip(states, states_full):
        torch.testing.assert_close(a.ssm, b.ssm, rtol=tol, atol=tol)


def test_left_padding_and_the_first_event_see_no_gap():
    model = time_aware_model()
    items, times, _ = random_batch()                     # row 0 has 4 pads, whose times are 0
    o, _ = model.encode(items, times)
    o_short, _ = model.encode(items[:1, 4:], times[:1, 4:])
    torch.testing.assert_close(o[:1], o_short, rtol=0, atol=1e-13)


def test_the_gap_changes_the_state_only_through_w():
    items, times, _ = random_batch(pads=(0, 0, 0))
    later = times.clone()
    later[:, 5:] += 30 * 86_400                          # a month-long pause before event 5
    aware = time_aware_model()
    assert not torch.allclose(aware.encode(items, times)[0], aware.encode(items, later)[0])
    blind = time_aware_model(weight=0.0)                 # w = 0: the paper's Δ, gaps are ignored
    torch.testing.assert_close(blind.encode(items, times)[0], blind.encode(items, later)[0], rtol=0, atol=0)


def test_missing_or_bad_gaps_are_refused():
    model = time_aware_model()
    items, times, _ = random_batch()
    with pytest.raises(InputError, match="pass timestamps"):
        model.encode(items)
    states = model.empty_states(3, dtype=torch.float64)
    with pytest.raises(InputError, match="pass gaps"):
        model.step(items[:, -1], states)
    with pytest.raises(InputError, match="non-negative int64"):
        model.step(items[:, -1], states, gaps=torch.tensor([1, -5, 0]))
    with pytest.raises(InputError, match="non-negative int64"):
        model.step(items[:, -1], states, gaps=torch.tensor([1.0, 2.0, 3.0]))


def test_l_time_pushes_w_up_when_long_gaps_should_mean_long_steps():
    model = time_aware_model(weight=0.0)
    items, times, target_times = random_batch(pads=(0, 0, 0))
    aux = model.aux_losses(items, times, target_times)
    aux["time"].backward()
    for layer in model.layers:
        assert layer.block.dt_gap_weight.grad.item() < 0     # a descent step makes w > 0: Δ grows with the gap


def test_checkpoint_round_trip_keeps_the_option_and_w(tmp_path):
    model = time_aware_model(weight=0.3)
    items, times, _ = random_batch()
    model.save(tmp_path / "m")
    loaded = T2ARec.load(tmp_path / "m").to(torch.float64).eval()
    assert loaded.time_aware
    torch.testing.assert_close(loaded.scores(items, times), model.scores(items, times), rtol=0, atol=1e-6)


def test_onnx_export_refuses_a_time_aware_model(tmp_path):
    pytest.importorskip("onnx")
    from t2arec_fast.export import export_onnx
    with pytest.raises(InputError, match="time_aware_dt"):
        export_onnx(time_aware_model(), tmp_path / "onnx")
