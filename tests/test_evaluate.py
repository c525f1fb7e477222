"""evaluate.py: full-ranking evaluation of a leave-one-out split — the same numbers at any batch size, metrics that
are those of the returned ranks, ranks that are the model's own, segments and request-gap bins, the test-time
step's record."""
import dataclasses

import numpy as np
import pytest
import torch

from t2arec_fast.config import TTTConfig
from t2arec_fast.data import eval_batches, leave_one_out
from t2arec_fast.evaluate import evaluate, evaluate_splits
from t2arec_fast.metrics import metrics_from_ranks, target_ranks

from helpers import tiny_model

MAX_LEN = 20


@pytest.fixture(scope="module")
def setup(tiny_dataset):
    return tiny_model(n_items=tiny_dataset.n_items, max_len=MAX_LEN), leave_one_out(tiny_dataset)


def test_metrics_do_not_depend_on_the_batch_size(setup):
    model, split = setup
    small = evaluate(model, split, "test", MAX_LEN, batch_size=7)
    large = evaluate(model, split, "test", MAX_LEN, batch_size=1024)
    assert small == large


def test_ranks_are_the_models_and_metrics_are_the_ranks(setup):
    model, split = setup
    result = evaluate(model, split, "valid", MAX_LEN, return_ranks=True)
    by_hand = []
    for batch in eval_batches(split, "valid", MAX_LEN, 16):
        tb = batch.to_torch("cpu")
        with torch.no_grad():
            by_hand.append(target_ranks(model.scores(tb.items, tb.times, tb.target_times), tb.targets).numpy())
    np.testing.assert_array_equal(result["ranks"], np.concatenate(by_hand))
    assert {k: result[k] for k in metrics_from_ranks(result["ranks"])} == metrics_from_ranks(result["ranks"])
    assert result["n_users"] == len(result["ranks"]) and result["split"] == "valid"
    assert len(result["ndcg@10_by_segment"]) == 4
    assert sum(n for _, n in result["ndcg@10_by_request_gap"].values()) == result["n_users"]


def test_a_test_time_step_that_changes_nothing_gives_the_plain_numbers(setup):
    model, split = setup
    plain = evaluate(model, split, "test", MAX_LEN)
    noop = evaluate(model, split, "test", MAX_LEN, ttt=dataclasses.replace(TTTConfig(), ttt_lr=0.0, ttt_batch_size=16))
    assert {k: noop[k] for k in plain} == plain
    assert noop["ttt"]["batch_size"] == 16 and noop["ttt"]["episodes"] == "per batch"


def test_evaluate_splits_adds_the_ttt_results_only_when_the_step_is_active(setup):
    model, split = setup
    assert set(evaluate_splits(model, split, MAX_LEN)) == {"valid", "test"}
    active = TTTConfig(ttt_batch_size=32)
    assert set(evaluate_splits(model, split, MAX_LEN, ttt=active)) == {"valid", "test", "valid_ttt", "test_ttt"}


@pytest.mark.parametrize("order", ["time", "random", "stored"])
def test_ttt_episodes_are_formed_in_the_stated_order(setup, order):
    """Each order's episodes, computed by hand (permute, batch, adapt — causally for "time" — and score), give
    evaluate()'s ranks, returned in the split's order; the record names the order."""
    from t2arec_fast.adapt import adapted_scores
    from t2arec_fast.evaluate import episode_order
    model, split = setup
    ttt = TTTConfig(ttt_rule="relative", ttt_lr=0.1, ttt_batch_size=16, ttt_order=order)
    result = evaluate(model, split, "test", MAX_LEN, ttt=ttt, return_ranks=True)
    index = episode_order(split, "test", order)
    assert sorted(index) == list(range(result["n_users"]))
    by_hand = np.empty(len(index), np.int64)
    for b, batch in enumerate(eval_batches(split, "test", MAX_LEN, 16, order=index)):
        tb = batch.to_torch("cpu")
        scores = adapted_scores(model, tb.items, tb.times, tb.target_times, ttt, causal=order == "time").scores
        by_hand[index[b * 16:(b + 1) * 16]] = target_ranks(scores, tb.targets).numpy()
    np.testing.assert_array_equal(result["ranks"], by_hand)
    assert order in result["ttt"]["order"]
    if order == "time":
        times = split.dataset.timestamps[split.part("test").stops[index]]
        assert np.all(np.diff(times) >= 0)


def test_an_order_that_is_not_a_permutation_is_refused(setup):
    _, split = setup
    with pytest.raises(ValueError, match="permutation"):
        eval_batches(split, "test", MAX_LEN, 16, order=np.zeros(len(split.part("test").users), np.int64))
