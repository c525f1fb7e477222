"""The test-time step (paper's Algorithm 1): functional, episodic, parameters untouched."""
import copy
import dataclasses

import pytest
import torch

from t2arec_fast.adapt import PARAM_GROUPS, adaptable_parameter_names, adapt_parameters, adapted_scores, call_with
from t2arec_fast.config import TTTConfig

from helpers import random_batch, tiny_model

OPTIONS = [{}, {"readout": "extrapolated"}, {"readout": "request_gap"}]
OPTION_IDS = ["paper", "extrapolated_readout", "request_gap_readout"]
TTT = TTTConfig(ttt_lr=0.05, ttt_updates=1, ttt_mu_time=1.0, ttt_mu_state=0.1)


def scores_after_step(model, batch, cfg):
    """The batch's scores after the test-time step (the route evaluation and serving share)."""
    return adapted_scores(model, batch.items, batch.times, batch.target_times, cfg).scores


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_parameters_bit_identical_and_predictions_change():
    model, batch = tiny_model(), random_batch()
    before = _snapshot(model)
    plain = model.scores(batch.items, batch.times).detach()
    adapted = scores_after_step(model, batch, TTT)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training
    assert adapted.shape == plain.shape and torch.isinf(adapted[:, 0]).all()
    assert (adapted[:, 1:] - plain[:, 1:]).abs().max() > 1e-6
    assert torch.equal(model.scores(batch.items, batch.times), plain)        # nothing leaks into the next batch


@pytest.mark.parametrize("change", [dict(ttt_lr=0.0), dict(ttt_mu_time=0.0, ttt_mu_state=0.0), dict(ttt_updates=0)])
def test_no_op_settings_equal_plain_scores(change):
    model, batch = tiny_model(), random_batch()
    cfg = dataclasses.replace(TTT, **change)
    plain = model.scores(batch.items, batch.times)
    assert torch.equal(scores_after_step(model, batch, cfg), plain)
    # the functional path itself (bypassing the shortcut) also leaves θ where it was
    fast = adapt_parameters(model, batch.items, batch.times, batch.target_times, cfg)
    own = dict(model.named_parameters())
    assert all(torch.equal(fast[k], own[k]) for k in fast)
    same = call_with(model, fast, type(model).scores, batch.items, batch.times)
    assert torch.allclose(same, plain, atol=0, rtol=1e-6)


@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("steps", [1, 2])
def test_matches_an_explicit_sgd_step_on_a_copy(steps, options):
    """Same θ' as the literal algorithm: copy the model, SGD on μ1' L_time + μ2' L_state, score with the copy."""
    model, batch = tiny_model(**options), random_batch()
    cfg = dataclasses.replace(TTT, ttt_updates=steps)
    twin = copy.deepcopy(model)
    opt = torch.optim.SGD(twin.parameters(), lr=cfg.ttt_lr)
    for _ in range(steps):
        aux = twin.aux_losses(batch.items, batch.times, batch.target_times)
        opt.zero_grad()
        (cfg.ttt_mu_time * aux["time"] + cfg.ttt_mu_state * aux["state"]).backward()
        opt.step()
    expected = twin.scores(batch.items, batch.times, batch.target_times)
    got = scores_after_step(model, batch, cfg)
    torch.testing.assert_close(got[:, 1:], expected[:, 1:], rtol=1e-5, atol=1e-6)


def test_parameter_groups():
    model = tiny_model()
    names = {g: set(adaptable_parameter_names(model, g)) for g in PARAM_GROUPS}
    everything = {n for n, _ in model.named_parameters()}
    assert names["all"] == everything
    assert names["ssm"] == {"layers.0.block.A_log", "layers.0.block.dt_bias", "layers.0.block.in_proj.weight"}
    assert names["ssm"] < names["block"] < everything
    assert "item_emb.weight" not in names["block"] and not any(".ffn." in n for n in names["block"])
    assert "emb_norm.weight" in names["norms"] and "layers.0.block.norm.weight" in names["norms"]
    assert all("norm" in n for n in names["norms"])
    with pytest.raises(ValueError, match="ttt_params"):
        adaptable_parameter_names(model, "everything")


