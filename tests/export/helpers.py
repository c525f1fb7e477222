"""A small float32 model, left-padded batches, closeness checks and export copies for the ONNX export tests
(and the export CLI's)."""
import shutil

import numpy as np
import torch

from t2arec_fast.model import T2ARec

N_ITEMS = 60


def small_model(n_layers=1, seed=0, n_items=N_ITEMS):
    torch.manual_seed(seed)
    return T2ARec(n_items, d=16, d_state=8, n_layers=n_layers, dropout=0.0).eval()


def mixed_batch(batch, length, n_items=N_ITEMS, seed=0):
    """Left-padded (batch, length) ids with every length from 1 to `length` represented (row 0 is full)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, n_items + 1, (batch, length), generator=g)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    lengths[0] = length
    for row, n in enumerate(lengths.tolist()):
        ids[row, : length - n] = 0
    return ids


def assert_rel_close(got, want, rtol=1e-4):
    """max |got − want| ≤ rtol · max |want| (the export's own acceptance rule)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    scale = max(np.abs(want).max(), 1e-30)
    err = np.abs(got - want).max() / scale
    assert err <= rtol, f"relative error {err:.3g} > {rtol:g}"


def assert_states_close(got, want, rtol=1e-4):
    """Block states (lists of BlockState) equal up to assert_rel_close, block by block."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_rel_close(g.conv, w.conv, rtol)
        assert_rel_close(g.ssm, w.ssm, rtol)


def copy_export(exported, tmp_path):
    """A copy of the session's exported folder (the `exported` fixture) under tmp_path, free to damage."""
    out = tmp_path / "onnx"
    shutil.copytree(exported[0], out)
    return out
