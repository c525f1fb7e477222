"""model/readout.py. The extrapolated readouts (option readout='extrapolated' / 'request_gap', beyond the paper):
scores come from ô_{n+1}, the one-step update fed with o_n — the extrapolation the alignment losses already make for Δ̂_{n+1} — at the request time.

Training scores ô_{i+1} at every position in one pass (`extrapolate_sequence`); that must equal scoring each prefix
with its next event's time as the request, and serving's O(1) form (`scores_from_state`)."""
import pytest
import torch

from t2arec_fast.errors import InputError
from t2arec_fast.model import T2ARec
from t2arec_fast.model.losses import gap_buckets
from t2arec_fast.model.readout import REQUEST_GAP_BUCKETS

from .test_t2arec import random_batch


def readout_model(n_layers=2, dtype=torch.float64, weight=0.7, readout="extrapolated"):
    torch.manual_seed(0)
    model = T2ARec(40, d=16, d_state=8, n_layers=n_layers, dropout=0.0, readout=readout).to(dtype).eval()
    model.set_time_margin(0.5)
    with torch.no_grad():
        if model.request_gap_emb is not None:            # trained values, not the zero initialisation
            model.request_gap_emb.weight.normal_(0, weight)
    return model


READOUTS = ["extrapolated", "request_gap"]


def next_times(times, target_times):
    return torch.cat([times[:, 1:], target_times[:, None]], dim=1)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("readout", READOUTS)
@pytest.mark.parametrize("n_layers", [1, 2])
def test_every_positions_readout_equals_scoring_its_prefix(n_layers, readout, dtype, tol):
    model = readout_model(n_layers, dtype, readout=readout)
    items, times, target_times = random_batch()
    mask = items != 0
    o, _, internals = model._run_sequence(items)
    readout = model.score_from(model._training_outputs(o, mask, times, target_times, internals))
    requests = next_times(times, target_times)
    for row, col in mask.nonzero().tolist():
        prefix = slice(row, row + 1), slice(0, col + 1)
        start = int((~mask[row, :col + 1]).sum())          # drop the left pads: the prefix must stand alone
        want = model.scores(items[prefix][:, start:], times[prefix][:, start:], requests[row:row + 1, col])
        torch.testing.assert_close(readout[row:row + 1, col, 1:], want[:, 1:], rtol=tol, atol=tol)


@pytest.mark.parametrize("readout", READOUTS)
def test_scores_from_state_is_one_step_after_encode(readout):
    model = readout_model(readout=readout)
    items, times, target_times = random_batch()
    o_n, states = model.encode(items, times)
    via_state = model.scores_from_state(o_n, states, times[:, -1], target_times)
    torch.testing.assert_close(via_state, model.scores(items, times, target_times), rtol=0, atol=0)
    assert not torch.allclose(via_state[:, 1:], model.score_from(o_n)[:, 1:])   # not o_n's scores


def test_the_request_gap_moves_the_scores_only_when_the_readout_sees_time():
    items, times, target_times = random_batch()
    much_later = target_times + 90 * 86_400
    aware = readout_model(readout="request_gap")
    assert not torch.allclose(aware.scores(items, times, target_times), aware.scores(items, times, much_later))
    blind = readout_model(readout="extrapolated")
    torch.testing.assert_close(blind.scores(items, times, target_times), blind.scores(items, times, much_later),
                               rtol=0, atol=0)
    torch.testing.assert_close(blind.scores(items, times), blind.scores(items, times, much_later), rtol=0, atol=0)


def test_the_recommendation_loss_trains_what_sees_the_request_gap():
    model = readout_model(weight=0.0, readout="request_gap").train()
    items, times, target_times = random_batch(pads=(0, 0, 0))
    next_items = torch.cat([items[:, 1:], torch.tensor([[1], [2], [3]])], dim=1)
    model.losses(items, times, next_items, target_times, with_aux=False)["rec"].backward()
    used = gap_buckets(next_times(times, target_times) - times, REQUEST_GAP_BUCKETS).unique()
    grad_rows = model.request_gap_emb.weight.grad.abs().sum(1).nonzero().flatten()
    assert torch.equal(grad_rows, used)                      # exactly the buckets of this batch's gaps


def test_gap_buckets_are_log2_minutes():
    seconds = torch.tensor([0, 59, 60, 179, 180, 3_600, 10**12])
    assert gap_buckets(seconds, 24).tolist() == [0, 0, 1, 1, 2, 5, 23]


def test_missing_or_bad_request_times_are_refused():
    model = readout_model(readout="request_gap")
    items, times, target_times = random_batch()
    with pytest.raises(InputError, match="pass request_times"):
        model.scores(items, times)
    with pytest.raises(InputError, match="precedes its last event"):
        model.scores(items, times, times[:, -1] - 1)
    with pytest.raises(InputError, match="int64"):
        model.scores(items, times, target_times.double())
    with pytest.raises(InputError, match="readout"):
        T2ARec(10, readout="next")


def test_the_default_readout_ignores_request_times():
    torch.manual_seed(0)
    model = T2ARec(40, d=16, d_state=8).double().eval()
    items, times, target_times = random_batch()
    o_n, _ = model.encode(items, times)
    torch.testing.assert_close(model.scores(items, times, target_times), model.score_from(o_n), rtol=0, atol=0)


@pytest.mark.parametrize("readout", READOUTS)
def test_checkpoint_round_trip_keeps_the_readout(tmp_path, readout):
    model = readout_model(weight=0.3, readout=readout)
    items, times, target_times = random_batch()
    model.save(tmp_path / "m")
    loaded = T2ARec.load(tmp_path / "m").to(torch.float64).eval()
    assert loaded.readout.name == loaded.config.readout == readout and not loaded.readout.exports
    torch.testing.assert_close(loaded.scores(items, times, target_times), model.scores(items, times, target_times),
                               rtol=0, atol=1e-6)


def test_onnx_export_refuses_the_extrapolated_readout(tmp_path):
    pytest.importorskip("onnx")
    from t2arec_fast.export import export_onnx
    for readout in ("extrapolated", "request_gap"):
        with pytest.raises(InputError, match=f"readout='{readout}'"):
            export_onnx(readout_model(readout=readout), tmp_path / "onnx")



def test_make_readout_refuses_what_it_cannot_build():
    """An unknown name, or a gap embedding without readout 'request_gap' (or the reverse), is an error, never a
    silent 'extrapolated' readout."""
    from t2arec_fast.model.readout import REQUEST_GAP_BUCKETS, make_readout
    emb = torch.nn.Embedding(REQUEST_GAP_BUCKETS, 4)
    assert make_readout("request_gap", emb).name == "request_gap"
    assert make_readout("extrapolated").name == "extrapolated" and make_readout("last").name == "last"
    for name, gap_embedding, match in (("lastt", None, "unknown readout"), ("request_gap", None, "required"),
                                       ("extrapolated", emb, "required")):
        with pytest.raises(ValueError, match=match):
            make_readout(name, gap_embedding)