def test_only_the_chosen_group_moves():
    model, batch = tiny_model(), random_batch()
    fast = adapt_parameters(model, batch.items, batch.times, batch.target_times,
                            dataclasses.replace(TTT, ttt_params="ssm"))
    assert set(fast) == set(adaptable_parameter_names(model, "ssm"))
    own = dict(model.named_parameters())
    assert any(not torch.equal(fast[k], own[k]) for k in fast)


def test_sasrec_has_nothing_to_adapt():
    model, batch = tiny_model("sasrec"), random_batch()
    assert torch.equal(scores_after_step(model, batch, TTT), model.scores(batch.items, batch.times))


def test_shift_gate_by_hand():
    from t2arec_fast.adapt import shift_gate
    items = torch.tensor([[0, 5, 6, 7], [1, 2, 3, 4], [0, 0, 0, 9]])
    times = torch.tensor([[0, 100, 200, 300], [0, 10, 20, 50], [0, 0, 0, 1_000]])
    # median gaps: 100, 10; request gaps: 1000 (≥ 5×100), 30 (< 5×10); the third user has no gap at all
    target_times = torch.tensor([1_300, 80, 9_999_999])
    assert shift_gate(items, times, target_times, 5.0).tolist() == [True, False, False]
    # day-resolution data: same-day events give a median gap of 0; a same-day request is not a long pause
    same_day = torch.tensor([[86_400, 86_400, 86_400, 172_800]])
    assert shift_gate(torch.tensor([[1, 2, 3, 4]]), same_day, torch.tensor([172_800]), 5.0).tolist() == [False]
    assert shift_gate(torch.tensor([[1, 2, 3, 4]]), same_day, torch.tensor([259_200]), 5.0).tolist() == [True]


def test_gated_step_adapts_only_gated_users():
    model, batch = tiny_model(), random_batch()
    plain = model.scores(batch.items, batch.times)
    gated_cfg = dataclasses.replace(TTT, ttt_gate=1e9)        # nobody qualifies → plain scores
    assert torch.equal(scores_after_step(model, batch, gated_cfg), plain)
    from t2arec_fast.adapt import shift_gate
    cfg = dataclasses.replace(TTT, ttt_gate=1.0, ttt_lr=0.5)
    gate = shift_gate(batch.items, batch.times, batch.target_times, 1.0)
    assert gate.any() and not gate.all()
    adapted = scores_after_step(model, batch, cfg)
    assert torch.equal(adapted[~gate], plain[~gate])
    assert (adapted[gate][:, 1:] - plain[gate][:, 1:]).abs().max() > 1e-6
    for per_user in (False, True):                  # the caller's plain scores are kept for the others
        given = plain.clone()
        result = adapted_scores(model, batch.items, batch.times, batch.target_times, cfg, per_user=per_user,
                                plain_scores=given)
        assert result.scores is given and torch.equal(result.adapted, gate)
        assert torch.equal(given[~gate], plain[~gate]) and not torch.equal(given[gate], plain[gate])


@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("rule", ["sgd", "relative"])
@pytest.mark.parametrize("gate", [0.0, 1.0])
def test_vectorised_per_user_steps_equal_batches_of_one_user(gate, rule, options):
    """ttt_batch_size = 1 on a whole batch (vmap over users) gives each user's own single-user episode — with the
    relative rule too, whose norms must be taken per user, not over the stacked copies."""
    model, batch = tiny_model(**options).double(), random_batch()
    cfg = dataclasses.replace(TTT, ttt_batch_size=1, ttt_lr=0.5 if rule == "sgd" else 0.05, ttt_updates=2,
                              ttt_gate=gate, ttt_rule=rule)
    together = scores_after_step(model, batch, cfg)
    for row in range(batch.items.shape[0]):
        keep = batch.items[row] != 0
        one = type(batch)(batch.items[row:row + 1, keep], batch.times[row:row + 1, keep],
                          batch.target_times[row:row + 1], batch.targets[row:row + 1])
        alone = scores_after_step(model, one, cfg)
        torch.testing.assert_close(together[row:row + 1], alone, rtol=1e-9, atol=1e-9)
    plain = model.scores(batch.items, batch.times, batch.target_times)
    assert (together[:, 1:] - plain[:, 1:]).abs().max() > 1e-6


