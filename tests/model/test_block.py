"""T2AMambaBlock (through T2ARec): left padding leaves state and output unchanged, the one-step path equals the
sequence path, and outputs are causal."""
import pytest
import torch

from .helpers import random_batch, tiny_model


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
