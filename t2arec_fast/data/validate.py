"""Turn parsed columns into clean numpy arrays, or say exactly which line of which file is wrong.

Parsing is vectorised (pyarrow); only when a check fails do we walk the raw text to turn a row number into a line
number, so the happy path stays fast on large files.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import time_units
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
        """The DataError for data row `row` (0-based) and `column`: file, line, column and the line's text (Parquet:
        the row number). Returned, not raised."""
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


# Id fields that mean "no value" (the usual spellings of NA in exports, as pyarrow and pandas read them): a missing
# id is an error, never an id of its own that would merge every anonymous row into one user.
MISSING_ID_TEXT = ("", "NA", "N/A", "#N/A", "NaN", "nan", "-nan", "null", "NULL", "None", "<NA>")


def first_non_utf8_line(data: bytes) -> tuple[int, bytes]:
    """(line number, line) of the first line that is not UTF-8; (1, b"") if every line is."""
    for line_no, line in enumerate(data.splitlines(keepends=True), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return line_no, line
    return 1, b""


def ids(column, name: str, where) -> pa.Array:
    """A user or item id column as tokens (docs/data.md, "Ids"): dictionary-encoded text with surrounding spaces
    removed, or the integers of a typed (Parquet) integer column. Never through a float: two distinct ids never
    become one.

    Raises:
        DataError: a missing id, an id column of floats that are not whole or too large to be exact (>= 2^53).
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if array.null_count:
        raise where.error(_first_true(array.is_null()), name, f"missing {name} id (empty field or NaN)")
    if pa.types.is_integer(array.type):
        return array
    if pa.types.is_floating(array.type):
        return _float_ids(array.to_numpy(), name, where)
    if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
        array = as_text(array, name, where)
    elif not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = pc.cast(array, pa.string())
    return _clean_tokens(array.dictionary_encode(), name, where)


def _clean_tokens(encoded: pa.DictionaryArray, name: str, where) -> pa.DictionaryArray:
    """Trim and check the distinct tokens only (a few per cent of the rows), then map the rows through them."""
    dictionary = pc.utf8_trim_whitespace(encoded.dictionary)
    missing = pc.is_in(dictionary, value_set=pa.array(MISSING_ID_TEXT)).to_numpy(zero_copy_only=False)
    if missing.any():
        row = int(np.flatnonzero(missing[encoded.indices.to_numpy()])[0])
        raise where.error(row, name, f"missing {name} id ({encoded[row].as_py()!r}); every row needs a {name} id")
    if dictionary.equals(encoded.dictionary):
        return encoded
    merged = dictionary.dictionary_encode()            # " 7" and "7" are one token once trimmed
    return pa.DictionaryArray.from_arrays(merged.indices.take(encoded.indices), merged.dictionary)


def _float_ids(values: np.ndarray, name: str, where) -> pa.Array:
    """Ids stored as floats (a Parquet float column): whole numbers below 2^53 are the integers they stand for."""
    bad = ~np.isfinite(values) | (values != np.floor(values))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise where.error(row, name, f"{name} id {values[row].item()!r} is not a whole number or a token")
    too_large = np.abs(values) >= 2.0 ** 53
    if too_large.any():
        row = int(np.flatnonzero(too_large)[0])
        raise where.error(row, name, f"{name} id {values[row].item()!r} is stored as a float beyond 2^53, where "
                                     "distinct ids round to the same number; store ids as integers or text")
    return pa.array(values.astype(np.int64))


def as_text(array: pa.Array, name: str, where) -> pa.Array:
    """Binary tokens as UTF-8 text.

    Raises:
        DataError: a token that is not UTF-8, naming its row.
    """
    try:
        return array.cast(pa.string())
    except pa.ArrowInvalid:
        values = array.to_pylist()
        row = next(i for i, v in enumerate(values) if not _decodes(v))
        raise where.error(row, name, f"{name} is not UTF-8 text; save the file as UTF-8") from None


