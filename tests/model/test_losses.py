"""Alignment losses on hand-computed examples, and their gradients."""
import math

import pytest
import torch

from t2arec_fast.model.losses import (estimate_time_margin, gap_sequence, interest_state_loss,
                                      time_interval_loss, transform_gaps)

H = 3600


def test_gap_sequence_masks_the_first_event_and_pads():
    times = torch.tensor([[0, 0, 10 * H, 12 * H], [H, 2 * H, 4 * H, 7 * H]])
    mask = torch.tensor([[False, False, True, True], [True, True, True, True]])
    gaps, valid = gap_sequence(times, mask, torch.tensor([13 * H, 8 * H]))
    assert gaps[0, 3].item() == 2 * H and gaps[0, 4].item() == H
    assert valid.tolist() == [[False, False, False, True, True], [False, True, True, True, True]]


def test_single_pair_hinge_by_hand():
    # two valid steps: Δ = (0.3, 0.1), gaps (2 h, 1 h); λ = 0.5 → 1 − (0.2 · 1)/0.5 = 0.6
    steps = torch.tensor([[0.3, 0.1]])
    gaps = torch.tensor([[2 * H, 1 * H]])
    valid = torch.tensor([[True, True]])
    assert time_interval_loss(steps, gaps, valid, margin=0.5, block=16).item() == pytest.approx(0.6)
    # correctly ordered with a large margin → hinge inactive
    assert time_interval_loss(steps, gaps, valid, margin=0.01, block=16).item() == pytest.approx(0.0)


def test_zero_gaps_and_equal_steps_add_one_per_pair_or_are_skipped():
    steps = torch.tensor([[0.2, 0.2, 0.2]])
    gaps = torch.tensor([[H, H, H]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    assert time_interval_loss(steps, gaps, valid, 1.0, count_tied_pairs=True).item() == pytest.approx(1.0)
    # no counted pairs: zero, never a division by zero
    assert time_interval_loss(steps, gaps, valid, 1.0, count_tied_pairs=False).item() == 0.0


def test_masked_pads_and_blocks_anchored_at_the_end():
    steps = torch.tensor([[9.0, 0.3, 0.1, 0.5]])
    gaps = torch.tensor([[100 * H, 2 * H, H, 3 * H]])
    valid = torch.tensor([[False, True, True, True]])
    # block = 2 anchored at the end: pairs (2,3) only inside [2, 3]; (0,1) has an invalid member
    loss = time_interval_loss(steps, gaps, valid, margin=1.0, block=2)
    expected = max(0.0, 1 - (0.1 - 0.5) * (1 - 3) / 1.0)
    assert loss.item() == pytest.approx(expected)


def test_log1p_transform():
    assert transform_gaps(torch.tensor([H]), "log1p_hours").item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError):
        transform_gaps(torch.tensor([H]), "cubic")


def test_time_margin_is_median_of_nonzero_differences():
    gaps = torch.tensor([[0, H, 3 * H, 3 * H]])
    valid = torch.tensor([[False, True, True, True]])
    # pairs among (1h, 3h, 3h): |diffs| = 2, 2, 0 → non-zero median 2
    assert estimate_time_margin([(gaps, valid)], block=16) == pytest.approx(2.0)
    assert estimate_time_margin([], block=16) == 1.0


def test_state_loss_is_zero_when_backward_reconstruction_is_exact():
    torch.manual_seed(0)
    b, n, d = 2, 3, 4
    A = torch.tensor(-2.0, dtype=torch.float64)
    h_n = torch.randn(b, n, d, dtype=torch.float64)
    step = torch.tensor([0.1, 0.2], dtype=torch.float64)
    q = torch.randn(b, n, dtype=torch.float64)
    x = torch.randn(b, d, dtype=torch.float64)
    # choose ĥ_{n+1} so that P̄ ĥ + (Δ q) ⊗ x = h_n exactly, with P̄ = −1/A = 0.5
    h_next = (h_n - (step[:, None] * q)[:, :, None] * x[:, None, :]) / 0.5
    assert interest_state_loss(h_n, h_next, step, q, x, A).item() == pytest.approx(0.0, abs=1e-12)
    # and a known error: add E to h_n → ‖E‖ / Δ² averaged
    err = torch.zeros_like(h_n)
    err[:, 0, 0] = 1.0
    expected = (1.0 / 0.1 ** 2 + 1.0 / 0.2 ** 2) / 2
    assert interest_state_loss(h_n + err, h_next, step, q, x, A).item() == pytest.approx(expected)
    assert interest_state_loss(h_n + err, h_next, step, q, x, A, norm="squared").item() == pytest.approx(expected)
    # the floor δ caps 1/Δ²
    tiny = torch.tensor([1e-6, 1e-6], dtype=torch.float64)
    h_next_t = (h_n - (tiny[:, None] * q)[:, :, None] * x[:, None, :]) / 0.5
    assert interest_state_loss(h_n + err, h_next_t, tiny, q, x, A, floor=1e-2).item() == pytest.approx(1e4)


def test_loss_gradients_float64():
    torch.manual_seed(0)
    b, n, d, L = 2, 3, 4, 6
    A = torch.tensor(-1.5, dtype=torch.float64, requires_grad=True)
    args = [torch.randn(b, n, d, dtype=torch.float64, requires_grad=True),
            torch.randn(b, n, d, dtype=torch.float64, requires_grad=True),
            (torch.rand(b, dtype=torch.float64) * 0.1 + 0.05).requires_grad_(True),
            torch.randn(b, n, dtype=torch.float64, requires_grad=True),
            torch.randn(b, d, dtype=torch.float64, requires_grad=True), A]
    for norm in ("fro", "squared", "relative"):
        assert torch.autograd.gradcheck(lambda *a: interest_state_loss(*a, norm=norm), args)
    steps = (torch.rand(b, L + 1, dtype=torch.float64) * 0.1).requires_grad_(True)
    gaps = torch.randint(0, 10 * H, (b, L + 1))
    valid = torch.ones(b, L + 1, dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda s: time_interval_loss(s, gaps, valid, 0.5, block=4), (steps,))
