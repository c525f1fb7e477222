"""Ranks and metrics on hand-computed examples."""
import math

import numpy as np
import pytest
import torch

from t2arec_fast.metrics import metrics_from_ranks, ndcg_by_request_gap, ndcg_by_segment, target_ranks

NEG = float("-inf")


def test_ranks_count_items_scored_above_the_target():
    scores = torch.tensor([[NEG, 0.1, 0.9, 0.5, 0.3],      # target 3 (0.5): only item 2 above → rank 1
                           [NEG, 0.1, 0.9, 0.5, 0.3],      # target 2: best → rank 0
                           [NEG, 0.1, 0.9, 0.5, 0.3]])     # target 1: worst → rank 3
    assert target_ranks(scores, torch.tensor([3, 2, 1])).tolist() == [1, 0, 3]


def test_padding_column_never_counts_even_when_high():
    scores = torch.tensor([[100.0, 0.1, 0.9]])
    assert target_ranks(scores, torch.tensor([2])).tolist() == [0]


def test_ties_are_pessimistic_and_nan_is_worst():
    flat = torch.zeros(1, 6)                                # every item scores the same
    assert target_ranks(flat, torch.tensor([3])).tolist() == [4]
    tie = torch.tensor([[NEG, 0.5, 0.5, 0.1]])
    assert target_ranks(tie, torch.tensor([1])).tolist() == [1]
    assert target_ranks(tie, torch.tensor([2])).tolist() == [1]
    nan = torch.tensor([[NEG, float("nan"), 0.5, 0.1]])
    assert target_ranks(nan, torch.tensor([1])).tolist() == [2]


def test_history_masking_skips_seen_items_but_never_the_target():
    scores = torch.tensor([[NEG, 0.9, 0.8, 0.7, 0.6]])
    history = torch.tensor([[0, 0, 1, 2]])                  # left padding, then items 1 and 2
    assert target_ranks(scores, torch.tensor([4])).tolist() == [3]
    assert target_ranks(scores, torch.tensor([4]), history).tolist() == [1]     # only item 3 remains above
    assert target_ranks(scores, torch.tensor([2]), history).tolist() == [0]     # target 2 is in the history


def test_metrics_from_ranks_hand_computed():
    ranks = np.array([0, 1, 4, 12, 30])
    m = metrics_from_ranks(ranks)
    assert m["recall@5"] == pytest.approx(3 / 5)
    assert m["recall@10"] == pytest.approx(3 / 5)
    assert m["recall@20"] == pytest.approx(4 / 5)
    assert m["mrr@5"] == pytest.approx((1 + 1 / 2 + 1 / 5) / 5)
    assert m["mrr@20"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 13) / 5)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 5)
    assert m["ndcg@20"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(14)) / 5)


def test_ndcg_by_segment():
    ranks = np.array([0, 0, 1, 50])
    segments = np.array([0, 1, 1, 2])
    out = ndcg_by_segment(ranks, segments, 4)
    assert out[0] == pytest.approx(1.0)
    assert out[1] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert out[2] == 0.0
    assert math.isnan(out[3])


def test_ndcg_by_request_gap_bins_by_seconds_since_the_last_event():
    ranks = np.array([0, 1, 0, 5, 50])
    gaps = np.array([10, 3_599, 3_600, 40 * 86_400, 30 * 86_400])       # < 1 h, < 1 h, 1 h – 1 d, ≥ 30 d, ≥ 30 d
    out = ndcg_by_request_gap(ranks, gaps)
    assert list(out) == ["< 1 h", "1 h – 1 d", "≥ 30 d"]                 # empty bins are left out
    assert out["< 1 h"] == [pytest.approx((1 + 1 / np.log2(3)) / 2), 2]
    assert out["1 h – 1 d"] == [1.0, 1]
    assert out["≥ 30 d"] == [pytest.approx(1 / np.log2(7) / 2), 2]


def test_ndcg_per_example_is_what_the_mean_metric_averages():
    from t2arec_fast.metrics import metrics_from_ranks, ndcg_per_example
    ranks = np.array([0, 1, 9, 10, 500])
    per = ndcg_per_example(ranks, k=10)
    assert per.tolist() == pytest.approx([1.0, 1 / np.log2(3), 1 / np.log2(11), 0.0, 0.0])
    assert metrics_from_ranks(ranks, ks=(10,))["ndcg@10"] == pytest.approx(per.mean())
