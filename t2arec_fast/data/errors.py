"""Errors for data files that cannot be used. The CLI prints them as one line and exits with code 2."""
from __future__ import annotations

from typing import Optional


class DataError(ValueError):
    """Input data that cannot be used. The message says where (file, line, column) and what was expected.

    The parts are also kept as attributes (`path`, `line`, `column`) so tests and callers can check them.
    """

    def __init__(self, message: str, path=None, line: Optional[int] = None, column=None,
                 line_text: Optional[bytes] = None):
        self.path, self.line, self.column = path, line, column
        where = [str(path)] if path is not None else []
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column {column}")
        text = f"{', '.join(where)}: {message}" if where else message
        if line_text is not None:
            text += f" (line reads {_preview(line_text)})"
        super().__init__(text)


def _preview(raw: bytes, limit: int = 80) -> str:
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    return repr(text if len(text) <= limit else text[:limit] + "...")