@pytest.mark.parametrize("steps", [1, 2])
def test_relative_rule_by_hand(steps):
    """ttt_rule=relative: θ ← θ − ρ‖θ‖ ∇/‖∇‖ per tensor, computed here with autograd on a copy (float64)."""
    model, batch = tiny_model().double(), random_batch()
    cfg = dataclasses.replace(TTT, ttt_rule="relative", ttt_lr=0.01, ttt_updates=steps)
    twin = copy.deepcopy(model)
    for _ in range(steps):
        aux = twin.aux_losses(batch.items, batch.times, batch.target_times)
        params = [p for p in twin.parameters()]
        grads = torch.autograd.grad(cfg.ttt_mu_time * aux["time"] + cfg.ttt_mu_state * aux["state"], params,
                                    allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is not None and g.norm() > 0:
                    p -= cfg.ttt_lr * p.norm() * g / g.norm()
    fast = adapt_parameters(model, batch.items, batch.times, batch.target_times, cfg)
    for name, p in twin.named_parameters():
        torch.testing.assert_close(fast[name], p.detach(), rtol=1e-10, atol=1e-12)


def test_relative_rule_moves_each_reached_tensor_by_rho():
    """The point of the rule: a chosen relative change whatever the losses' scale (the paper's α = 0.005 moves
    the tamed model's parameters by ~1e-5 relative, docs/results.md); tensors the losses do not reach stay."""
    model, batch = tiny_model().double(), random_batch()
    rho = 0.02
    for mu in (1e-6, 1.0):                                    # a million times smaller losses: the same change
        cfg = dataclasses.replace(TTT, ttt_rule="relative", ttt_lr=rho, ttt_mu_time=mu, ttt_mu_state=mu)
        fast = adapt_parameters(model, batch.items, batch.times, batch.target_times, cfg)
        own = {k: v.detach() for k, v in model.named_parameters()}
        zero = [k for k in fast if float(own[k].norm()) == 0.0]          # ‖θ‖ = 0: a relative step is no step
        assert all(torch.equal(fast[k], own[k]) for k in zero)
        moved = {k: float((fast[k] - own[k]).norm() / own[k].norm()) for k in fast if k not in zero}
        assert any(v > 0 for v in moved.values())
        for name, change in moved.items():
            assert change == 0.0 or abs(change - rho) < 1e-9, (name, change)
        assert all(moved[k] == 0.0 for k in moved if ".ffn." in k)


def test_unknown_rule_is_refused_with_the_choices():
    from t2arec_fast.adapt import update
    with pytest.raises(ValueError, match="ttt_rule.*relative"):
        update(torch.ones(2), torch.ones(2), 0.1, "adam")
    with pytest.raises(ValueError, match="ttt_rule"):
        TTTConfig(ttt_rule="adam")


def test_history_until_keeps_what_was_known_at_the_cut():
    from t2arec_fast.adapt import history_until
    items = torch.tensor([[0, 5, 6, 7], [0, 0, 8, 9], [0, 0, 0, 4], [1, 2, 3, 4]])
    times = torch.tensor([[0, 10, 20, 30], [0, 0, 25, 26], [0, 0, 0, 40], [5, 20, 21, 22]])
    known_items, known_times, request = history_until(items, times, torch.tensor(20))
    assert known_items.tolist() == [[5, 6], [1, 2]] and known_times.tolist() == [[10, 20], [5, 20]]
    assert request.tolist() == [20, 20]
    empty = history_until(items, times, torch.tensor(1))
    assert empty[0].shape == (0, 1) and empty[2].shape == (0,)


def test_a_causal_episode_does_not_see_events_after_its_first_request():
    """With causal=True the step adapts on what a server knew at the episode's earliest request: changing other
    users' later events changes nothing for anyone; without it, it does."""
    model, batch = tiny_model(), random_batch(batch=6)
    first = int(batch.target_times.argmin())
    cut = batch.target_times.min()
    later = (batch.times > cut) & (batch.items != 0)
    later[first] = False
    assert later.any()
    altered = torch.where(later, (batch.items % 30) + 1, batch.items)
    cfg = dataclasses.replace(TTT, ttt_rule="relative", ttt_lr=0.1)
    for causal, same in ((True, True), (False, False)):
        a = adapted_scores(model, batch.items, batch.times, batch.target_times, cfg, causal=causal).scores
        b = adapted_scores(model, altered, batch.times, batch.target_times, cfg, causal=causal).scores
        assert torch.equal(a[first], b[first]) == same
