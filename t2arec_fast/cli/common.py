"""Helpers shared by CLI command modules."""
from __future__ import annotations



class UserError(Exception):
    """An error the user can fix (bad input, bad option). Printed without a traceback."""


def user_error_types() -> tuple:
    """Exception types that mean bad input rather than a bug: shown as one line, exit code 2."""
    from t2arec_fast.config import ConfigError
    from t2arec_fast.data.errors import DataError
    from t2arec_fast.errors import InputError, StoreError    # StoreError: Redis unreachable or unreadable
    from t2arec_fast.optional import MissingExtraError
    return UserError, ConfigError, DataError, InputError, StoreError, FileNotFoundError, MissingExtraError


def write_json(path, payload) -> None:
    """Write `payload` as strict JSON to `path` (t2arec_fast.json_io: NaN → null); nothing when path is None."""
    if path is not None:
        from t2arec_fast.json_io import write_json as write
        write(path, payload)
