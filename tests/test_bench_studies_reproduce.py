"""bench/studies/reproduce.py's second protocol (seen items masked, as the CoSeRec family's code ranks): computed
from the package's own evaluation, with repeated targets counted as misses only in the "strict" figure."""
import dataclasses

import numpy as np
import pytest

from bench.studies import reproduce
from t2arec_fast.data import leave_one_out
from t2arec_fast.data.synthetic import from_spec
from t2arec_fast.evaluate import evaluate
from t2arec_fast.metrics import ndcg_per_example

from helpers import SYNTHETIC, tiny_model


@pytest.fixture(scope="module")
def split():
    return leave_one_out(from_spec(SYNTHETIC))


def test_repeat_targets_flags_a_target_seen_anywhere_before(split):
    ds = split.dataset
    part = split.part("test")
    flags = reproduce.repeat_targets(split, "test")
    assert flags.shape == (len(part),) and flags.dtype == bool
    u, stop = part.users[0], part.stops[0]
    start = ds.offsets[u]
    items = ds.items.copy()
    items[stop] = items[start]                      # the test target repeats the user's first event
    repeated = leave_one_out(dataclasses.replace(ds, items=items))
    assert reproduce.repeat_targets(repeated, "test")[0]
    fresh = items.copy()
    fresh[stop] = next(i for i in range(1, ds.n_items + 1) if i not in set(items[start:stop].tolist()))
    assert not reproduce.repeat_targets(leave_one_out(dataclasses.replace(ds, items=fresh)), "test")[0]


def test_masked_metrics_are_the_packages_and_strict_drops_repeats(split):
    model = tiny_model(n_items=split.dataset.n_items, max_len=20)
    r = reproduce.masked_history_metrics(model, split, "test", 20)
    full = evaluate(model, split, "test", 20, mask_history=True, return_ranks=True)
    assert r["mask_history"] is True and r["ndcg@10"] == full["ndcg@10"] and "ranks" not in r
    repeat = reproduce.repeat_targets(split, "test")
    per_example = ndcg_per_example(full["ranks"], 10)
    assert r["repeat_targets"] == pytest.approx(repeat.mean())
    assert r["ndcg@10_strict"] == pytest.approx(per_example[~repeat].sum() / len(repeat))
    assert r["ndcg@10_strict"] <= r["ndcg@10"]
    # masking only removes competitors of a target that is not a repeat: its rank never gets worse
    plain = evaluate(model, split, "test", 20, return_ranks=True)["ranks"]
    assert np.all(full["ranks"] <= plain)
