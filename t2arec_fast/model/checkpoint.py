"""Checkpoint directories shared by every model: model.safetensors + config.json (+ id_maps.npz).

config.json holds {"model": name, "config": {...constructor kwargs...}, "versions": {...}, "extra": {...}};
`load_checkpoint` dispatches on "model" so that one call loads any model the package trains.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from t2arec_fast import json_io
from t2arec_fast.errors import InputError

FORMAT_VERSION = 1


def weights_fingerprint(model) -> str:
    """The one content hash of a model (64 hex digits of SHA-256) over its config and every parameter and buffer
    (names, dtypes, shapes, bytes): equal iff two models compute the same function with the same weights — the
    same checkpoint loaded twice, or a PyTorch model and the ONNX step model built on it. Exported graphs carry its
    first 16 digits (export.metadata), the Redis store keys model versions by it (serving.shared).
    `model` needs `config` (a dataclass) and `state_dict()`."""
    digest = hashlib.sha256(repr(sorted(vars(model.config).items())).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _versions() -> dict:
    from t2arec_fast import __version__
    return {"t2arec_fast": __version__, "torch": torch.__version__, "format": FORMAT_VERSION}


def save_checkpoint(model, directory, config: dict, id_maps: Optional[dict] = None,
                    extra: Optional[dict] = None) -> Path:
    """Write `model` into `directory` (created if needed): model.safetensors, config.json ({"model", "config",
    "versions", "extra"}) and, when given, id_maps.npz. Atomic enough for a training loop: every file goes through a
    temporary name and a rename. → directory.

    Raises:
        OSError: the directory cannot be created or written.
    """
    from safetensors.torch import save_file
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _atomic(directory / "model.safetensors", lambda p: save_file(tensors, str(p)))
    meta = {"model": model.model_name, "config": config, "versions": _versions(), "extra": extra or {}}
    _atomic(directory / "config.json", lambda p: p.write_text(json_io.dumps(meta) + "\n"))
    if id_maps:
        arrays = {k: np.asarray(v).astype(str) if np.asarray(v).dtype == object else np.asarray(v)
                  for k, v in id_maps.items()}
        _atomic(directory / "id_maps.npz", lambda p: np.savez(p, **arrays))
    return directory


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp" + (path.suffix or ""))
    write(tmp)
    os.replace(tmp, path)


def read_meta(directory) -> dict:
    """A checkpoint's config.json: {"model", "config", "versions", "extra"}.

    Raises:
        FileNotFoundError: `directory` holds no config.json.
        InputError: config.json is not JSON, or not an object with a "config" object inside.
    """
    directory = Path(directory)
    path = directory / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"not a t2arec_fast checkpoint: {path} is missing")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: corrupted checkpoint config ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise InputError(f"{path}: not a checkpoint config (expected an object with \"model\" and a \"config\" "
                         "object, as model.save writes)")
    return meta


def load_checkpoint(directory, map_location="cpu", expect=None):
    """Load any saved model (the class named in config.json) onto `map_location`, in eval mode, with its
    `checkpoint_meta` and `id_maps` set. `expect` (a class) makes a mismatch an error instead of a surprise.

    Raises:
        FileNotFoundError: config.json or model.safetensors is missing.
        InputError: an unreadable or inconsistent file (naming it), an unknown model type, a model that is not
            `expect`, or weights that do not match the config.
        ConfigError: the config switches on an option that has been removed (config.REMOVED_OPTIONS).
    """
    from safetensors.torch import load_file
    from . import MODEL_CLASSES
    directory = Path(directory)
    meta = read_meta(directory)
    name = meta.get("model")
    if name not in MODEL_CLASSES:
        raise InputError(f"{directory}: unknown model type {name!r} in config.json")
    cls = MODEL_CLASSES[name]
    if expect is not None and not issubclass(cls, expect):
        raise InputError(f"{directory} holds a {name!r} model, not {expect.__name__}")
    try:
        model = cls.from_config(meta["config"])
    except (TypeError, KeyError) as exc:     # an option this version does not know, or n_items missing
        raise InputError(f"{directory / 'config.json'}: cannot build a {name!r} model from its config "
                         f"({type(exc).__name__}: {exc})") from None
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing")
    try:
        state = load_file(str(weights), device=str(map_location))
    except Exception as exc:  # safetensors raises its own error types for corrupted files
        raise InputError(f"{weights}: cannot read weights ({exc})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(f"{weights}: weights do not match the config (missing {missing}, unexpected {unexpected})")
    model.checkpoint_meta = meta
    model.id_maps = load_id_maps(directory)
    return model.to(map_location).eval()


def load_id_maps(directory) -> dict:
    """{"item_ids": (n_items + 1,), "user_ids": (n_users,)} raw-id arrays of a checkpoint (data/id_maps.py), or {}
    when it has no id_maps.npz."""
    path = Path(directory) / "id_maps.npz"
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
