"""bench/studies/ttt_step.py and tie_order.py on a tiny model and the synthetic data: the numbers they report are
the ones the package computes (no hand-made values), and "no step" stays what validation falls back on."""
import dataclasses

import numpy as np
import pytest

from bench.studies import tie_order, ttt_step
from t2arec_fast.data import leave_one_out
from t2arec_fast.data.synthetic import from_spec
from t2arec_fast.evaluate import evaluate

from helpers import SYNTHETIC, tiny_model


@pytest.fixture(scope="module")
def split():
    return leave_one_out(from_spec(SYNTHETIC))


def test_ttt_step_study_reports_sizes_changes_and_choice(split):
    model = tiny_model(n_items=split.dataset.n_items, max_len=20)
    out = ttt_step.study_seed(model, split, max_len=20)
    assert [(g["rule"], g["size"]) for g in out["grid"]] == ttt_step.GRID
    assert out["test"] == evaluate(model, split, "test", 20)["ndcg@10"]
    by_setting = {(g["rule"], g["size"]): g for g in out["grid"]}
    # the relative rule moves every reached tensor by ρ: the mean change grows with ρ and never exceeds it
    rel = [by_setting[("relative", r)]["relative_parameter_change"] for r in (0.001, 0.01, 0.1)]
    assert 0 < rel[0] < rel[1] < rel[2] <= 0.1 + 1e-9
    assert by_setting[ttt_step.PAPER]["relative_parameter_change"] < by_setting[("sgd", 50.0)]["relative_parameter_change"]
    best = max(out["grid"], key=lambda g: g["valid_ndcg@10"])
    if best["valid_ndcg@10"] > out["valid"]:
        assert out["chosen"] == {"rule": best["rule"], "size": best["size"]}
    else:
        assert out["chosen"] is None and out["test_chosen"] == out["test"]


def test_tie_orders_keep_users_and_items_and_change_targets(split):
    from t2arec_fast.data.ties import reorder_ties
    ds = dataclasses.replace(split.dataset, timestamps=split.dataset.timestamps // 86_400 * 86_400)  # day resolution
    by_day = leave_one_out(ds)
    for label, order, seed in tie_order.ORDERS:
        other = leave_one_out(reorder_ties(ds, order, seed=seed))
        assert np.array_equal(other.part("test").users, by_day.part("test").users)
        changed = tie_order.target_changed(other, by_day, "test")
        assert (changed == 0.0) if label == "file" else (0.0 < changed < 1.0)
