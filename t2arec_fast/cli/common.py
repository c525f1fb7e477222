"""Helpers shared by CLI command modules."""
from __future__ import annotations

import json
from pathlib import Path


class UserError(Exception):
    """An error the user can fix (bad input, bad option). Printed without a traceback."""


def user_error_types() -> tuple:
    """Exception types that mean bad input rather than a bug: shown as one line, exit code 2."""
    from t2arec_fast.config import ConfigError
    from t2arec_fast.data.errors import DataError
    from t2arec_fast.errors import InputError
    from t2arec_fast.optional import MissingExtraError
    return UserError, ConfigError, DataError, InputError, FileNotFoundError, MissingExtraError


def write_json(path, payload) -> None:
    """Write `payload` as pretty JSON to `path` (parents created)."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")


def _jsonable(obj):
    import numpy as np
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
