"""t2arec_fast.tune: search spaces checked against the config, pruning of trailing trials."""

from pathlib import Path

import pytest

pytest.importorskip("optuna")

from t2arec_fast.config import Config, ConfigError                  # noqa: E402
from t2arec_fast.tune import load_space, open_study, run_study      # noqa: E402

from helpers import SYNTHETIC, tiny_config                          # noqa: E402

# issue 14's same-budget search space (committed; opened by the storage tests too)
_SPACE = Path(__file__).resolve().parents[1] / "bench" / "studies" / "spaces" / "same_budget.yaml"


def write(path, text):
    path.write_text(text)
    return path


def test_space_kinds(tmp_path):
    space = load_space(write(tmp_path / "s.yaml", "lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
                             "n_layers: {type: int, low: 1, high: 3}\n"
                             "dropout: {type: float, low: 0.1, high: 0.5, step: 0.1}\n"
                             "position_origin: [start, end]\n"))
    assert space["lr"].kind == "float" and space["lr"].log and space["n_layers"].kind == "int"
    assert space["dropout"].step == 0.1 and space["position_origin"].choices == ("start", "end")


@pytest.mark.parametrize("text, message", [
    ("lrr: [0.001]\n", "did you mean 'lr'"),
    ("epochs: [a, b]\n", "epochs"),
    ("lr: {type: float, low: 0.1, high: 0.01}\n", "above high"),
    ("lr: {type: float, low: 0, high: 0.01, log: true}\n", "low > 0"),
    ("lr: {type: gaussian}\n", "type must be one of"),
    ("lr: {type: float, low: 0.1, high: 1, steps: 2}\n", "unknown field"),
    ("dropout: []\n", "non-empty list"),
    ("n_layers: {type: int, low: 1.5, high: 3}\n", "finite integer"),
    ("dataset: [a, b]\n", "cannot be searched"),
    ("", "empty"),
])
def test_bad_space(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_space(write(tmp_path / "s.yaml", text))


def test_trailing_trial_is_pruned(tmp_path):
    """MedianPruner: after 2 complete trials, one that trails their median after `prune_after` epochs stops there."""
    from optuna.trial import TrialState
    space = load_space(write(tmp_path / "space.yaml", "lr: [0.01, 1.0e-7]\n"))
    cfg = tiny_config("sasrec", epochs=4, patience=10)
    from t2arec_fast.data import load_dataset
    ds = load_dataset(SYNTHETIC, min_count=1)
    study = open_study(space, cfg, study_name="p", prune_after=1)
    for lr in (0.01, 0.01, 1e-7):
        study.enqueue_trial({"lr": lr})
    lines = []
    study = run_study(ds, space, cfg, trials=3, study_name="p", prune_after=1, on_trial=lines.append,
                      study=study)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert len(study.trials[2].intermediate_values) < 4 and "pruned after epoch" in lines[2]


def test_non_finite_trial_fails_with_its_reason(tmp_path):
    """A trial whose loss diverges is recorded as failed, its line says why, and the study goes on."""
    from optuna.trial import TrialState
    space = load_space(write(tmp_path / "space.yaml", "lr: [1.0e+30, 0.01]\n"))
    cfg = tiny_config("sasrec", epochs=1)
    from t2arec_fast.data import load_dataset
    ds = load_dataset(SYNTHETIC, min_count=1, verbose=False)
    study = open_study(space, cfg, study_name="f")
    for lr in (1e30, 0.01):
        study.enqueue_trial({"lr": lr})
    lines = []
    study = run_study(ds, space, cfg, trials=2, study_name="f", on_trial=lines.append, study=study)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "non-finite loss" in study.trials[0].user_attrs["error"]
    assert lines[0].startswith("trial 0 [0/2]: fail (non-finite loss at epoch 1")


def test_the_committed_same_budget_space_loads_and_fits_every_model():
    """bench/studies/spaces/same_budget.yaml (issue 14's same-budget studies) searches only keys every model reads."""
    space = load_space(_SPACE)
    assert set(space) == {"lr", "dropout", "n_layers", "weight_decay"}
    cfg = Config()                  # one config holds every model's keys: the model choice does not change them
    for name in space:
        assert any(hasattr(section, name) for section in (cfg.data, cfg.model, cfg.train, cfg.ttt)), name


def _open_at_once(url, name, barrier, results):
    """One of several processes opening the same new storage at the same moment."""
    space = load_space(_SPACE)
    barrier.wait()
    try:
        open_study(space, Config(), storage=url, study_name=name, dataset_name="synthetic")
        results.put((name, "ok"))
    except Exception as exc:                      # reported to the test, which names it
        results.put((name, f"{type(exc).__name__}: {exc}"))


def test_processes_that_create_one_new_storage_together_all_open_it(tmp_path):
    """Optuna creates a storage's tables on first use; two processes starting at once on a new sqlite file raced
    ("table studies already exists", optuna/optuna#1092) and one died. Each retries until the other has made it."""
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    for attempt in range(2):                      # the race is timing-dependent: two fresh files
        url = f"sqlite:///{tmp_path / f'study{attempt}.db'}"
        n = 4
        barrier, results = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_open_at_once, args=(url, f"t2arec-m{i % 2}", barrier, results))
                 for i in range(n)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        outcomes = [results.get(timeout=10) for _ in procs]
        assert all(outcome == "ok" for _, outcome in outcomes), outcomes


