"""Turn parsed columns into clean numpy arrays, or say exactly which line of which file is wrong.

Parsing is vectorised (pyarrow); only when a check fails do we walk the raw text to turn a row number into a line
number, so the happy path stays fast on large files.
"""
from __future__ import annotations

import csv
import io
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import DataError

_NUMBER_TEXT = r"^\s*[+-]?\d+(\.\d*)?([eE][+-]?\d+)?\s*$"  # fractions are refused later, with their own message


class RowLocator:
    """Maps a data-row index (0-based, as pyarrow counts them) back to a line of a text file, for error messages."""

    def __init__(self, source_name: str, read_text: Optional[Callable[[], bytes]], header_lines: int,
                 column_numbers: dict):
        self.source_name = source_name
        self.read_text = read_text            # called only on error; None for binary formats (Parquet): name the row
        self.header_lines = header_lines
        self.column_numbers = column_numbers  # column name -> 1-based position in the file

    def error(self, row: int, column: Optional[str], message: str) -> DataError:
        col = None
        if column is not None:
            number = self.column_numbers.get(column)
            col = f"{number} ({column})" if number is not None else column
        if self.read_text is None:
            return DataError(f"row {row + 1}: {message}", self.source_name, column=col)
        line_no, text = self.line_of_row(row)
        if not text.endswith(b"\n"):  # an error on a last line without newline: most likely a cut-off file
            message += "; the file ends mid-line (truncated?)"
        return DataError(message, self.source_name, line=line_no, column=col, line_text=text)

    def line_of_row(self, row: int) -> tuple[int, bytes]:
        """pyarrow skips the header and blank lines; count the same way."""
        seen = -1
        for line_no, line in enumerate(io.BytesIO(self.read_text()), start=1):
            if line_no <= self.header_lines or not line.strip():
                continue
            seen += 1
            if seen == row:
                return line_no, line
        return line_no, b""  # pragma: no cover - rows always come from the same data


def first_bad_field_count(data: bytes, delimiter: str, n_fields: int, header_lines: int,
                          quoting: bool) -> Optional[tuple[int, bytes, int]]:
    """(line number, line, field count) of the first line without `n_fields` fields, or None."""
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace", newline="")
    reader = csv.reader(text, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
    lines = data.splitlines(keepends=True)
    for fields in reader:
        line_no = reader.line_num
        if line_no <= header_lines or not any(f.strip() for f in fields):
            continue
        if len(fields) != n_fields:
            return line_no, lines[line_no - 1] if line_no <= len(lines) else b"", len(fields)
    return None


def ids(column: pa.ChunkedArray, name: str, where: RowLocator) -> pa.Array:
    """A user or item id column without missing values (ints or strings, kept as pyarrow for fast hashing)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.null_count:
        raise where.error(_first_true(array.is_null()), name, f"missing {name} id (empty field or NaN)")
    if pa.types.is_floating(array.type):
        values = array.to_numpy()
        bad = ~np.isfinite(values) | (values != np.floor(values))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise where.error(row, name, f"{name} id {values[row].item()!r} is not a whole number or a token")
        array = pa.array(values.astype(np.int64))
    return array


def seconds(column: pa.ChunkedArray, name: str, where: RowLocator) -> np.ndarray:
    """int64 unix seconds from a parsed timestamp column: ints, integral floats, or date-times."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    expected = "expected whole unix seconds (a non-negative integer)"
    if array.null_count:
        raise where.error(_first_true(array.is_null()), name, f"missing or NaN timestamp; {expected}")
    kind = array.type
    if pa.types.is_integer(kind):
        values = array.to_numpy().astype(np.int64, copy=False)
    elif pa.types.is_floating(kind):
        values = _integral_floats(array.to_numpy(), name, where, expected)
    elif pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        values = _datetime_seconds(array, name, where)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        ok = pc.match_substring_regex(array, _NUMBER_TEXT)
        if not pc.all(ok).as_py():
            row = _first_true(pc.invert(ok))
            raise where.error(row, name, f"timestamp {array[row].as_py()!r} is not a number; {expected}")
        values = _integral_floats(pc.cast(pc.utf8_trim_whitespace(array), pa.float64()).to_numpy(), name, where,
                                  expected)
    else:
        raise where.error(0, name, f"timestamp column has type {kind}; {expected}")
    if values.size and values.min() < 0:
        row = int(np.flatnonzero(values < 0)[0])
        raise where.error(row, name, f"negative timestamp {values[row].item()}; {expected}")
    return values


def _integral_floats(values: np.ndarray, name: str, where: RowLocator, expected: str) -> np.ndarray:
    finite = np.isfinite(values)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise where.error(row, name, f"timestamp is {values[row]}; {expected}")
    fraction = values != np.floor(values)
    if fraction.any():
        row = int(np.flatnonzero(fraction)[0])
        raise where.error(row, name, f"timestamp {values[row].item()!r} has a fraction of a second; {expected}")
    if values.size and np.abs(values).max() >= 2.0 ** 53:
        row = int(np.flatnonzero(np.abs(values) >= 2.0 ** 53)[0])
        raise where.error(row, name, f"timestamp {values[row].item()!r} is too large to be exact as a float; "
                                     f"{expected}")
    return values.astype(np.int64)


def _datetime_seconds(array: pa.Array, name: str, where: RowLocator) -> np.ndarray:
    try:
        as_seconds = pc.cast(array, pa.timestamp("s"), safe=True)
    except pa.ArrowInvalid as exc:
        raise where.error(0, name, f"date-times with fractions of a second are not supported ({exc})") from None
    return as_seconds.cast(pa.int64()).to_numpy()


def _first_true(mask: pa.Array) -> int:
    return int(np.flatnonzero(mask.to_numpy(zero_copy_only=False))[0])
