"""Writing a folder as a whole: a reader sees the old folder or the new one, never a half-written one."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["write_folder"]


def write_folder(directory, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on an empty sibling temporary folder of `directory`, then put it in place of `directory`
    (which may not exist). On any error the temporary folder is removed and `directory` is left as it was.

    Source: docs/serving.md, "Persistence".

    Raises:
        whatever `write` raises, and OSError when the folder cannot be created or renamed.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        write(tmp)
        _replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(new: Path, target: Path) -> None:
    """Put folder `new` in place of `target` (which may not exist). The old folder is renamed aside before the new
    one is renamed in, and only deleted afterwards: a crash leaves either folder complete under some name, and a
    failed rename of the new one puts the old one back."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
