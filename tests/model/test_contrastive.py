"""Contrastive views and NT-Xent (model/contrastive.py): views stay valid model inputs, each augmentation does what
it says, the loss matches its formula, and the option trains, resumes and leaves runs without it untouched."""
import math

import pytest
import torch

from t2arec_fast.config import Config, ConfigError
from t2arec_fast.model.contrastive import augment, crop, drop, info_nce, reorder


def _batch(seed=0, batch=64, L=12):
    """Random LEFT-padded rows of 1..L events, distinct items per row, times increasing (0 at pads)."""
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(1, L + 1, (batch,), generator=g)
    column = torch.arange(L)
    real = column[None, :] >= (L - n)[:, None]
    items = torch.where(real, torch.randperm(1000, generator=g)[:L][None, :].repeat(batch, 1) + 1, 0)
    times = torch.where(real, 1_700_000_000 + column * 60 + torch.arange(batch)[:, None], 0)
    return items, times


def _rows(items, times):
    return [[(int(i), int(t)) for i, t in zip(ri, rt) if i] for ri, rt in zip(items, times)]


def _assert_valid(items, times):
    real = items != 0
    assert real[:, -1].all(), "a row lost all its events"
    assert not (real[:, :-1] & ~real[:, 1:]).any(), "not left-padded"
    assert (times[~real] == 0).all()
    assert ((times[:, 1:] >= times[:, :-1]) | ~real[:, :-1]).all(), "times out of order"


def test_crop_keeps_a_contiguous_window_of_the_asked_size():
    items, times = _batch()
    out = crop(items, times, 0.5)
    _assert_valid(*out)
    for before, after in zip(_rows(items, times), _rows(*out)):
        k = max(1, math.ceil(0.5 * len(before)))
        assert len(after) == k and any(before[s:s + k] == after for s in range(len(before) - k + 1))


def test_drop_keeps_a_subsequence_and_removes_about_the_rate():
    torch.manual_seed(1)
    items, times = _batch(batch=400, L=20)
    out = drop(items, times, 0.3)
    _assert_valid(*out)
    kept = removed = 0
    for before, after in zip(_rows(items, times), _rows(*out)):
        it = iter(before)
        assert all(event in it for event in after)                     # order kept, nothing invented
        kept, removed = kept + len(after), removed + len(before) - len(after)
    assert 0.25 < removed / (kept + removed) < 0.35


def test_drop_never_empties_a_row():
    items, times = _batch()
    _assert_valid(*drop(items, times, 0.999))


def test_reorder_permutes_items_inside_one_window_and_keeps_the_timeline():
    torch.manual_seed(2)
    items, times = _batch(batch=200)
    new_items, new_times = reorder(items, times, 0.5)
    _assert_valid(new_items, new_times)
    assert torch.equal(new_times, times)
    moved_any = False
    for row in range(items.shape[0]):
        a, b = items[row], new_items[row]
        assert sorted(a.tolist()) == sorted(b.tolist())
        changed = (a != b).nonzero().flatten()
        if len(changed):
            moved_any = True
            n = int((a != 0).sum())
            assert int(changed.max() - changed.min()) + 1 <= max(1, math.ceil(0.5 * n))
    assert moved_any


def test_augment_draws_among_the_augmentations_switched_on():
    torch.manual_seed(3)
    items, times = _batch(batch=300)
    only_reorder = augment(items, times, 1.0, 0.0, 0.5)
    assert torch.equal(only_reorder[1], times) and torch.equal((only_reorder[0] != 0), (items != 0))
    mixed_items, mixed_times = augment(items, times, 0.5, 0.3, 0.5)
    _assert_valid(mixed_items, mixed_times)
    shorter = ((mixed_items != 0).sum(1) < (items != 0).sum(1)).float().mean()
    assert 0.3 < shorter < 0.95                                   # crop and drop shorten rows, reorder never does
    with pytest.raises(ValueError, match="need an augmentation"):
        augment(items, times, 1.0, 0.0, 0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_info_nce_is_nt_xent(dtype):
    g = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(5, 3, generator=g, dtype=dtype), torch.randn(5, 3, generator=g, dtype=dtype)
    tau = 0.7
    z = torch.cat([z1, z2])
    want = 0.0
    for i in range(10):
        partner = (i + 5) % 10
        others = [j for j in range(10) if j != i]
        denom = sum(math.exp(float(z[i] @ z[j]) / tau) for j in others)
        want += -math.log(math.exp(float(z[i] @ z[partner]) / tau) / denom)
    assert float(info_nce(z1, z2, tau)) == pytest.approx(want / 10, rel=1e-5)
    assert float(info_nce(z1[:1], z2[:1], tau)) == 0.0             # no negatives: no signal


def test_info_nce_prefers_matching_views():
    z = torch.randn(8, 4)
    assert info_nce(z, z, 0.5) < info_nce(z, z.roll(1, 0), 0.5)


def test_a_contrastive_loss_with_every_augmentation_off_is_a_config_error():
    with pytest.raises(ConfigError, match="needs an augmentation"):
        Config.from_sources(overrides={"cl_weight": 0.1, "cl_crop": 1.0, "cl_drop": 0.0, "cl_reorder": 0.0})
    for key, bad in [("cl_crop", 0.0), ("cl_drop", 1.0), ("cl_temperature", 0.0), ("cl_weight", -1.0)]:
        with pytest.raises(ConfigError, match=key):
            Config.from_sources(overrides={key: bad})


# -- the option in training ------------------------------------------------------------------------------------------
def _fit(tiny_dataset, model_name, out_dir=None, resume=None, **over):
    from t2arec_fast.train import fit

    from helpers import tiny_config
    return fit(tiny_config(model_name, lr=5e-3, patience=10, **over), dataset=tiny_dataset, out_dir=out_dir,
               resume=resume)


@pytest.mark.parametrize("model_name", ["sasrec", "backbone", "t2arec"])
def test_contrastive_training_records_the_loss_and_adds_it_with_its_weight(tiny_dataset, model_name):
    _, history = _fit(tiny_dataset, model_name, epochs=2, cl_weight=0.5, aux_warmup_epochs=5)
    for e in history["epochs"]:
        assert e["cl"] > 0 and math.isfinite(e["cl"])
        assert e["loss"] == pytest.approx(e["rec"] + 0.5 * e["cl"], rel=1e-5)
    assert history["epochs"][-1]["cl"] < history["epochs"][0]["cl"]     # the views learn to agree


def test_without_the_option_no_view_is_drawn(tiny_dataset):
    """cl_weight = 0 ignores the augmentation settings and draws no random numbers: runs stay as they were."""
    _, plain = _fit(tiny_dataset, "backbone", epochs=2)
    _, other = _fit(tiny_dataset, "backbone", epochs=2, cl_crop=0.2, cl_drop=0.9, cl_reorder=1.0)
    assert [e["loss"] for e in plain["epochs"]] == [e["loss"] for e in other["epochs"]]
    assert all(e["cl"] == 0 for e in plain["epochs"])


def test_a_resumed_contrastive_run_continues_exactly(tiny_dataset, tmp_path):
    _, straight = _fit(tiny_dataset, "backbone", tmp_path / "a", epochs=3, cl_weight=0.3)
    _fit(tiny_dataset, "backbone", tmp_path / "b", epochs=2, cl_weight=0.3)
    _, resumed = _fit(tiny_dataset, "backbone", tmp_path / "b", resume=tmp_path / "b", epochs=3, cl_weight=0.3)
    assert [e["loss"] for e in resumed["epochs"]] == [e["loss"] for e in straight["epochs"]]
