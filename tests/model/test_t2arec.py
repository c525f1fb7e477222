"""T2ARec model: gradients, losses, bad input, scan settings (the block's maths: test_block.py; saving:
test_checkpoint.py)."""
import pytest
import torch

from t2arec_fast.errors import InputError
from t2arec_fast.model import T2ARec, build_model
from t2arec_fast.model.block import BlockState
from t2arec_fast.config import ModelConfig

from .helpers import random_batch, tiny_model


def test_gradcheck_through_scan_and_both_losses():
    """float64 gradcheck through the whole model (scan included) via functional_call (adapt.call_with).

    o_n enters the extrapolation step detached (docs/model.md §3), so a finite difference in a parameter that moves o_n
    sees a path autograd rightly ignores; the losses are therefore checked w.r.t. q_proj (which o_n does not use)
    here and w.r.t. every input of the loss functions in test_losses.py."""
    from t2arec_fast.adapt import call_with
    model = tiny_model(n_layers=1)
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


@pytest.mark.parametrize("ids, match", [
    ([3, 0, 5], r"item id 0 of row 1 is outside \[1, 40\]"),
    ([3, 5, 41], r"item id 41 of row 2 is outside"),
    ([[3, 5]], r"int64 \(batch,\)"),
])
def test_a_bad_step_names_the_row_and_id(ids, match):
    model = tiny_model(torch.float32)
    with pytest.raises(InputError, match=match):
        model.step(torch.tensor(ids), model.empty_states(len(ids)))


def test_scan_settings_are_the_models_own():
    """The scan backend and the ONNX graph form are stored on the model (set_backend), not read from globals: two
    models with different settings run side by side, and bad settings are refused when they are set."""
    a, b = tiny_model(n_layers=1), tiny_model(n_layers=1)
    a.set_backend("export", export_form="linear_attention")
    assert all(layer.block.export_form == "linear_attention" for layer in a.layers)
    assert all(layer.block.export_form == "matrix" and layer.block.backend == "auto" for layer in b.layers)
    items, times, _ = random_batch(batch=2, length=5, pads=(2, 0))
    torch.testing.assert_close(a.encode(items, times)[0], b.encode(items, times)[0])   # same maths in eager
    with pytest.raises(ValueError, match="unknown scan form"):
        a.set_backend("export", export_form="loop")
    with pytest.raises(ValueError, match="unknown backend"):
        a.set_backend("fast")


@pytest.mark.parametrize("ce_impl", ["plain", "chunked"])
def test_recommendation_loss_is_cross_entropy_at_real_positions(ce_impl):
    """L_rec through ops.linear_cross_entropy equals F.cross_entropy on the materialised logits at the real
    positions, value and gradients, whichever implementation the config names."""
    items, times, target_times = random_batch()
    nxt = torch.where(items != 0, (items % 40) + 1, 0)
    model = tiny_model(ce_impl=ce_impl)
    o, _, _ = model._run_sequence(items)
    mask = items != 0
    want = torch.nn.functional.cross_entropy(o[mask] @ model.item_emb.weight[1:].t(), nxt[mask] - 1)
    (g_want,) = torch.autograd.grad(want, [model.item_emb.weight])
    o, _, _ = model._run_sequence(items)
    got = model.recommendation_loss(o, mask, nxt)
    (g_got,) = torch.autograd.grad(got, [model.item_emb.weight])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-12)


def test_pooled_step_equals_the_step_and_leaves_other_rows_alone():
    """step_pooled advances pool rows in place exactly as step does; rows not named (and slot −1) stay as they were."""
    model = tiny_model(n_layers=2)
    g = torch.Generator().manual_seed(3)
    pools = model.empty_states(5)
    for p in pools:
        p.conv.copy_(torch.randn(p.conv.shape, generator=g, dtype=p.conv.dtype))
        p.ssm.copy_(torch.randn(p.ssm.shape, generator=g, dtype=p.ssm.dtype))
    before = [(p.conv.clone(), p.ssm.clone()) for p in pools]
    slots = torch.tensor([3, -1, 0])
    items = torch.tensor([7, 8, 9])
    o = model.step_pooled(items, pools, slots)
    keep = slots >= 0
    states = [BlockState(c[slots[keep]], s[slots[keep]]) for c, s in before]
    o_ref, new_ref = model.step(items[keep], states)
    torch.testing.assert_close(o[keep], o_ref, rtol=1e-12, atol=1e-12)
    for p, (c, s), new in zip(pools, before, new_ref):
        torch.testing.assert_close(p.conv[slots[keep]], new.conv, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(p.ssm[slots[keep]], new.ssm, rtol=1e-12, atol=1e-12)
        for row in (1, 2, 4):
            assert torch.equal(p.conv[row], c[row]) and torch.equal(p.ssm[row], s[row])
