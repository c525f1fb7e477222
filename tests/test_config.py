"""Configuration: defaults < YAML file < overrides dict < --key=value; unknown keys and bad values are errors."""
from importlib.resources import files
from typing import Optional

import pytest

from t2arec_fast.config import Config, ConfigError, parse_overrides


def _yaml(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults():
    cfg = Config()
    assert (cfg.data.min_count, cfg.train.epochs, cfg.model.d, cfg.ttt.ttt) == (10, 50, 64, True)
    assert cfg.data.max_len is None


def test_precedence_defaults_yaml_overrides_command_line(tmp_path):
    path = _yaml(tmp_path, "epochs: 7\nlr: 0.01\nd: 32\nmin_count: 5\n")
    cfg = Config.from_sources(path, overrides={"lr": 0.02, "d": 48}, args=["--d=16"])
    assert cfg.train.epochs == 7          # YAML over default
    assert cfg.train.lr == 0.02           # overrides over YAML
    assert cfg.model.d == 16              # command line over everything
    assert cfg.data.min_count == 5 and cfg.train.batch_size == 256   # untouched keys keep their default


def test_yaml_may_be_grouped_by_section(tmp_path):
    cfg = Config.from_sources(_yaml(tmp_path, "data:\n  dataset: ml-100k\n  max_len: 200\nttt:\n  ttt_lr: 0.1\n"))
    assert (cfg.data.dataset, cfg.data.max_len, cfg.ttt.ttt_lr) == ("ml-100k", 200, 0.1)


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'epoch'.*'epochs'"):
        Config.from_sources(args=["--epoch=3"])
    with pytest.raises(ConfigError, match="config.yaml.*unknown config key 'learning_rate'"):
        Config.from_sources(_yaml(tmp_path, "learning_rate: 0.1\n"))


def test_command_line_strings_are_coerced_to_field_types():
    cfg = Config.from_sources(args=["--epochs=5", "--lr=1e-3", "--amp=true", "--deterministic=0",
                                    "--max-len=none", "--time_margin=0.5", "--backend=reference"])
    assert cfg.train.epochs == 5 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr == 1e-3 and cfg.train.amp is True and cfg.train.deterministic is False
    assert cfg.data.max_len is None and cfg.model.time_margin == 0.5 and cfg.model.backend == "reference"


def test_bad_values_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="epochs='five' is not a valid int"):
        Config.from_sources(args=["--epochs=five"])
    with pytest.raises(ConfigError, match="amp='maybe'"):
        Config.from_sources(args=["--amp=maybe"])
    with pytest.raises(ConfigError, match="epochs=1.5 should be int"):
        Config.from_sources(_yaml(tmp_path, "epochs: 1.5\n"))
    with pytest.raises(ConfigError, match="epochs may not be null"):
        Config.from_sources(overrides={"epochs": None})
    assert Config.from_sources(overrides={"lr": 1}).train.lr == 1.0          # an int is a fine float


