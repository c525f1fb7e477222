"""The one way the package, the CLI and bench/ write JSON: strict JSON that any parser reads.

Python's `json` writes NaN and ±Infinity as the bare words `NaN` and `Infinity`, which are not JSON (RFC 8259): jq,
JavaScript's JSON.parse and most other readers reject the whole file. Here every non-finite float becomes `null`,
which in every file this package writes means "no value": a metric over zero examples, a quantity that diverged.
numpy scalars and arrays become numbers and lists, paths become strings; anything else unknown is an error rather
than a silently wrong file.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Union


def dumps(obj: Any, indent: int = 2, sort_keys: bool = False) -> str:
    """Strict JSON text of `obj` (non-finite floats → null).

    Raises:
        TypeError: a value that has no JSON form (not a number, string, bool, None, list, dict, numpy or Path).
    """
    return json.dumps(finite(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)


def write_json(path: Union[str, Path], obj: Any, indent: int = 2) -> Path:
    """Write `obj` as strict JSON to `path` through a temporary file and a rename (never a half-written file);
    parent folders are created. Returns the path.

    Raises:
        TypeError: as `dumps`; nothing is written then.
        OSError: the folder cannot be created or written, or `path` is a folder; no temporary file is left.
    """
    path = Path(path)
    text = dumps(obj, indent=indent) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    # a temporary file of its own: two writers of one path never share (and rename away) each other's half file
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def finite(obj: Any) -> Any:
    """A copy of `obj` in plain Python types with every NaN/±Infinity replaced by None.

    Raises:
        TypeError: a value that has no JSON form.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, dict):
        return {_key(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    import numpy as np
    if isinstance(obj, np.generic):
        return finite(obj.item())
    if isinstance(obj, np.ndarray):
        return finite(obj.tolist())
    raise TypeError(f"cannot write a {type(obj).__name__} as JSON")


def _key(key: Any) -> Any:
    """A dict key json.dumps accepts: numpy scalar keys (e.g. item ids) become the Python number.

    Raises:
        TypeError: a key that is neither a string, a number, a bool, None nor a numpy scalar.
    """
    if key is None or isinstance(key, (str, int, float, bool)):
        return key
    import numpy as np
    if isinstance(key, np.generic):
        return key.item()
    raise TypeError(f"cannot write a {type(key).__name__} key as JSON")
