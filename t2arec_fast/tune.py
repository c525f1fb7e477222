"""Hyperparameter search on validation data with Optuna (`t2arec tune`; docs/tuning.md).

    space = load_space("space.yaml")                      # {config key: SpaceParam}
    study = run_study(dataset, space, base_cfg, trials=20, storage="sqlite:///study.db")
    summary = study_summary(study, base_cfg)              # best params, the full best config, every trial

A search-space file maps config keys (the keys of `t2arec train --key=value`) to what Optuna may try:

    lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    dropout: {type: float, low: 0.1, high: 0.5, step: 0.1}
    n_layers: {type: int, low: 1, high: 3}
    position_origin: [start, end]                         # a list: one of these values
    d: {type: categorical, choices: [32, 64, 128]}

Every trial trains with early stopping on validation NDCG@10 and is scored by its best validation NDCG@10; test
data is never evaluated. Each epoch's validation score is reported to Optuna, and a MedianPruner stops a trial whose
score after `prune_after` epochs is below the median of earlier trials at the same epoch. Studies live in their
storage (an SQLAlchemy URL such as sqlite:///study.db): another process — or another session — that names the same
storage and study continues it, up to `trials` finished (complete or pruned) trials in all.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

from .config import Config, ConfigError, load_yaml

METRIC = "valid ndcg@10"
# keys a search space may not contain: what the study is about, or what only changes how it is shown
NOT_SEARCHABLE = ("dataset", "progress", "device")
# settings that may differ between the processes of one study without changing what the trials measure
PER_PROCESS = ("progress", "device", "eval_batch_size")
# A process running a trial writes a heartbeat to the storage this often (s); a running trial whose heartbeat is
# older than the grace period belongs to a process that died: the next process marks it failed and runs its
# parameters again, up to RETRIES times (Optuna's heartbeat and RetryHeartbeatStaleTrialCallback).
HEARTBEAT_S = 60
GRACE_S = 300
RETRIES = 2


@dataclass(frozen=True)
class SpaceParam:
    """One dimension of a search space: kind "float" | "int" (low..high, optionally log-spaced or stepped) or
    "categorical" (choices)."""
    name: str
    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Optional[tuple] = None

    def suggest(self, trial):
        """The value Optuna proposes for this trial."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def to_dict(self) -> dict:
        """The search-space file's mapping for this dimension (what a study stores to recognise its space)."""
        if self.kind == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out = {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}
        return out | ({"step": self.step} if self.step is not None else {})


def load_space(path: Union[str, Path]) -> dict:
    """Read and check a search-space YAML file → {config key: SpaceParam}.

    Raises:
        ConfigError: the file is missing or not YAML, a key is not a config key (or may not be searched), an entry
            is malformed, or one of its values is not valid for its key (every bound and choice is checked against
            the config's types before any training).
    """
    raw = load_yaml(path)
    if not raw:
        raise ConfigError(f"{path}: the search space is empty")
    space = {}
    for name, spec in raw.items():
        where = f"{path}: {name}"
        if name in NOT_SEARCHABLE:
            raise ConfigError(f"{where}: {name!r} cannot be searched (it is fixed for a study)")
        space[name] = _parse_param(name, spec, where)
        for value in _extremes(space[name]):
            Config().update({name: value}, source=str(path))     # unknown key or wrong type → ConfigError
    return space


def _parse_param(name: str, spec, where: str) -> SpaceParam:
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a list of choices or a mapping with 'type', got {spec!r}")
    kind = spec.get("type")
    allowed = {"categorical": {"type", "choices"}, "float": {"type", "low", "high", "log", "step"},
               "int": {"type", "low", "high", "log", "step"}}
    if kind not in allowed:
        raise ConfigError(f"{where}: type must be one of float, int, categorical; got {kind!r}")
    unknown = set(spec) - allowed[kind]
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)} for type {kind}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list")
        return SpaceParam(name, kind, choices=tuple(choices))
    return _parse_range(name, kind, spec, where)


