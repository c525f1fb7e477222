"""SASRec baseline (model/sasrec.py): causal attention, left padding invisible, only the last max_len items count,
checkpoint round trip, no alignment losses."""
import pytest
import torch

from t2arec_fast.errors import InputError
from t2arec_fast.model import SASRec, load_model


def tiny_sasrec(max_len=10):
    torch.manual_seed(0)
    return SASRec(30, max_len=max_len, d=16, n_layers=2, n_heads=2, dropout=0.0).double().eval()


def test_outputs_are_causal():
    model = tiny_sasrec()
    items = torch.randint(1, 31, (2, 8), generator=torch.Generator().manual_seed(1))
    changed = items.clone()
    changed[:, 5] = items[:, 5] % 30 + 1
    with torch.no_grad():
        a, b = model._run_sequence(items), model._run_sequence(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=0, atol=0)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_left_padding_is_invisible():
    model = tiny_sasrec()
    row = torch.tensor([[4, 9, 2, 7, 7]])
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), row], 1)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(padded)[0], model.encode(row)[0], rtol=1e-12, atol=1e-12)


def test_only_the_last_max_len_items_count():
    model = tiny_sasrec(max_len=4)
    items = torch.tensor([[1, 2, 3, 4, 5, 6]])
    other_start = torch.tensor([[9, 9, 3, 4, 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(model.encode(items)[0], model.encode(other_start)[0], rtol=0, atol=0)


def test_checkpoint_round_trip_and_no_alignment_losses(tmp_path):
    model = tiny_sasrec().float()                      # checkpoints load as float32
    items = torch.tensor([[0, 4, 5, 6], [1, 2, 3, 4]])
    times = torch.arange(4).expand(2, 4) * (items != 0)
    model.save(tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    assert type(loaded) is SASRec and loaded.config == model.config
    assert torch.equal(loaded.scores(items, times), model.scores(items, times))
    out = model.losses(items, times, torch.tensor([[0, 5, 6, 7], [2, 3, 4, 5]]), times[:, -1] + 1)
    assert out["time"].item() == 0.0 and out["state"].item() == 0.0 and out["rec"].item() > 0


def test_bad_sizes_and_inputs_are_clear_errors():
    with pytest.raises(InputError, match="n_items"):
        SASRec(0)
    with pytest.raises(InputError, match="max_len"):
        SASRec(5, max_len=0)
    with pytest.raises(InputError, match="outside"):
        tiny_sasrec().encode(torch.tensor([[1, 31]]))


def test_left_padding_is_invisible_with_positions_from_the_start():
    torch.manual_seed(0)
    model = SASRec(30, max_len=10, d=16, dropout=0.0, position_origin="start").double().eval()
    with torch.no_grad():
        torch.testing.assert_close(model.encode(torch.tensor([[0, 0, 0, 4, 9, 2]]))[0],
                                   model.encode(torch.tensor([[4, 9, 2]]))[0], rtol=1e-12, atol=1e-12)


def test_positions_from_the_start_make_every_training_query_an_inference_query():
    """o at column j of one causal pass over a window = o_n of the prefix items[:j+1] encoded on its own (RecBole's
    positions); with positions anchored at the end this holds for the last column only."""
    items = torch.tensor([[0, 0, 7, 3, 9, 4, 5]])
    for origin, same in (("start", True), ("end", False)):
        torch.manual_seed(0)
        model = SASRec(30, max_len=8, d=16, dropout=0.0, position_origin=origin).double().eval()
        with torch.no_grad():
            o = model._run_sequence(items)
            alone = torch.cat([model.encode(items[:, 2:j + 1])[0] for j in range(2, 7)])
        assert torch.allclose(o[0, 2:], alone, atol=1e-10) == same, origin


def test_unknown_position_origin():
    from t2arec_fast.config import ConfigError
    with pytest.raises(ConfigError, match="position_origin"):
        SASRec(30, max_len=8, position_origin="middle")
