"""Configuration: dataclasses per concern, loadable from YAML, overridable with `--key=value`.

Precedence (as RecBole users expect): command line > YAML file > defaults. Keys are flat and unique across sections
(`epochs`, `d_state`, `ttt_lr`, ...); a YAML file may be flat or grouped under `data:`, `model:`, `train:`, `ttt:`.
Unknown keys are errors, with the closest known key suggested.

Defaults are the configuration chosen on validation data (docs/results.md); `t2arec_fast/configs/paper_literal.yaml`
restores the paper's choices where ours differ.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A configuration key or value that cannot be used."""


@dataclass
class DataConfig:
    dataset: str = "synthetic"
    format: Optional[str] = None          # reader override; None = auto-detect
    columns: Optional[str] = None         # "user=U,item=I,timestamp=T" for files with other column names
    time_unit: Optional[str] = None       # unit of numeric timestamps (s, ms, us, ns); None = detect (docs/data.md)
    min_count: int = 10                   # iterative k-core on users and items
    max_len: Optional[int] = None         # None = 200 for MovieLens-like data, 50 otherwise
    split: str = "loo"                    # "loo" (leave-one-out by time) | "global_time"
    n_segments: int = 4                   # test users cut into equal segments by test timestamp
    mask_history: bool = False            # evaluation: mask already-seen items (RecBole's default is not to)


@dataclass
class ModelConfig:
    model: str = "t2arec"                 # "t2arec" | "backbone" | "sasrec"
    d: int = 64
    d_state: int = 32
    n_blocks: int = 1
    conv_kernel: int = 4
    dropout: float = 0.2
    n_heads: int = 2                      # sasrec only
    n_layers: int = 2                     # sasrec only: Transformer blocks (RecBole's n_layers)
    backend: str = "auto"                 # scan backend: "auto" | "triton" | "reference"
    # L_time (model-spec §3)
    gap_transform: str = "log1p_hours"    # "hours" (paper, linear) | "log1p_hours" (chosen on validation)
    pair_block: int = 16                  # b: pairs only inside blocks of b consecutive positions
    step_transform: str = "linear"        # compare Δ ("linear", paper) or log Δ ("log": scale-free ordering)
    count_tied_pairs: bool = True         # pairs with equal gaps add a constant 1 (no gradient)
    readout: str = "last"                 # score o_n ("last", paper) or one step past it at the request (beyond
                                          # the paper): "extrapolated" feeds the step o_n, "request_gap" o_n + an
                                          # embedding of the request gap T_{n+1} (see docs/model.md)
    time_margin: Optional[float] = None   # λ; None = median |g(T_i) − g(T_j)| over training pairs
    # L_state (model-spec §4)
    state_floor: float = 1e-3             # δ in max(Δ̂, δ)²
    state_norm: str = "relative"          # "fro" (paper) | "squared" | "relative" (‖·‖ / ‖h_n‖; chosen)
    aux_stop_embedding: bool = True       # stop auxiliary-loss gradients at the embedding table (chosen)


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 256
    eval_batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    mu_time: float = 0.1                  # μ1 (ignored by the backbone and SASRec)
    mu_state: float = 0.1                 # μ2
    aux_warmup_epochs: int = 3            # auxiliary losses off for the first N epochs
    patience: int = 10
    seed: int = 0
    deterministic: bool = False
    amp: bool = False                     # bf16 autocast on CUDA
    device: str = "auto"
    progress: bool = True


