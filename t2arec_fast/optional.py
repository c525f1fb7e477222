"""Optional dependencies: imported only by the feature that needs them, with an error that names the extra.

The core (data, training, evaluation, export, serving) runs on the dependencies declared in pyproject.toml; the
extras there ("gpu", "plots", "tune", "redis", "export", "dev") add what single features need.
"""
from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """A feature needs a package that only one of the package's extras installs; the message says which."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import and return `module` for `feature` (e.g. "Hyper-parameter search").

    Raises:
        MissingExtraError: `module` (or its top-level package) is not installed; the message names the pip command
            (`pip install "t2arec_fast[extra]"`). Errors raised while importing an installed module pass through.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name is None or exc.name.split(".")[0] != top:   # the module is there but one of ITS imports failed
            raise
        raise MissingExtraError(f"{feature} needs the package {top!r}, which is not installed: "
                                f"pip install \"t2arec_fast[{extra}]\"") from None
