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
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A configuration key or value that cannot be used."""


class _Checked:
    """Every assignment to a config field is checked against CHOICES / LIMITS (below), so a bad value fails when
    the config is built (or changed in Python), naming the allowed values, not epochs later."""

    def __setattr__(self, key, value):
        check_value(key, value)
        super().__setattr__(key, value)


@dataclass
class DataConfig(_Checked):
    dataset: str = "synthetic"
    format: Optional[str] = None          # reader override; None = auto-detect
    columns: Optional[str] = None         # "user=U,item=I,timestamp=T" for files with other column names
    time_unit: Optional[str] = None       # unit of numeric timestamps (s, ms, us, ns); None = detect (docs/data.md)
    min_count: int = 10                   # iterative k-core on users and items
    min_rating: Optional[float] = None    # keep events rated ≥ this before the k-core; None = all (docs/data.md)
    max_len: Optional[int] = None         # None = 200 for MovieLens-like data, 50 otherwise
    split: str = "loo"                    # "loo" (leave-one-out by time) | "global_time"
    n_segments: int = 4                   # test users cut into equal segments by test timestamp
    tie_order: str = "file"               # events at the same time: "file" | "item" | "reversed" | "random"
    mask_history: bool = False            # evaluation: mask already-seen items (RecBole's default is not to)


@dataclass
class ModelConfig(_Checked):
    model: str = "t2arec"                 # "t2arec" | "backbone" | "sasrec"
    d: int = 64
    d_state: int = 32
    conv_kernel: int = 4
    expand: int = 1                       # T2A-Mamba block width d_inner = expand·d (paper 1; Mamba4Rec 2)
    dropout: float = 0.2
    n_heads: int = 2                      # sasrec only
    n_layers: Optional[int] = None        # layers: T2A-Mamba blocks (None = 1, the paper) or, for sasrec,
                                          # Transformer blocks (None = 2, RecBole's)
    position_origin: str = "end"          # sasrec only: position 0 = first input ("start", RecBole) or the most
                                          # recent input at max_len−1 ("end", original SASRec); docs/model.md
    backend: str = "auto"                 # scan backend: "auto" | "triton" | "reference"
    ce_impl: str = "auto"                 # training CE over all items: "auto" | "plain" | "chunked" | "liger"
                                          # (chunked/liger never hold batch × positions × items logits)
    # L_time (docs/model.md §3)
    gap_transform: str = "log1p_hours"    # "hours" (paper, linear) | "log1p_hours" (chosen on validation)
    pair_block: int = 16                  # b: pairs only inside blocks of b consecutive positions
    dt_transform: str = "linear"          # compare Δ ("linear", paper) or log Δ ("log": scale-free ordering)
    count_tied_pairs: bool = True         # pairs with equal gaps add a constant 1 (no gradient)
    readout: str = "last"                 # score o_n ("last", paper) or one step past it at the request (beyond
                                          # the paper): "extrapolated" feeds the step o_n, "request_gap" o_n + an
                                          # embedding of the request gap T_{n+1} (see docs/model.md)
    time_margin: Optional[float] = None   # λ; None = median |g(T_i) − g(T_j)| over training pairs
    # L_state (docs/model.md §4)
    state_floor: float = 1e-3             # δ in max(Δ̂, δ)²
    state_norm: str = "relative"          # "fro" (paper) | "squared" | "relative" (‖·‖ / ‖h_n‖; chosen)
    aux_stop_embedding: bool = True       # stop auxiliary-loss gradients at the embedding table (chosen)


@dataclass
class TrainConfig(_Checked):
    epochs: int = 50
    batch_size: int = 256
    eval_batch_size: int = 1024
    lr: float = 1e-3
    optimizer: str = "adam"               # "adam": weight_decay is an L2 term in the gradient (torch Adam) |
                                          # "adamw": decoupled decay of matrices only (train.make_optimizer)
    weight_decay: float = 0.0
    lr_schedule: str = "constant"         # "constant" | "cosine": lr · ½(1 + cos(π e / epochs)) in epoch e
    warmup_epochs: int = 0                # linear warm-up epochs before either (train.lr_at)
    mu_time: float = 0.1                  # μ1 (ignored by the backbone and SASRec)
    mu_state: float = 0.1                 # μ2
    aux_warmup_epochs: int = 3            # auxiliary losses off for the first N epochs
    cl_weight: float = 0.0                # weight of the contrastive loss L_cl (0 = off; model/contrastive.py)
    cl_temperature: float = 1.0           # τ of its similarity (dot product / τ)
    cl_crop: float = 0.6                  # views: crop keeps this fraction of a row's events (1 = no crop),
    cl_drop: float = 0.3                  #   drop removes each with this probability (0 = no drop),
    cl_reorder: float = 0.3               #   reorder shuffles the items of a window this fraction long (0 = none)
    patience: int = 10
    length_buckets: bool = True           # batch training samples of similar length together (less padding)
    train_samples: str = "windows"        # "windows": one per user, a target at every position | "prefixes":
                                          # every target its own sample (RecBole); data.train_batches
    rec_weighting: str = "target"         # L_rec of a step: every target the same weight ("target", chosen on
                                          # validation) or the mean over the batch's targets ("batch", before
                                          # Nov 30 2026); train.target_weight, docs/results.md (issue 14)
    seed: int = 0
    deterministic: bool = False
    amp: bool = False                     # bf16 autocast on CUDA
    compile: bool = False                 # torch.compile the training step and evaluation scoring (compiled.py)
    compile_backend: str = "inductor"     # "inductor" | "aot_eager" (trace only) | "eager"
    device: str = "auto"
    progress: bool = True


@dataclass
class TTTConfig(_Checked):
    ttt: bool = True                      # run the test-time step in evaluation
    ttt_lr: float = 0.005                 # α (ttt_rule=sgd) or the relative size ρ (ttt_rule=relative)
    ttt_rule: str = "sgd"                 # "sgd": θ − α∇ (the paper) | "relative": θ − ρ‖θ‖ ∇/‖∇‖ per tensor
    ttt_updates: int = 1                  # M: gradient updates per test-time episode
    ttt_mu_time: float = 0.1              # μ1'
    ttt_mu_state: float = 0.1             # μ2'
    ttt_params: str = "all"               # "all" | "block" | "ssm" (A, dt_bias, in_proj) | "norms"
    ttt_batch_size: int = 256             # users per test batch (the adaptation depends on it)
    ttt_order: str = "time"               # how evaluation groups users into episodes: "time" (by request time,
                                          # adapting on events before the episode's first request: what a
                                          # server can do) | "random" | "stored" (the data's user order; it
                                          # groups similar users in some files, docs/results.md)
    ttt_gate: float = 0.0                 # adapt only users whose request gap T_{n+1} ≥ gate × their median gap
                                          # (0 = everyone, the paper); an extension, see docs/results.md
    ttt_compile: bool = False             # torch.compile the per-batch step (functional gradient) and its scoring
    ttt_compile_backend: str = "inductor" # "inductor" | "aot_eager" (trace only) | "eager"


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
        return cfg.check()

    def update(self, values: dict, source: str = "config") -> "Config":
        """Set keys (flat or grouped by section) from strings or typed values.

        Raises:
            ConfigError: an unknown key (with the closest known one), a value of the wrong type, outside its
                range or not among its choices (listing them); `source` names where the value came from.
        """
        for key, value in upgrade_options(_flatten(values, source), source).items():
            section = _SECTION_OF.get(key)
            if section is None:
                hint = difflib.get_close_matches(key, list(_SECTION_OF), n=1)
                raise ConfigError(f"{source}: unknown config key {key!r}"
                                  + (f" (did you mean {hint[0]!r}?)" if hint else ""))
            target = getattr(self, section)
            try:
                setattr(target, key, _coerce(key, value, _FIELD_TYPES[key], source))
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from None
        return self

    def check(self) -> "Config":
        """Rules that involve two keys (single values are checked on assignment).

        Raises:
            ConfigError: SASRec with d not divisible by n_heads; a contrastive loss (cl_weight > 0) with every
                augmentation off (cl_crop = 1, cl_drop = 0, cl_reorder = 0: both views would be the input).
        """
        if self.model.model == "sasrec" and self.model.d % self.model.n_heads:
            raise ConfigError(f"d={self.model.d} must be divisible by n_heads={self.model.n_heads} for SASRec")
        t = self.train
        if t.cl_weight > 0 and t.cl_crop == 1 and t.cl_drop == 0 and t.cl_reorder == 0:
            raise ConfigError(f"cl_weight={t.cl_weight:g} needs an augmentation: cl_crop < 1, cl_drop > 0 or "
                              "cl_reorder > 0 (all are off)")
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


# Options that were renamed (issue 15: one name per meaning, docs/model.md's glossary): old key → new key. A saved
# config, checkpoint or YAML file with an old key still loads, with a FutureWarning naming the new key.
RENAMED_OPTIONS = {
    "step_transform": "dt_transform",     # Δ is `dt`, as in mamba; "step" is one recurrent update
    "ttt_steps": "ttt_updates",           # M gradient updates of a test-time episode
    "n_blocks": "n_layers",               # one key for the number of layers of every model
}


def upgrade_options(values: dict, source: str) -> dict:
    """`values` with renamed keys under their new names (RENAMED_OPTIONS, with a FutureWarning) and without the
    removed options that hold their "off" value (REMOVED_OPTIONS).

    A config saved before `n_blocks` became `n_layers` holds both (SASRec's `n_layers` beside T2ARec's `n_blocks`):
    the one its model used is kept.

    Raises:
        ConfigError: a removed option is switched on, or an old and a new key both given for another model.
    """
    kept = _renamed(dict(values), source)
    for key, (off, why) in REMOVED_OPTIONS.items():
        if key in kept:
            value = kept.pop(key)
            if value != off and str(value).strip().lower() not in (str(off).lower(), "0", "no", "off"):
                raise ConfigError(f"{source}: {key}={value!r} is no longer an option: {why}")
    return kept


def _renamed(values: dict, source: str) -> dict:
    import warnings
    for old, new in RENAMED_OPTIONS.items():
        if old not in values:
            continue
        value = values.pop(old)
        warnings.warn(f"{source}: config key {old!r} is now {new!r} (docs/model.md, glossary); the old name will "
                      "stop working in a later release", FutureWarning, stacklevel=4)
        if new in values and old == "n_blocks":
            if str(values.get("model", "t2arec")) != "sasrec":     # a saved T2ARec config: n_layers was SASRec's
                values[new] = value
            continue
        if new in values and values[new] != value:
            raise ConfigError(f"{source}: both {old!r} (old name) and {new!r} are given, with different values")
        values[new] = value
    return values


# -- allowed values: the one place (a renamed key is a renamed line here) --------------------------------------------
# Keys with a fixed set of choices. The modules that implement them hold the same names (tests/test_config.py checks
# that these tuples equal losses.GAP_TRANSFORMS, losses.STATE_NORMS, readout.READOUTS, adapt.PARAM_GROUPS, ...).
CHOICES = {
    "format": (None, "recbole", "movielens-tab", "movielens-dat", "csv", "parquet", "seq-pair", "synthetic"),
    "time_unit": (None, "auto", "s", "ms", "us", "ns"),
    "split": ("loo", "global_time"),
    "model": ("t2arec", "backbone", "sasrec"),
    "backend": ("auto", "triton", "reference", "loop", "export"),   # loop: tests; export: ONNX tracing
    "gap_transform": ("hours", "log1p_hours"),
    "dt_transform": ("linear", "log"),
    "readout": ("last", "extrapolated", "request_gap"),
    "state_norm": ("fro", "squared", "relative"),
    "ttt_params": ("all", "block", "ssm", "norms"),
    "ttt_rule": ("sgd", "relative"),
    "ttt_order": ("time", "random", "stored"),
    "position_origin": ("end", "start"),
    "tie_order": ("file", "item", "reversed", "random"),
    "train_samples": ("windows", "prefixes"),
    "rec_weighting": ("batch", "target"),
    "optimizer": ("adam", "adamw"),
    "lr_schedule": ("constant", "cosine"),
}


@dataclass(frozen=True)
class Limit:
    """A numeric range: low/high bounds (None = open end), `strict` = the bound itself is excluded."""
    low: Optional[float] = None
    high: Optional[float] = None
    low_strict: bool = False
    high_strict: bool = False

    def holds(self, value) -> bool:
        if isinstance(value, float) and value != value:   # NaN is in no range
            return False
        above = self.low is None or (value > self.low if self.low_strict else value >= self.low)
        below = self.high is None or (value < self.high if self.high_strict else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_strict else '≥'} {self.low:g}"
        return f"in {'(' if self.low_strict else '['}{self.low:g}, {self.high:g}{')' if self.high_strict else ']'}"


AT_LEAST_0, AT_LEAST_1, POSITIVE = Limit(0), Limit(1), Limit(0, low_strict=True)
LIMITS = {
    "min_count": AT_LEAST_0, "max_len": AT_LEAST_1, "n_segments": AT_LEAST_1,
    "min_rating": Limit(float("-inf"), float("inf"), low_strict=True, high_strict=True),     # any finite rating
    "d": AT_LEAST_1, "d_state": AT_LEAST_1, "conv_kernel": AT_LEAST_1, "expand": AT_LEAST_1,
    "dropout": Limit(0, 1, high_strict=True), "n_heads": AT_LEAST_1, "n_layers": AT_LEAST_1, "pair_block": AT_LEAST_1,
    "time_margin": POSITIVE, "state_floor": POSITIVE,
    "epochs": AT_LEAST_1, "batch_size": AT_LEAST_1, "eval_batch_size": AT_LEAST_1, "lr": AT_LEAST_0,
    "weight_decay": AT_LEAST_0, "mu_time": AT_LEAST_0, "mu_state": AT_LEAST_0, "aux_warmup_epochs": AT_LEAST_0,
    "patience": AT_LEAST_1, "warmup_epochs": AT_LEAST_0,
    "cl_weight": AT_LEAST_0, "cl_temperature": POSITIVE, "cl_crop": Limit(0, 1, low_strict=True),
    "cl_drop": Limit(0, 1, high_strict=True), "cl_reorder": Limit(0, 1),
    "ttt_lr": AT_LEAST_0, "ttt_updates": AT_LEAST_0, "ttt_mu_time": AT_LEAST_0, "ttt_mu_state": AT_LEAST_0,
    "ttt_batch_size": AT_LEAST_1, "ttt_gate": AT_LEAST_0,
}
# torch device strings the trainer accepts
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_value(key: str, value) -> None:
    """Is `value` allowed for `key`? (None is allowed wherever the field is Optional; types are _coerce's job.)

    Raises:
        ConfigError: naming the key, the value and what is allowed.
    """
    if key in CHOICES and value not in CHOICES[key]:
        allowed = ", ".join("none" if c is None else c for c in CHOICES[key])
        hint = difflib.get_close_matches(str(value), [c for c in CHOICES[key] if c], n=1)
        raise ConfigError(f"{key}={value!r} is not allowed; expected one of {allowed}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    if key in LIMITS and value is not None and not isinstance(value, bool) and isinstance(value, (int, float)):
        if not LIMITS[key].holds(value):
            raise ConfigError(f"{key}={value!r} is out of range; expected a value {LIMITS[key]}")
    if key == "device" and not DEVICE_PATTERN.match(str(value)):
        raise ConfigError(f"device={value!r} is not allowed; expected auto, cpu, mps, cuda or cuda:N")
    if key == "columns" and value is not None:
        _check_columns(value)


def _check_columns(text: str) -> None:
    parts = dict(part.partition("=")[::2] for part in str(text).split(","))
    roles = sorted(k.strip() for k in parts if k.strip() != "rating")     # rating: optional (min_rating)
    if roles != ["item", "timestamp", "user"] or not all(v.strip() for v in parts.values()):
        raise ConfigError(f"columns={text!r} is not allowed; expected user=U,item=I,timestamp=T[,rating=R] (column "
                          "names or 0-based positions)")


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


BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def parse_overrides(args: list) -> dict:
    """Command-line settings → {key: text}, coerced by type later. Both argparse spellings work:
    ['--epochs=5', '--lr', '1e-3', '--amp'] → {'epochs': '5', 'lr': '1e-3', 'amp': 'true'} (a yes/no key given
    alone means true); dashes in keys are underscores (--min-count = --min_count).

    Raises:
        ConfigError: a token that is not --key[=value], or a key that needs a value and has none.
    """
    out, i = {}, 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"command line: expected --key=value or --key value, got {arg!r}")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            taken = override_takes_next(key, args[i + 1] if i + 1 < len(args) else None)
            if taken:
                value, i = args[i + 1], i + 1
            elif _FIELD_TYPES.get(key) is bool:
                value = "true"
            elif key in _SECTION_OF:
                raise ConfigError(f"command line: --{key.replace('_', '-')} needs a value (--{key}=VALUE or "
                                  f"--{key} VALUE)")
        out[key] = value
        i += 1
    return out


def override_takes_next(key: str, following: Optional[str]) -> bool:
    """Does `--key` take the token after it as its value? A yes/no key only a yes/no word (so `--amp DATA` keeps
    DATA); any other key any token that is not itself an option."""
    key = key.replace("-", "_")
    if following is None or following.startswith("--"):
        return False
    if _FIELD_TYPES.get(key) is bool:
        return following.lower() in BOOL_WORDS
    return True


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
                if text.lower() in BOOL_WORDS:
                    return BOOL_WORDS[text.lower()]
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
