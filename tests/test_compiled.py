"""torch.compile paths (t2arec_fast/compiled.py): one graph without breaks (fullgraph=True) and the same numbers as
eager in float64. "aot_eager" traces through dynamo and AOTAutograd exactly as "inductor" does but generates no
code, so most checks use it (seconds instead of a minute on a small CPU); one check runs inductor end to end."""
import os

import numpy as np
import pytest
import torch

from t2arec_fast.compiled import compile_fn
from t2arec_fast.config import Config

from tests.model.helpers import random_batch, tiny_model


# Inductor's code generation takes minutes on a small shared CPU: run with T2AREC_RUN_SLOW=1 (gpu_check.sh does).
slow = pytest.mark.skipif(os.environ.get("T2AREC_RUN_SLOW", "0") != "1",
                          reason="inductor / extra compile cases are slow on CPU; set T2AREC_RUN_SLOW=1")


@pytest.fixture(autouse=True)
def _fresh_compiler_caches():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _next_items(items, seed=3):
    g = torch.Generator().manual_seed(seed)
    nxt = torch.randint(1, 41, items.shape, generator=g)
    return torch.where(items != 0, nxt, 0)


def _losses_and_grads(model, fn, items, times, target_times):
    model.zero_grad(set_to_none=True)
    out = fn(items, times, _next_items(items), target_times)
    total = out["rec"] + 0.3 * out["time"] + 0.7 * out["state"]
    total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in out.items()}, grads


@pytest.mark.parametrize("readout", ["last", pytest.param("extrapolated", marks=slow)])
def test_training_step_compiles_as_one_graph_and_equals_eager(readout):
    model = tiny_model(readout=readout).train()
    items, times, target_times = random_batch()
    want = _losses_and_grads(model, model.losses, items, times, target_times)
    got = _losses_and_grads(model, compile_fn(model.losses, "aot_eager"), items, times, target_times)
    for key in want[0]:
        torch.testing.assert_close(got[0][key], want[0][key], rtol=1e-12, atol=1e-12)
    assert got[1].keys() == want[1].keys()
    for name in want[1]:
        torch.testing.assert_close(got[1][name], want[1][name], rtol=1e-10, atol=1e-12, msg=name)


@slow
def test_inductor_generated_training_step_equals_eager():
    """The real code generator once (float64 on CPU; the slowest test here, tens of seconds)."""
    model = tiny_model().train()
    items, times, target_times = random_batch()
    want = _losses_and_grads(model, model.losses, items, times, target_times)
    got = _losses_and_grads(model, compile_fn(model.losses, "inductor"), items, times, target_times)
    for key in want[0]:
        torch.testing.assert_close(got[0][key], want[0][key], rtol=1e-9, atol=1e-12)
    for name in want[1]:
        torch.testing.assert_close(got[1][name], want[1][name], rtol=1e-8, atol=1e-10, msg=name)


def test_unknown_compile_backend_is_named():
    with pytest.raises(ValueError, match="unknown compile backend 'fast'"):
        compile_fn(lambda x: x, "fast")


def _fit_pair(overrides, compare=True):
    """Train eagerly and compiled on the same data; with `compare`, assert equal losses and validation scores per
    epoch. Returns the number of distinct graphs dynamo captured."""
    import t2arec_fast as t2a
    from t2arec_fast.train import fit
    ds = t2a.load_dataset("synthetic:n_users=60,seed=3", min_count=1)
    base = {"d": 16, "d_state": 8, "max_len": 20, "progress": False, "device": "cpu", **overrides}
    eager = fit(Config.from_sources(overrides=base), dataset=ds)[1] if compare else None
    torch._dynamo.utils.counters.clear()
    _, compiled = fit(Config.from_sources(overrides={**base, "compile": True}), dataset=ds)
    assert len(compiled["epochs"]) == overrides["epochs"]
    for i, c in enumerate(compiled["epochs"]):
        assert all(np.isfinite(c[key]) for key in ("loss", "rec", "time", "state")), c
        if compare:
            e = eager["epochs"][i]
            for key in ("loss", "rec", "time", "state", "valid_ndcg@10"):
                assert np.isclose(c[key], e[key], rtol=1e-4, atol=1e-6), (key, c[key], e[key])
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def test_fit_with_compile_trains_the_same_model():
    """`compile: true` in fit: one batch per epoch, auxiliary losses on, dynamo's capture run eagerly (the graph and
    its wiring, without code generation): the same losses and validation score as eager training."""
    assert _fit_pair({"epochs": 1, "aux_warmup_epochs": 0, "batch_size": 64, "compile_backend": "eager"}) >= 1


@slow
@pytest.mark.xfail(reason="known open fault (issue 17): CI on 2026-11-30 counted 7 graphs, one recompile more than the "
                          "6 expected; compiled CPU training is also slower per epoch than eager (docs/benchmarks.md)",
                   strict=False)
def test_fit_recompiles_once_per_graph_not_per_batch_size():
    """Warm-up epoch (no auxiliary losses) then one with them, a smaller last batch: the batch dimension turns
    dynamic once per graph instead of one graph per batch size."""
    # Only the graph count is asserted here: equality with eager training is the test above (one epoch). Over two
    # epochs of float32 updates aot_eager's decomposed ops round differently and the losses drift apart (1.05e-4
    # relative after epoch 2 in CI), which says nothing about recompilation.
    graphs = _fit_pair({"epochs": 2, "aux_warmup_epochs": 1, "batch_size": 32, "compile_backend": "aot_eager"},
                       compare=False)
    assert graphs <= 6


def test_test_time_step_compiles_with_its_functional_gradient_and_equals_eager():
    """ttt_compile: the SGD step (torch.func.grad of the alignment objective, then the update) and the adapted
    scoring each run as one graph; scores equal the eager step's in float64."""
    from t2arec_fast.adapt import adapted_scores
    from t2arec_fast.config import TTTConfig
    model = tiny_model()
    items, times, target_times = random_batch()
    settings = dict(ttt_lr=0.5, ttt_updates=2, ttt_mu_time=1.0, ttt_mu_state=1.0)
    want = adapted_scores(model, items, times, target_times, TTTConfig(**settings)).scores
    got = adapted_scores(model, items, times, target_times,
                         TTTConfig(**settings, ttt_compile=True, ttt_compile_backend="aot_eager")).scores
    plain = model.scores(items, times)
    assert not torch.allclose(want[:, 1:], plain[:, 1:])                      # the step changed something
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_compiled_scores_check_inputs_eagerly_and_equal_eager():
    from t2arec_fast.compiled import compiled_scores
    from t2arec_fast.errors import InputError
    model = tiny_model()
    items, times, target_times = random_batch()
    scores = compiled_scores(model, "aot_eager")
    torch.testing.assert_close(scores(items, times), model.scores(items, times), rtol=1e-12, atol=1e-12)
    bad = items.clone()
    bad[0, -1] = 0                                                            # right padding
    with pytest.raises(InputError):
        scores(bad, times)


def test_compiled_scores_of_a_model_without_the_unchecked_path_is_its_eager_scores():
    from t2arec_fast.compiled import compiled_scores
    from helpers import tiny_model as tiny_any_model
    model = tiny_any_model("sasrec")
    assert compiled_scores(model, "aot_eager") == model.scores
