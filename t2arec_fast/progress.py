"""Progress bars for training, evaluation and replay: one place that decides how they look.

On a terminal they are live tqdm bars; when stderr is a file or a pipe (CI, nohup, job logs) tqdm's `disable=None`
turns them off, so logs hold the per-epoch lines rather than thousands of carriage-return updates.
"""
from __future__ import annotations

from typing import Iterable, Optional


def progress_bar(iterable: Iterable, desc: str, total: Optional[int] = None, unit: str = "it",
                 enabled: bool = True):
    """A tqdm bar over `iterable`: live on a terminal, silent when stderr is not one or when `enabled` is False
    (it then still iterates and accepts `set_postfix`, so callers never ask which they got)."""
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True, mininterval=1.0,
                disable=None if enabled else True)


def write_line(message: str) -> None:
    """Print a line without breaking a live bar."""
    from tqdm.auto import tqdm
    tqdm.write(message)