@dataclass
class TTTConfig:
    ttt: bool = True                      # run the test-time step in evaluation
    ttt_lr: float = 0.005                 # α
    ttt_steps: int = 1                    # M
    ttt_mu_time: float = 0.1              # μ1'
    ttt_mu_state: float = 0.1             # μ2'
    ttt_params: str = "all"               # "all" | "block" | "ssm" (A, dt_bias, in_proj) | "norms"
    ttt_batch_size: int = 256             # users per test batch (the adaptation depends on it)
    ttt_gate: float = 0.0                 # adapt only users whose request gap T_{n+1} ≥ gate × their median gap
                                          # (0 = everyone, the paper); an extension, see docs/results.md


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "ttt": TTTConfig}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ttt: TTTConfig = field(default_factory=TTTConfig)

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_sources(cls, yaml_path: Union[str, Path, None] = None, overrides: Optional[dict] = None,
                     args: Optional[list] = None) -> "Config":
        """Defaults < YAML file < `overrides` dict < `--key=value` strings in `args`."""
        cfg = cls()
        if yaml_path is not None:
            cfg.update(load_yaml(yaml_path), source=str(yaml_path))
        if overrides:
            cfg.update(overrides, source="overrides")
        if args:
            cfg.update(parse_overrides(args), source="command line")
        return cfg

    def update(self, values: dict, source: str = "config") -> "Config":
        for key, value in without_removed_options(_flatten(values, source), source).items():
            section = _SECTION_OF.get(key)
            if section is None:
                hint = difflib.get_close_matches(key, list(_SECTION_OF), n=1)
                raise ConfigError(f"{source}: unknown config key {key!r}"
                                  + (f" (did you mean {hint[0]!r}?)" if hint else ""))
            target = getattr(self, section)
            setattr(target, key, _coerce(key, value, _FIELD_TYPES[key], source))
        return self

    # -- views --------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def flat(self) -> dict:
        return {k: v for section in self.to_dict().values() for k, v in section.items()}

    def save_yaml(self, path: Union[str, Path]) -> None:
        import yaml
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def __str__(self) -> str:
        from .json_io import dumps
        return dumps(self.to_dict())


# Options that were removed, with the value that meant "off": a saved config or checkpoint holding that value still
# loads (the option is dropped); any other value is refused with the reason.
REMOVED_OPTIONS = {
    "time_aware_dt": (False, "Δ seeing the gap since the previous event measured no gain on any data set "
                             "(docs/results.md, 'Letting Δ see the time gap'); it was removed — a model trained "
                             "with it needs the package from before the removal (`git log -S time_aware_dt`)"),
}


def without_removed_options(values: dict, source: str) -> dict:
    """`values` without the removed options that hold their "off" value.

    Raises:
        ConfigError: a removed option is switched on.
    """
    kept = dict(values)
    for key, (off, why) in REMOVED_OPTIONS.items():
        if key in kept:
            value = kept.pop(key)
            if value != off and str(value).strip().lower() not in (str(off).lower(), "0", "no", "off"):
                raise ConfigError(f"{source}: {key}={value!r} is no longer an option: {why}")
    return kept


_SECTION_OF = {f.name: name for name, cls in SECTIONS.items() for f in fields(cls)}
_FIELD_TYPES = {f: get_type_hints(cls)[f] for cls in SECTIONS.values() for f in get_type_hints(cls)}


def load_yaml(path: Union[str, Path]) -> dict:
    import yaml
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_overrides(args: list) -> dict:
    """['--epochs=5', '--lr=1e-3'] → {'epochs': '5', 'lr': '1e-3'} (strings; coerced by type later)."""
    out = {}
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"command line: expected --key=value, got {arg!r}")
        key, value = arg[2:].split("=", 1)
        out[key.replace("-", "_")] = value
    return out


def _flatten(values: dict, source: str) -> dict:
    flat = {}
    for key, value in values.items():
        if key in SECTIONS and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def _coerce(key: str, value: Any, typ, source: str):
    optional = get_origin(typ) is Union and type(None) in get_args(typ)
    base = next((a for a in get_args(typ) if a is not type(None)), typ) if optional else typ
    if isinstance(value, str):
        text = value.strip()
        if optional and text.lower() in ("none", "null", ""):
            return None
        try:
            if base is bool:
                if text.lower() in ("1", "true", "yes", "on"):
                    return True
                if text.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if base is int:
                return int(text)
            if base is float:
                return float(text)
        except ValueError:
            raise ConfigError(f"{source}: {key}={value!r} is not a valid {base.__name__}") from None
        return text
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: {key} may not be null")
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: {key}={value!r} should be {base.__name__}, got {type(value).__name__}")
    return value