@pytest.mark.parametrize("url, message", [("notaurl", "not a database URL"),
                                          ("sqlite:////nonexistent-folder/study.db", "cannot open")])
def test_a_storage_that_cannot_be_opened_is_a_config_error_naming_it(url, message):
    with pytest.raises(ConfigError, match=message) as err:
        open_study(load_space(_SPACE), Config(), storage=url)
    assert url in str(err.value)


def _die_in_a_trial(url, space_path, started):
    """A tuning process that starts a trial (lr = 0.005) and hangs in it until it is killed."""
    import time as _time
    from t2arec_fast import tune
    tune.HEARTBEAT_S, tune.GRACE_S = 1, 2
    space = load_space(space_path)
    study = open_study(space, tiny_config("sasrec", epochs=1), storage=url, study_name="k")
    study.enqueue_trial({"lr": 0.005})

    def objective(trial):
        space["lr"].suggest(trial)
        started.set()
        _time.sleep(600)
    study.optimize(objective, n_trials=1)


def _kill_a_process_in_its_trial(tmp_path):
    """SIGKILL a tuning process in the middle of its trial (lr = 0.005), after its first heartbeat; → (storage
    URL, search-space path)."""
    import multiprocessing
    import os
    import signal
    import time as _time
    space_path = write(tmp_path / "space.yaml", "lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Event()
    child = ctx.Process(target=_die_in_a_trial, args=(url, space_path, started))
    child.start()
    assert started.wait(120), "the child never started its trial"
    _time.sleep(1.5)                                # at least one heartbeat written
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    return url, space_path


def test_a_trial_whose_process_was_killed_is_run_again_with_its_parameters(tmp_path, monkeypatch):
    """SIGKILL in the middle of a trial: its heartbeats stop, and the next process marks it failed and runs the
    same parameters before anything new (docs/tuning.md, 'Studies that outlive a process')."""
    import time as _time
    from optuna.trial import TrialState
    from t2arec_fast import tune
    from t2arec_fast.data import load_dataset
    url, space_path = _kill_a_process_in_its_trial(tmp_path)
    monkeypatch.setattr(tune, "HEARTBEAT_S", 1)
    monkeypatch.setattr(tune, "GRACE_S", 2)
    _time.sleep(3)                                  # the dead trial's last heartbeat is older than the grace period
    ds = load_dataset(SYNTHETIC, min_count=1, verbose=False)
    study = run_study(ds, load_space(space_path), tiny_config("sasrec", epochs=1), trials=1, storage=url,
                      study_name="k")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[1].params == study.trials[0].params == {"lr": 0.005}


def test_a_study_written_before_a_setting_existed_resumes(tmp_path):
    """A setting added to Config later (e.g. ttt_order) is read at its default in a stored identity without it;
    a changed one is still refused, naming it."""
    space, url = load_space(_SPACE), f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(space, Config(), storage=url, study_name="old")
    identity = study.user_attrs["identity"]
    del identity["fixed"]["ttt_order"]
    study.set_user_attr("identity", identity)                 # as an earlier version wrote it
    open_study(space, Config(), storage=url, study_name="old")
    with pytest.raises(ConfigError, match="ttt_order: 'time' → 'random'"):
        open_study(space, Config.from_sources(overrides={"ttt_order": "random"}), storage=url, study_name="old")


def _paused_tuner(url, space_path, started):
    """A tuning process whose trial is paused (Ctrl-Z, a suspended VM) between two epochs."""
    import time as _time
    from t2arec_fast import train, tune
    tune.HEARTBEAT_S, tune.GRACE_S = 1, 2

    def slow_fit(cfg, dataset=None, on_epoch=None):
        started.set()
        _time.sleep(8)                              # paused in here by the test
        on_epoch({"valid_ndcg@10": 0.1, "epoch": 1})
        return None, {"best_epoch": 1, "best_valid_ndcg@10": 0.1}
    train.fit = slow_fit
    space = load_space(space_path)
    study = open_study(space, tiny_config("sasrec", epochs=1), storage=url, study_name="k")
    study.enqueue_trial({"lr": 0.005})
    lines = []
    tune.run_study(None, space, tiny_config("sasrec", epochs=1), trials=1, study=study, on_trial=lines.append)
    assert len(lines) == 1 and "given up" in lines[0], lines


def test_a_process_paused_past_the_grace_period_gives_its_trial_up_when_it_wakes(tmp_path, monkeypatch):
    """Another process fails the paused trial and runs its retry; the paused one, when it goes on, says so and
    exits normally instead of dying on Optuna's 'Cannot tell a FAIL trial'."""
    import multiprocessing
    import os
    import signal
    import time as _time
    from optuna.trial import TrialState
    from t2arec_fast import tune
    from t2arec_fast.data import load_dataset
    space_path = write(tmp_path / "space.yaml", "lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Event()
    child = ctx.Process(target=_paused_tuner, args=(url, space_path, started))
    child.start()
    assert started.wait(120)
    _time.sleep(1.5)
    os.kill(child.pid, signal.SIGSTOP)
    try:
        monkeypatch.setattr(tune, "HEARTBEAT_S", 1)
        monkeypatch.setattr(tune, "GRACE_S", 2)
        _time.sleep(3)
        ds = load_dataset(SYNTHETIC, min_count=1, verbose=False)
        study = run_study(ds, load_space(space_path), tiny_config("sasrec", epochs=1), trials=1, storage=url,
                          study_name="k")
    finally:
        os.kill(child.pid, signal.SIGCONT)
    child.join(60)
    assert child.exitcode == 0
    assert [(t.state, t.params) for t in study.trials] == [(TrialState.FAIL, {"lr": 0.005}),
                                                           (TrialState.COMPLETE, {"lr": 0.005})]


def test_a_resume_after_the_grace_period_runs_the_killed_parameters_before_counting(tmp_path, monkeypatch):
    """A process resumed at once (within the grace period) runs new parameters; one that starts later first
    fails the dead trial and re-runs its parameters, even when the study already holds `trials` finished ones."""
    import time as _time
    from optuna.trial import TrialState
    from t2arec_fast import tune
    from t2arec_fast.data import load_dataset
    url, space_path = _kill_a_process_in_its_trial(tmp_path)
    monkeypatch.setattr(tune, "HEARTBEAT_S", 1)
    monkeypatch.setattr(tune, "GRACE_S", 2)
    ds, cfg = load_dataset(SYNTHETIC, min_count=1, verbose=False), tiny_config("sasrec", epochs=1)
    run_study(ds, load_space(space_path), cfg, trials=1, storage=url, study_name="k")      # at once
    _time.sleep(3)
    study = run_study(ds, load_space(space_path), cfg, trials=2, storage=url, study_name="k")
    assert (TrialState.COMPLETE, {"lr": 0.005}) in [(t.state, t.params) for t in study.trials]
    assert study.trials[0].state == TrialState.FAIL
