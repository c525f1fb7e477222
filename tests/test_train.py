"""Pre-training: the loss falls, early stopping, resume, checkpoints, warm-up, λ."""
import math

import pytest
import torch

from t2arec_fast.model import load_model
from t2arec_fast.train import fit, lr_at

from helpers import tiny_config


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def t2arec_run(tmp_path_factory, tiny_dataset):
    out = tmp_path_factory.mktemp("t2arec")
    cfg = tiny_config(epochs=3, lr=5e-3, aux_warmup_epochs=1, patience=5)
    model, history = fit(cfg, dataset=tiny_dataset, out_dir=out)
    return cfg, model, history, out


def test_training_lowers_the_loss_and_keeps_the_best_epoch(t2arec_run):
    _, model, history, _ = t2arec_run
    recs = [e["rec"] for e in history["epochs"]]
    assert history["epochs_run"] == 3 and recs[-1] < recs[0]
    assert history["best_valid_ndcg@10"] == max(e["valid_ndcg@10"] for e in history["epochs"])
    assert history["seconds_per_epoch"] > 0 and not model.training


def test_auxiliary_losses_start_after_warm_up_and_lambda_is_stored(t2arec_run):
    _, model, history, _ = t2arec_run
    first, later = history["epochs"][0], history["epochs"][1]
    assert not first["aux"] and later["aux"]
    assert first["loss"] == pytest.approx(first["rec"])
    assert later["loss"] > later["rec"]
    lam = history["time_margin"]
    assert lam > 0 and math.isclose(float(model.time_margin), lam, rel_tol=1e-6)


def test_best_checkpoint_round_trip_gives_identical_scores(t2arec_run, tiny_dataset):
    _, model, _, out = t2arec_run
    loaded = load_model(out / "best")
    assert _same_weights(model, loaded)
    items = torch.tensor([[0, 0, 3, 7, 9], [1, 2, 3, 4, 5]])
    times = torch.tensor([[0, 0, 10, 20, 3600], [5, 6, 7, 8, 9]]) + 1_700_000_000 * (items != 0)
    assert torch.equal(model.scores(items, times), loaded.scores(items, times))
    assert loaded.checkpoint_meta["extra"]["max_len"] == 20


def test_resume_continues_exactly(t2arec_run, tiny_dataset, tmp_path):
    cfg, _, straight_history, straight_out = t2arec_run
    fit(tiny_config(epochs=2, lr=5e-3, aux_warmup_epochs=1, patience=5), dataset=tiny_dataset, out_dir=tmp_path)
    _, history = fit(cfg, dataset=tiny_dataset, out_dir=tmp_path, resume=tmp_path)
    assert history["epochs_run"] == 3
    assert [e["loss"] for e in history["epochs"]] == [e["loss"] for e in straight_history["epochs"]]
    assert _same_weights(load_model(tmp_path / "last"), load_model(straight_out / "last"))