def _parse_range(name: str, kind: str, spec: dict, where: str) -> SpaceParam:
    number = int if kind == "int" else (int, float)
    low, high, step, log = spec.get("low"), spec.get("high"), spec.get("step"), spec.get("log", False)
    for label, value in (("low", low), ("high", high)) + ((("step", step),) if step is not None else ()):
        if not isinstance(value, number) or isinstance(value, bool) or not math.isfinite(value):
            raise ConfigError(f"{where}: {label} must be a finite {'integer' if kind == 'int' else 'number'}, "
                              f"got {value!r}")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if low > high:
        raise ConfigError(f"{where}: low {low} is above high {high}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log-spaced range needs low > 0, got {low}")
    if step is not None and (step <= 0 or log):
        raise ConfigError(f"{where}: step must be > 0 and cannot be combined with log")
    cast = int if kind == "int" else float
    return SpaceParam(name, kind, cast(low), cast(high), log, None if step is None else cast(step))


def _extremes(param: SpaceParam) -> tuple:
    return param.choices if param.kind == "categorical" else (param.low, param.high)


# -- the study ---------------------------------------------------------------------------------------------------------
def open_study(space: dict, base_cfg: Config, storage: Optional[str] = None, study_name: str = "t2arec",
               dataset_name: str = "", prune_after: int = 3):
    """Create the study in `storage`, or load it when it exists there.

    A trial whose process was killed stops sending heartbeats; once they are GRACE_S old the next process to start
    a trial marks it failed and runs the same parameters again first (up to RETRIES times). Source: docs/tuning.md.

    Raises:
        ConfigError: the stored study was created for another data set, search space or fixed settings (so that
            its trials would not be comparable).
    """
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage is not None:
        storage = _rdb_storage(storage)
    identity = _as_stored({"dataset": dataset_name, "space": {k: p.to_dict() for k, p in space.items()},
                           "fixed": _fixed_settings(base_cfg, space)})
    # a trial is compared with the median of earlier trials at the same epoch, once 2 trials have finished
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=prune_after)
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize", pruner=pruner,
                                load_if_exists=True)
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_user_attr("identity", identity)
    elif (stored := _with_new_keys(stored, identity["fixed"])) != identity:
        raise ConfigError(f"study {study_name!r} in {storage.url if storage else 'memory'} was created with other "
                          f"settings ({_differences(stored, identity)}): resume it with the same settings, or pass "
                          "another --study-name")
    return study


# What another process's creation of the same new database looks like from here (SQLite, PostgreSQL, MySQL).
_CREATION_RACE = ("already exists", "unique constraint", "duplicate", "database is locked")


def _rdb_storage(url: str, attempts: int = 8):
    """optuna's RDBStorage(url), retried while another process is creating the same new database.

    Optuna creates its tables on first use; processes started together on a new storage race to create them and
    all but one fail ("table studies already exists", optuna/optuna#1092). Waiting and opening again finds the
    tables the winner made.

    Raises:
        ConfigError: not a database URL, or one that cannot be opened (a missing folder, no permission, a server
            that does not answer), naming the URL.
    """
    import sqlalchemy.exc
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    for attempt in range(attempts):
        try:
            with _heartbeats_allowed():
                return RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                  heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=RETRIES))
        except sqlalchemy.exc.DBAPIError as exc:
            if attempt == attempts - 1 or not any(s in str(exc).lower() for s in _CREATION_RACE):
                raise ConfigError(f"storage {url!r}: cannot open the study's database "
                                  f"({str(exc.orig) or type(exc.orig).__name__})") from None
            time.sleep(0.2 * (attempt + 1))
        except sqlalchemy.exc.ArgumentError as exc:
            raise ConfigError(f"storage {url!r}: not a database URL ({exc}; e.g. sqlite:///study.db)") from None


