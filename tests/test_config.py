"""Configuration: defaults < YAML file < overrides dict < --key=value; unknown keys and bad values are errors."""
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
    with pytest.raises(ConfigError, match="expected --key=value"):
        parse_overrides(["--epochs", "5"])


def test_yaml_round_trip(tmp_path):
    cfg = Config.from_sources(args=["--epochs=3", "--ttt_steps=2"])
    cfg.save_yaml(tmp_path / "saved.yaml")
    again = Config.from_sources(tmp_path / "saved.yaml")
    assert again.to_dict() == cfg.to_dict() and again.flat()["ttt_steps"] == 2