def test_bad_sources(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Config.from_sources(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Config.from_sources(_yaml(tmp_path, "epochs: [1\n"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        Config.from_sources(_yaml(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="expected --key=value or --key value, got 'epochs=5'"):
        parse_overrides(["epochs=5"])
    with pytest.raises(ConfigError, match="--epochs needs a value"):
        parse_overrides(["--epochs"])


def test_key_space_value_as_argparse_users_expect():
    """Issue 13, item 11: `--epochs 2` used to fail with "expected --key=value"."""
    assert parse_overrides(["--epochs", "5", "--lr=1e-3", "--min-count", "3", "--amp", "--deterministic", "no",
                            "--ttt_lr", "-0.5"]) == {"epochs": "5", "lr": "1e-3", "min_count": "3", "amp": "true",
                                                     "deterministic": "no", "ttt_lr": "-0.5"}


def test_yaml_round_trip(tmp_path):
    cfg = Config.from_sources(args=["--epochs=3", "--ttt_updates=2"])
    cfg.save_yaml(tmp_path / "saved.yaml")
    again = Config.from_sources(tmp_path / "saved.yaml")
    assert again.to_dict() == cfg.to_dict() and again.flat()["ttt_updates"] == 2


# -- issue 13, item 12: every value with fixed choices or a range is checked when the config is built ---------------
@pytest.mark.parametrize("arg, message", [
    ("--dt_transform=logg", "dt_transform='logg' is not allowed; expected one of linear, log (did you mean 'log'?)"),
    ("--state_norm=frobenius", "state_norm='frobenius' is not allowed; expected one of fro, squared, relative"),
    ("--ttt_params=everything", "ttt_params='everything' is not allowed; expected one of all, block, ssm, norms"),
    ("--gap_transform=log", "gap_transform='log' is not allowed; expected one of hours, log1p_hours"),
    ("--readout=first", "readout='first' is not allowed; expected one of last, extrapolated, request_gap"),
    ("--split=random", "split='random' is not allowed; expected one of loo, global_time"),
    ("--model=gru4rec", "model='gru4rec' is not allowed; expected one of t2arec, backbone, sasrec"),
    ("--time_unit=hours", "time_unit='hours' is not allowed; expected one of none, auto, s, ms, us, ns"),
    ("--format=excel", "format='excel' is not allowed"),
    ("--device=gpu", "device='gpu' is not allowed; expected auto, cpu, mps, cuda or cuda:N"),
    ("--columns=user=a", "columns='user=a' is not allowed; expected user=U,item=I,timestamp=T"),
    ("--lr=-0.001", "lr=-0.001 is out of range; expected a value ≥ 0"),
    ("--dropout=1", "dropout=1.0 is out of range; expected a value in [0, 1)"),
    ("--epochs=0", "epochs=0 is out of range; expected a value ≥ 1"),
    ("--state_floor=0", "state_floor=0.0 is out of range; expected a value > 0"),
    ("--ttt_lr=nan", "ttt_lr=nan is out of range; expected a value ≥ 0"),
    ("--min_count=-1", "min_count=-1 is out of range"),
])
def test_bad_choices_and_ranges_fail_when_the_config_is_built(arg, message):
    with pytest.raises(ConfigError) as info:
        Config.from_sources(args=[arg])
    assert str(info.value) == f"command line: {message}" or message in str(info.value)


def test_yaml_and_python_assignments_are_checked_too(tmp_path):
    with pytest.raises(ConfigError, match=r"config.yaml: state_norm='l2' is not allowed"):
        Config.from_sources(_yaml(tmp_path, "model:\n  state_norm: l2\n"))
    cfg = Config()
    with pytest.raises(ConfigError, match="ttt_params='al' is not allowed"):
        cfg.ttt.ttt_params = "al"
    assert cfg.ttt.ttt_params == "all"                                     # a refused value changes nothing
    with pytest.raises(ConfigError, match="d=30 must be divisible by n_heads=4 for SASRec"):
        Config.from_sources(overrides={"model": "sasrec", "d": 30, "n_heads": 4})


def test_choices_table_names_what_the_code_implements():
    """config.CHOICES is the one place values are checked; it must list exactly what the modules implement."""
    from t2arec_fast.adapt import PARAM_GROUPS
    from t2arec_fast.config import CHOICES, LIMITS, _FIELD_TYPES
    from t2arec_fast.data.sources import FORMATS
    from t2arec_fast.data.time_units import TICKS_PER_SECOND
    from t2arec_fast.model import MODEL_CLASSES
    from t2arec_fast.model.losses import GAP_TRANSFORMS, STATE_NORMS
    from t2arec_fast.model.readout import READOUTS
    from t2arec_fast.ops import BACKENDS
    assert CHOICES["gap_transform"] == GAP_TRANSFORMS and CHOICES["state_norm"] == STATE_NORMS
    assert CHOICES["readout"] == READOUTS and CHOICES["backend"] == BACKENDS
    assert set(CHOICES["ttt_params"]) == set(PARAM_GROUPS) and set(CHOICES["model"]) == set(MODEL_CLASSES)
    assert CHOICES["format"] == (None, *FORMATS, "synthetic")
    assert CHOICES["time_unit"] == (None, "auto", *TICKS_PER_SECOND)
    from t2arec_fast.data.batches import TRAIN_SAMPLES
    from t2arec_fast.data.ties import TIE_ORDERS
    from t2arec_fast.model.sasrec import POSITION_ORIGINS
    assert CHOICES["position_origin"] == POSITION_ORIGINS and CHOICES["tie_order"] == TIE_ORDERS
    assert CHOICES["train_samples"] == TRAIN_SAMPLES
    from t2arec_fast.evaluate import EPISODE_ORDERS
    assert CHOICES["ttt_order"] == EPISODE_ORDERS
    assert set(CHOICES) | set(LIMITS) <= set(_FIELD_TYPES)                 # a renamed key cannot be left behind
    numeric = {k for k, t in _FIELD_TYPES.items() if t in (int, float, Optional[int], Optional[float])}
    assert numeric - set(LIMITS) == {"seed", "time_margin"} - set(LIMITS)  # every other number has a range


def test_the_removed_time_aware_dt_option_loads_when_off_and_is_refused_when_on(tmp_path):
    """time_aware_dt was removed (docs/results.md): checkpoints and configs saved with it off still load."""
    import json
    import torch
    from t2arec_fast.model import T2ARec
    torch.manual_seed(0)
    model = T2ARec(20, d=8, d_state=4, readout="request_gap")
    model.save(tmp_path / "m")
    meta_path = tmp_path / "m" / "config.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["time_aware_dt"] = False                  # as saved before the removal
    meta_path.write_text(json.dumps(meta))
    assert T2ARec.load(tmp_path / "m").readout.name == "request_gap"
    assert Config.from_sources(overrides={"model": {"time_aware_dt": False}}).model.readout == "last"
    meta["config"]["time_aware_dt"] = True
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="time_aware_dt.*no longer an option.*no gain"):
        T2ARec.load(tmp_path / "m")
    with pytest.raises(ConfigError, match="no longer an option"):
        Config.from_sources(args=["--time_aware_dt=true"])


def test_renamed_keys_load_under_their_new_names_with_a_warning(tmp_path):
    """Issue 15 item 7: configs written before the renames (YAML, --key=value, saved results) still load."""
    old = tmp_path / "old.yaml"
    old.write_text("model:\n  step_transform: log\n  n_blocks: 2\nttt:\n  ttt_steps: 3\n")
    with pytest.warns(FutureWarning, match="'step_transform' is now 'dt_transform'"):
        cfg = Config.from_sources(old)
    assert (cfg.model.dt_transform, cfg.model.n_layers, cfg.ttt.ttt_updates) == ("log", 2, 3)
    with pytest.warns(FutureWarning, match="'ttt_steps' is now 'ttt_updates'"):
        assert Config.from_sources(args=["--ttt_steps=4"]).ttt.ttt_updates == 4


@pytest.mark.parametrize("model, n_blocks, n_layers, want", [("t2arec", 2, 2, 2), ("backbone", 1, 2, 1),
                                                              ("sasrec", 1, 3, 3)])
def test_saved_configs_with_both_layer_keys_keep_the_one_their_model_used(model, n_blocks, n_layers, want):
    """Before the rename every saved config held T2ARec's n_blocks AND SASRec's n_layers."""
    with pytest.warns(FutureWarning):
        cfg = Config.from_sources(overrides={"model": model, "n_blocks": n_blocks, "n_layers": n_layers})
    assert cfg.model.n_layers == want


def test_an_old_and_a_new_key_that_disagree_are_refused():
    with pytest.warns(FutureWarning), pytest.raises(ConfigError, match="both 'ttt_steps'.*'ttt_updates'"):
        Config.from_sources(overrides={"ttt_steps": 2, "ttt_updates": 3})


SHIPPED = sorted(p.name for p in files("t2arec_fast").joinpath("configs").iterdir() if p.name.endswith(".yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_loads_for_every_model(name):
    """A recipe a user is pointed to must load (no misspelt key, no value out of range) under each model."""
    path = files("t2arec_fast").joinpath("configs", name)
    for model in ("sasrec", "backbone", "t2arec"):
        cfg = Config.from_sources(path, overrides={"model": model})
        assert cfg.model.model == model