def _as_stored(value):
    """`value` as the storage gives it back (JSON: tuples become lists), so that a stored identity compares equal."""
    if isinstance(value, dict):
        return {str(k): _as_stored(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_stored(v) for v in value]
    return value


def _with_new_keys(stored: dict, fixed: dict) -> dict:
    """A stored identity with the settings added to Config since it was written, at their defaults: a study
    written by an earlier version resumes as long as nothing it fixed has changed."""
    defaults = _as_stored(Config().flat())
    added = {k: defaults[k] for k in fixed if k not in stored.get("fixed", {}) and k in defaults}
    return {**stored, "fixed": dict(sorted({**stored.get("fixed", {}), **added}.items()))}


def _differences(stored: dict, current: dict) -> str:
    """'dataset: a → b; epochs: 3 → 4' — what differs between a stored study's identity and this invocation's."""
    out = [f"{k}: {stored.get(k)!r} → {current[k]!r}" for k in ("dataset",) if stored.get(k) != current[k]]
    if stored.get("space") != current["space"]:
        out.append(f"search space: {sorted(stored.get('space', {}))} → {sorted(current['space'])}"
                   if set(stored.get("space", {})) != set(current["space"]) else "search space: other ranges")
    old, new = stored.get("fixed", {}), current["fixed"]
    out += [f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return "; ".join(out)


def _fixed_settings(cfg: Config, space: dict) -> dict:
    flat = cfg.flat()
    return {k: v for k, v in sorted(flat.items()) if k not in space and k not in PER_PROCESS}


def run_study(dataset, space: dict, base_cfg: Config, trials: int, storage: Optional[str] = None,
              study_name: str = "t2arec", prune_after: int = 3, seed: int = 0, dataset_name: str = "",
              on_trial: Optional[Callable[[str], None]] = None, study=None):
    """Run trials until the study holds `trials` finished (complete or pruned) ones; → the optuna Study.

    dataset: a SequenceDataset (loaded once, shared by the trials); base_cfg: every setting that is not searched
    (its `seed` trains every trial, so that trials differ only in their parameters); on_trial: receives one
    progress line per finished trial; study: one already opened by `open_study` (e.g. with enqueued trials) instead
    of opening it here. A trial whose loss becomes non-finite is recorded as failed (its user attribute "error"
    says why) and counts against this call's budget, not against `trials`: a later call runs one in its place.
    Source: docs/tuning.md.

    Raises:
        ConfigError: the stored study was created with other settings (`open_study`).
    """
    from optuna.samplers import TPESampler
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState
    study = study or open_study(space, base_cfg, storage, study_name, dataset_name, prune_after)
    _fail_stale_trials(study)            # before counting: a dead process's trial is re-queued, not skipped
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    budget = trials - len(study.get_trials(deepcopy=False, states=finished))
    if budget <= 0:
        return study
    # a resumed study must not replay the first process's random draws: the sampler's seed moves on with it
    study.sampler = TPESampler(seed=seed + len(study.trials), n_startup_trials=min(5, trials))
    objective = _objective(dataset, space, base_cfg)
    callbacks = [MaxTrialsCallback(trials, states=finished)]
    if on_trial is not None:
        callbacks.append(lambda s, t: on_trial(trial_line(s, t, trials)))
    while budget > 0 and len(study.get_trials(deepcopy=False, states=finished)) < trials:
        budget -= 1
        try:
            study.optimize(objective, n_trials=1, catch=(FloatingPointError,), callbacks=callbacks)
        except ValueError:               # Optuna could not record the trial: was it failed by another process?
            taken = _taken_over(study, objective)
            if taken is None:
                raise
            if on_trial is not None:
                on_trial(taken)
    return study


def _fail_stale_trials(study) -> None:
    import optuna
    with _heartbeats_allowed():
        optuna.storages.fail_stale_trials(study)


@contextlib.contextmanager
def _heartbeats_allowed():
    """Optuna's heartbeats are marked "experimental" (stable since 2.x): no warning for using them."""
    import optuna
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _taken_over(study, objective) -> Optional[str]:
    """The progress line for this process's last trial when another process failed it meanwhile (this one was
    paused past the grace period: its heartbeats stopped and the trial was re-queued there); None when the error
    is something else (the objective raised it itself)."""
    from optuna.trial import TrialState
    trial = objective.current
    if trial is None or objective.outcome not in ("returned", "taken over"):
        return None
    if study._storage.get_trial(trial._trial_id).state != TrialState.FAIL:
        return None
    return (f"trial {trial.number}: given up — failed by another process while this one was paused for over "
            f"{GRACE_S} s; its parameters run again as a retry")


def _objective(dataset, space: dict, base_cfg: Config):
    import optuna
    from .train import fit

    def objective(trial) -> float:
        objective.current, objective.outcome = trial, "running"
        params = {name: p.suggest(trial) for name, p in space.items()}
        cfg = copy.deepcopy(base_cfg).update(params, source=f"trial {trial.number}")
        t0 = time.perf_counter()

        def report(record: dict) -> None:
            # raises UpdateFinishedTrialError once another process has failed this trial (see _taken_over)
            trial.report(record["valid_ndcg@10"], record["epoch"])
            trial.set_user_attr("epochs_run", record["epoch"])
            if trial.should_prune():
                trial.set_user_attr("seconds", time.perf_counter() - t0)
                raise optuna.TrialPruned(f"pruned at epoch {record['epoch']}")
        try:
            _, history = fit(cfg, dataset=dataset, on_epoch=report)
            trial.set_user_attr("best_epoch", history["best_epoch"])
            trial.set_user_attr("seconds", time.perf_counter() - t0)
        except FloatingPointError as exc:        # run_study's catch marks the trial failed; keep the reason
            trial.set_user_attr("error", str(exc))
            raise
        except optuna.exceptions.UpdateFinishedTrialError:
            objective.outcome = "taken over"
            raise
        best = history["best_valid_ndcg@10"]
        objective.outcome = "returned"
        return float(best) if best is not None else 0.0
    objective.current = objective.outcome = None
    return objective


def trial_line(study, trial, trials: int) -> str:
    """One line per finished trial: state (with the reason of a failed one), score, epochs, time (seconds),
    parameters, and the study's best so far."""
    from optuna.trial import TrialState
    params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    attrs = trial.user_attrs
    seconds = f"{attrs['seconds']:.0f} s" if "seconds" in attrs else ""
    if trial.state == TrialState.COMPLETE:
        state = f"{METRIC} {trial.value:.4f} (best epoch {attrs.get('best_epoch')}), {seconds}"
    elif trial.state == TrialState.PRUNED:
        last = trial.intermediate_values.get(attrs.get("epochs_run"))
        state = f"pruned after epoch {attrs.get('epochs_run')} ({METRIC} {last:.4f}), {seconds}" if last is not None \
            else "pruned"
    else:
        state = f"{trial.state.name.lower()}" + (f" ({attrs['error']})" if "error" in attrs else "")
    try:
        best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
    except ValueError:                                   # no complete trial yet
        best = "no complete trial yet"
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))
    return f"trial {trial.number} [{done}/{trials}]: {state}; {params}; {best}"


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def study_summary(study, base_cfg: Config) -> dict:
    """JSON-able summary: counts by state, the best trial (None if none completed) with the full configuration it
    implies (base settings + its parameters), and every trial's parameters, score and epochs."""
    from optuna.trial import TrialState
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        top = study.best_trial
        cfg = copy.deepcopy(base_cfg).update(top.params, source="best trial")
        best = {"trial": top.number, "value": top.value, "params": top.params,
                "best_epoch": top.user_attrs.get("best_epoch"), "config": cfg.to_dict()}
    return {"study": study.study_name, "metric": METRIC, "direction": "maximize", "trials": counts, "best": best,
            "all_trials": [{"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
                            "epochs_run": t.user_attrs.get("epochs_run"), "best_epoch": t.user_attrs.get("best_epoch"),
                            "valid_by_epoch": {str(k): v for k, v in sorted(t.intermediate_values.items())}}
                           for t in trials]}