def test_resume_without_a_checkpoint_is_a_clear_error(tiny_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        fit(tiny_config(epochs=1), dataset=tiny_dataset, resume=tmp_path)


def test_early_stopping(tiny_dataset):
    # lr = 0: validation never improves after the first epoch, so patience 1 stops after epoch 2
    _, history = fit(tiny_config("backbone", epochs=6, lr=0.0, patience=1), dataset=tiny_dataset)
    assert history["epochs_run"] == 2 and history["stopped_early"] and history["best_epoch"] == 1
    assert all(e["time"] == 0 and e["state"] == 0 for e in history["epochs"])      # backbone: no alignment


def test_sasrec_trains_and_round_trips(tiny_dataset, tmp_path):
    model, history = fit(tiny_config("sasrec", epochs=2, lr=5e-3), dataset=tiny_dataset, out_dir=tmp_path)
    recs = [e["rec"] for e in history["epochs"]]
    assert recs[-1] < recs[0] and history["time_margin"] is None
    loaded = load_model(tmp_path / "best")
    assert type(loaded).__name__ == "SASRec" and _same_weights(model, loaded)
    items = torch.tensor([[0, 4, 5, 6], [1, 2, 3, 4]])
    times = torch.arange(4).expand(2, 4) * (items != 0)
    assert torch.equal(model.scores(items, times), loaded.scores(items, times))


@pytest.mark.parametrize("model_name", ["sasrec", "t2arec"])
def test_recbole_batch_composition_trains(tiny_dataset, model_name):
    """Prefix samples (CE at each sample's last position) with every target weighted the same."""
    cfg = tiny_config(model_name, epochs=2, lr=5e-3, train_samples="prefixes", rec_weighting="target",
                      aux_warmup_epochs=0)
    _, history = fit(cfg, dataset=tiny_dataset)
    recs = [e["rec"] for e in history["epochs"]]
    assert all(math.isfinite(r) for r in recs) and recs[-1] < recs[0]


def test_target_weighting_counts_every_target_once():
    """rec_weighting="target": a step's weight is its target count over the mean per step, so that weight × (CE
    mean over the batch) = Σ CE / mean — a batch of short histories no longer outweighs its targets."""
    from t2arec_fast.train import DistContext, target_weight

    class B:
        next_items = torch.tensor([[0, 0, 3], [4, 5, 6]])
    assert target_weight(B, DistContext(), mean_step_targets=8.0) == pytest.approx(4 / 8)
    assert target_weight(B, DistContext(rank=1, world_size=2), mean_step_targets=8.0) == pytest.approx(4 * 2 / 8)
    assert target_weight(B, DistContext(), 8.0, real=False) == 0.0


def test_adamw_decays_matrices_apart_from_the_gradient_and_leaves_vectors():
    """With zero gradients AdamW only decays: every matrix by (1 − lr · wd), biases, norms and the SSM's A_log,
    dt_bias and D not at all; Adam's L2 term instead moves every parameter (it enters the gradient)."""
    from t2arec_fast.config import TrainConfig
    from t2arec_fast.model import T2ARec
    from t2arec_fast.train import make_optimizer
    for name in ("adamw", "adam"):
        torch.manual_seed(0)
        model = T2ARec(20, d=8, d_state=4, n_layers=1)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt = make_optimizer(model, TrainConfig(optimizer=name, lr=0.1, weight_decay=0.5))
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        for n, p in model.named_parameters():
            if name == "adamw":
                want = before[n] * (1 - 0.1 * 0.5) if p.ndim >= 2 else before[n]
                torch.testing.assert_close(p.detach(), want, msg=n)
            elif before[n].abs().sum() > 0:
                assert not torch.equal(p.detach(), before[n]), n


def test_adamw_trains(tiny_dataset):
    cfg = tiny_config("t2arec", epochs=2, lr=5e-3, optimizer="adamw", weight_decay=0.05, aux_warmup_epochs=0)
    _, history = fit(cfg, dataset=tiny_dataset)
    recs = [e["rec"] for e in history["epochs"]]
    assert all(math.isfinite(r) for r in recs) and recs[-1] < recs[0]


@pytest.mark.parametrize("key", ["rec_weighting", "train_samples", "optimizer", "lr_schedule"])
def test_unknown_training_choice_is_a_config_error(tiny_dataset, key):
    from t2arec_fast.config import ConfigError
    with pytest.raises(ConfigError, match=key):
        fit(tiny_config("sasrec", **{key: "sometimes"}), dataset=tiny_dataset)


def test_learning_rate_schedules_by_epoch():
    from t2arec_fast.config import TrainConfig
    from t2arec_fast.train import lr_at
    flat = TrainConfig(lr=0.01, epochs=10)
    assert [lr_at(flat, e) for e in range(10)] == [0.01] * 10
    cos = TrainConfig(lr=0.01, epochs=10, lr_schedule="cosine", warmup_epochs=2)
    got = [lr_at(cos, e) for e in range(10)]
    assert got[:2] == pytest.approx([0.01 / 3, 0.02 / 3])                    # warm-up
    assert got[2] == pytest.approx(0.01) and got[6] == pytest.approx(0.005)   # cosine from the peak, half-way
    assert all(a > b for a, b in zip(got[2:], got[3:])) and got[-1] > 0


def test_the_optimizer_follows_the_schedule_and_a_resumed_run_continues_it(tiny_dataset, tmp_path):
    cfg = tiny_config("backbone", epochs=4, lr=4e-3, lr_schedule="cosine", warmup_epochs=1, patience=10)
    _, history = fit(cfg, dataset=tiny_dataset, out_dir=tmp_path / "run")
    want = [lr_at(cfg.train, e) for e in range(4)]
    assert [e["lr"] for e in history["epochs"]] == pytest.approx(want)
    assert want[0] < want[1] > want[2] > want[3]
    short = tiny_config("backbone", epochs=2, lr=4e-3, lr_schedule="cosine", warmup_epochs=1, patience=10)
    fit(short, dataset=tiny_dataset, out_dir=tmp_path / "two")
    _, resumed = fit(cfg, dataset=tiny_dataset, out_dir=tmp_path / "two", resume=tmp_path / "two" / "last")
    assert [e["lr"] for e in resumed["epochs"]] == pytest.approx([lr_at(short.train, 0), lr_at(short.train, 1),
                                                                  want[2], want[3]])