def _decodes(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# Canonical decimal integers: no sign on zero, no leading zeros, no '+', no spaces, at most 19 digits. Exactly the
# strings that int64 -> text -> int64 maps to themselves, so reading such a column as integers merges nothing.
_CANONICAL_INTEGER = r"^(0|-?[1-9][0-9]{0,18})$"


def integer_ids_if_canonical(tokens: pa.Array) -> pa.Array:
    """int64 ids when every token is a canonical decimal integer that fits int64 (then numeric order is kept and
    nothing can merge), else the tokens unchanged ("007" and "7" are two ids, as in RecBole's `:token` columns)."""
    if not (pa.types.is_string(tokens.type) or pa.types.is_large_string(tokens.type)) or len(tokens) == 0:
        return tokens
    if not pc.all(pc.match_substring_regex(tokens, _CANONICAL_INTEGER)).as_py():
        return tokens
    try:
        return pc.cast(tokens, pa.int64())            # safe cast: 19-digit values beyond 2^63 - 1 raise
    except pa.ArrowInvalid:
        return tokens


@dataclass
class EventTimes:
    """Timestamps of one column: int64 unix seconds, the part below a second (None when every time is whole; only
    used to order events of the same second) and where the unit came from."""
    seconds: np.ndarray
    subsecond: Optional[np.ndarray]
    unit: str                 # "s" | "ms" | "us" | "ns"
    unit_source: str          # "detected" (magnitude rule) | "given" (time_unit=) | "date-time" (typed column)


def times(column, name: str, where, unit: Optional[str] = None) -> EventTimes:
    """Unix times in seconds from a parsed timestamp column: integers or floats in `unit` (None: detected by
    magnitude, time_units.detect_unit), number text, or typed date-times (their own unit; `unit` is ignored).

    Raises:
        DataError: a missing, NaN, non-numeric or negative time, a float too large to be exact, or a time after
            the year 9999 in the given unit (a wrong unit), naming the row.
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.null_count:
        raise where.error(_first_true(array.is_null()), name, f"missing or NaN timestamp; {EXPECTED_TIME}")
    kind = array.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        values, unit, source = _datetime_ticks(array)
    else:
        values = _numeric_times(array, name, where)
        source = "given" if unit else "detected"
    if values.size and values.min() < 0:
        row = int(np.flatnonzero(values < 0)[0])
        raise where.error(row, name, f"negative timestamp {values[row].item()}; {EXPECTED_TIME}")
    if unit is None:
        unit = time_units.detect_unit(values.max()) if values.size else "s"
    seconds, subsecond = time_units.split_seconds(values, unit)
    if seconds.size and seconds.max() > time_units.MAX_SECONDS:
        row = int(np.flatnonzero(seconds > time_units.MAX_SECONDS)[0])
        raise where.error(row, name, f"timestamp {values[row].item()!r} read as {time_units.UNIT_NAMES[unit]} is "
                                     f"after the year 9999; give its unit (time_unit= in Python, --time-unit on the "
                                     f"command line: s, ms, us or ns)")
    return EventTimes(seconds, subsecond, unit, source)


EXPECTED_TIME = "expected a non-negative unix time (s, ms, us or ns) or a date-time"


def _numeric_times(array: pa.Array, name: str, where) -> np.ndarray:
    """int64 (or float64 where a value has a fraction) ticks from an integer, float or text column."""
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        ok = pc.match_substring_regex(array, _NUMBER_TEXT)
        if not pc.all(ok).as_py():
            row = _first_true(pc.invert(ok))
            raise where.error(row, name, f"timestamp {array[row].as_py()!r} is not a number; {EXPECTED_TIME}")
        array = pc.utf8_trim_whitespace(array)
        try:
            return pc.cast(array, pa.int64()).to_numpy()
        except pa.ArrowInvalid:                        # a fraction or an exponent: read as float
            array = pc.cast(array, pa.float64())
            kind = array.type
    if pa.types.is_integer(kind):
        if pa.types.is_uint64(kind) and pc.max(array).as_py() >= 2 ** 63:
            row = int(np.argmax(array.to_numpy()))
            raise where.error(row, name, f"timestamp {array[row].as_py()} is beyond int64; {EXPECTED_TIME}")
        return array.to_numpy().astype(np.int64, copy=False)
    if pa.types.is_floating(kind):
        return _float_times(array.to_numpy(), name, where)
    raise where.error(0, name, f"timestamp column has type {kind}; {EXPECTED_TIME}")


def _float_times(values: np.ndarray, name: str, where) -> np.ndarray:
    """Whole floats become int64; floats with a fraction stay float64 (the fraction orders same-second events)."""
    finite = np.isfinite(values)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise where.error(row, name, f"timestamp is {values[row]}; {EXPECTED_TIME}")
    if values.size and np.abs(values).max() >= 2.0 ** 53:
        row = int(np.flatnonzero(np.abs(values) >= 2.0 ** 53)[0])
        raise where.error(row, name, f"timestamp {values[row].item()!r} is too large to be exact as a float; "
                                     f"write it as an integer")
    if np.all(values == np.floor(values)):
        return values.astype(np.int64)
    return values


# a rating written as text: a decimal number, optionally with a fraction or an exponent (".5" included)
_RATING_TEXT = r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$"
EXPECTED_RATING = "expected a number (the rating of the interaction)"


def ratings(column, name: str, where) -> np.ndarray:
    """A rating column as float64 (n_rows,), for a rating threshold (docs/data.md, "Ratings"): integers, floats or
    number text.

    Raises:
        DataError: a missing, NaN, infinite or non-numeric rating, or a column of another type, naming the row
            (file, line and column).
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if array.null_count:
        raise where.error(_first_true(array.is_null()), name, f"missing or NaN rating; {EXPECTED_RATING}")
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        ok = pc.match_substring_regex(array, _RATING_TEXT)
        if not pc.all(ok).as_py():
            row = _first_true(pc.invert(ok))
            raise where.error(row, name, f"rating {array[row].as_py()!r} is not a number; {EXPECTED_RATING}")
        array = pc.cast(pc.utf8_trim_whitespace(array), pa.float64())
    elif not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
        raise where.error(0, name, f"rating column has type {array.type}; {EXPECTED_RATING}")
    values = array.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    finite = np.isfinite(values)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise where.error(row, name, f"rating is {values[row]}; {EXPECTED_RATING}")
    return values


def _datetime_ticks(array: pa.Array) -> tuple[np.ndarray, str, str]:
    """int64 ticks of a date or timestamp column in its own unit (time zones are UTC instants already)."""
    if pa.types.is_date(array.type):
        array = pc.cast(array, pa.timestamp("s"))
    return array.cast(pa.int64()).to_numpy(), array.type.unit, "date-time"


def _first_true(mask: pa.Array) -> int:
    return int(np.flatnonzero(mask.to_numpy(zero_copy_only=False))[0])
