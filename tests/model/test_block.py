"""T2AMambaBlock (through T2ARec): left padding leaves state and output unchanged, the one-step path equals the
sequence path, and outputs are causal."""
import pytest
import torch

from .helpers import random_batch, tiny_model


@pytest.mark.parametrize("n_layers, expand", [(1, 1), (2, 1), (1, 2)])
def test_left_padding_gives_the_unpadded_state_and_output(n_layers, expand):
    model = tiny_model(n_layers=n_layers, expand=expand)
    items, times, _ = random_batch()
    o, states = model.encode(items, times)
    o_short, states_short = model.encode(items[:1, 4:], times[:1, 4:])
    assert torch.equal(o[0], o_short[0]) or torch.allclose(o[0], o_short[0], rtol=0, atol=1e-14)
    for full, short in zip(states, states_short):
        torch.testing.assert_close(full.ssm[:1], short.ssm, rtol=0, atol=1e-14)
        torch.testing.assert_close(full.conv[:1], short.conv, rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("n_layers, expand", [(1, 1), (2, 1), (1, 2)])
def test_one_step_path_equals_full_sequence(dtype, tol, n_layers, expand):
    model = tiny_model(dtype, n_layers=n_layers, expand=expand)
    items, times, _ = random_batch(batch=3, length=12, pads=(0, 0, 0))
    o_full, states_full = model.encode(items, times)
    states = model.empty_states(3, dtype=dtype)
    for t in range(items.shape[1]):
        o_step, states = model.step(items[:, t], states)
    torch.testing.assert_close(o_step, o_full, rtol=tol, atol=tol)
    for a, b in zip(states, states_full):
        torch.testing.assert_close(a.ssm, b.ssm, rtol=tol, atol=tol)
        torch.testing.assert_close(a.conv, b.conv, rtol=tol, atol=tol)


def test_causality_changing_item_i_plus_1_leaves_earlier_outputs_unchanged():
    model = tiny_model()
    items, _, _ = random_batch(pads=(0, 0, 0))
    changed = items.clone()
    changed[1, 5] = items[1, 5] % 40 + 1
    o_a, _, _ = model._run_sequence(items)
    o_b, _, _ = model._run_sequence(changed)
    assert torch.equal(o_a[1, :5], o_b[1, :5])
    assert not torch.allclose(o_a[1, 5:], o_b[1, 5:])
    assert torch.equal(o_a[0], o_b[0])


def test_expand_widens_the_block_state_and_round_trips(tmp_path):
    from t2arec_fast.model import load_model
    model = tiny_model(expand=2)
    items, times, target_times = random_batch()
    assert model.encode(items, times)[1][0].ssm.shape == (3, 8, 32)                   # (batch, d_state, 2·d)
    out = model.losses(items, times, torch.where(items > 0, items % 40 + 1, 0), target_times)
    assert all(torch.isfinite(v) for v in out.values())
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m").to(torch.float64)
    assert loaded.config.expand == 2
    torch.testing.assert_close(loaded.scores(items, times), model.scores(items, times))


def test_a_wider_block_exports_and_serves_the_same_scores(tmp_path):
    """ONNX graphs of an expand=2 model: encode and one step equal PyTorch (state shapes travel in the metadata)."""
    pytest.importorskip("onnxruntime")
    from t2arec_fast.export import OnnxEncoder, export_onnx
    model = tiny_model(torch.float32, expand=2)
    export_onnx(model, tmp_path / "onnx")
    encoder = OnnxEncoder(tmp_path / "onnx")
    items, _, _ = random_batch()
    o_ort, states_ort = encoder.encode(items)
    step_ort, _ = encoder.step(items[:, -1], states_ort)
    with torch.no_grad():
        o_pt, states_pt = model.encode(items)
        step_pt, _ = model.step(items[:, -1], states_pt)
    assert states_ort[0].ssm.shape == (3, 8, 32)
    torch.testing.assert_close(o_ort, o_pt, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(step_ort, step_pt, rtol=1e-4, atol=1e-5)
