"""T2ARec model: padding invariance, one-step = full sequence, causality, gradients, losses, checkpoints, bad input."""
import numpy as np
import pytest
import torch

from t2arec_fast.errors import InputError
from t2arec_fast.model import T2ARec, build_model, load_model
from t2arec_fast.config import ModelConfig


def tiny_model(dtype=torch.float64, n_blocks=1, **options):
    torch.manual_seed(0)
    model = T2ARec(40, d=16, d_state=8, n_blocks=n_blocks, dropout=0.0, **options).to(dtype).eval()
    model.set_time_margin(0.5)
    return model


def random_batch(batch=3, length=9, n_items=40, pads=(4, 2, 0), seed=1):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, n_items + 1, (batch, length), generator=g)
    times = 1_700_000_000 + torch.cumsum(torch.randint(0, 20_000, (batch, length), generator=g), 1)
    for row, p in enumerate(pads[:batch]):
        items[row, :p] = 0
        times[row, :p] = 0
    target_times = times[:, -1] + 3_600
    return items, times, target_times


@pytest.mark.parametrize("n_blocks", [1, 2])
def test_left_padding_gives_the_unpadded_state_and_output(n_blocks):
    model = tiny_model(n_blocks=n_blocks)
    items, times, _ = random_batch()
    o, states = model.encode(items, times)
    o_short, states_short = model.encode(items[:1, 4:], times[:1, 4:])
    assert torch.equal(o[0], o_short[0]) or torch.allclose(o[0], o_short[0], rtol=0, atol=1e-14)
    for full, short in zip(states, states_short):
        torch.testing.assert_close(full.ssm[:1], short.ssm, rtol=0, atol=1e-14)
        torch.testing.assert_close(full.conv[:1], short.conv, rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("n_blocks", [1, 2])
def test_one_step_path_equals_full_sequence(dtype, tol, n_blocks):
    model = tiny_model(dtype, n_blocks=n_blocks)
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


def test_gradcheck_through_scan_and_both_losses():
    """float64 gradcheck through the whole model (scan included) via functional_call (adapt.call_with).

    o_n enters the extrapolation step detached (model-spec §3), so a finite difference in a parameter that moves o_n
    sees a path autograd rightly ignores; the losses are therefore checked w.r.t. q_proj (which o_n does not use)
    here and w.r.t. every input of the loss functions in test_losses.py."""
    from t2arec_fast.adapt import call_with
    model = tiny_model(n_blocks=1)
    model.set_backend("loop")
    items, times, target_times = random_batch(batch=2, length=5, pads=(2, 0))
    params = dict(model.named_parameters())

    def run(names, pick):
        def f(*values):
            out = call_with(model, {**params, **dict(zip(names, values))}, T2ARec.aux_losses, items, times,
                            target_times)
            return pick(out)
        inputs = tuple(params[n].detach().clone().requires_grad_(True) for n in names)
        return torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)

    ssm = ["layers.0.block.A_log", "layers.0.block.dt_bias", "layers.0.block.D"]
    assert run(ssm, lambda out: out["o_n"])
    assert run(["layers.0.block.q_proj.weight"], lambda out: (out["state"], out["time"]))


def test_recommendation_loss_gradients_reach_every_parameter():
    model = tiny_model().train()
    items, times, target_times = random_batch()
    next_items = torch.roll(items, -1, 1).clamp_min(1) * (items != 0)
    out = model.losses(items, times, next_items, target_times)
    (out["rec"] + out["time"] + out["state"]).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_backbone_has_no_alignment_losses():
    torch.manual_seed(0)
    model = build_model(ModelConfig(model="backbone", d=16, d_state=8), n_items=40)
    items, times, target_times = random_batch()
    out = model.losses(items, times, items.clamp_min(1) * (items != 0), target_times)
    assert out["time"].item() == 0.0 and out["state"].item() == 0.0 and out["rec"].item() > 0


def test_checkpoint_round_trip_gives_identical_scores(tmp_path):
    model = tiny_model(torch.float32, n_blocks=2, state_norm="relative")
    items, times, _ = random_batch()
    model.save(tmp_path / "ckpt", id_maps={"item_ids": np.array(["pad", "a", "b"], dtype=object)})
    loaded = T2ARec.load(tmp_path / "ckpt")
    assert loaded.config == model.config
    assert float(loaded.time_margin) == 0.5
    assert torch.equal(loaded.scores(items, times), model.scores(items, times))
    assert list(loaded.id_maps["item_ids"]) == ["pad", "a", "b"]
    assert torch.equal(load_model(tmp_path / "ckpt").scores(items, times), model.scores(items, times))


def test_corrupted_checkpoint_is_a_clear_error(tmp_path):
    model = tiny_model(torch.float32)
    model.save(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="model.safetensors"):
        T2ARec.load(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="config.json"):
        T2ARec.load(tmp_path / "nothing")


@pytest.mark.parametrize("make_bad,match", [
    (lambda i, t: (i.clone().fill_(41), t), "outside"),
    (lambda i, t: (i.to(torch.int32), t), "int64"),
    (lambda i, t: (i[0], t), r"\(batch, L\)"),
    (lambda i, t: (i[:0], t[:0]), "empty batch"),
    (lambda i, t: (i, t.float()), "int64 seconds"),
    (lambda i, t: (i, t[:, :-1]), "shape"),
    (lambda i, t: (i, t.flip(1) * (i != 0)), "backwards"),
    (lambda i, t: (torch.cat([i[:, 1:], torch.zeros_like(i[:, :1])], 1), None), "LEFT-padded|no items"),
])
def test_bad_input_gets_a_clear_error(make_bad, match):
    model = tiny_model(torch.float32)
    items, times, _ = random_batch(pads=(0, 0, 0))
    bad_items, bad_times = make_bad(items, times)
    with pytest.raises(InputError, match=match):
        model.scores(bad_items, bad_times)


def test_scan_settings_are_the_models_own():
    """The scan backend and the ONNX graph form are stored on the model (set_backend), not read from globals: two
    models with different settings run side by side, and bad settings are refused when they are set."""
    a, b = tiny_model(n_blocks=1), tiny_model(n_blocks=1)
    a.set_backend("export", export_form="linear_attention")
    assert all(layer.block.export_form == "linear_attention" for layer in a.layers)
    assert all(layer.block.export_form == "matrix" and layer.block.backend == "auto" for layer in b.layers)
    items, times, _ = random_batch(batch=2, length=5, pads=(2, 0))
    torch.testing.assert_close(a.encode(items, times)[0], b.encode(items, times)[0])   # same maths in eager
    with pytest.raises(ValueError, match="unknown scan form"):
        a.set_backend("export", export_form="loop")
    with pytest.raises(ValueError, match="unknown backend"):
        a.set_backend("fast")
