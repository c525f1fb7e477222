"""Readers: one function per file format, each returning Interactions (raw ids, int64 seconds, file order).

Text formats are parsed by pyarrow's multi-threaded CSV reader; every value is then checked in whole-array passes
(validate.py), which also turns a bad row into "file, line, column: what was expected".
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from . import validate
from .errors import DataError
from .preprocess import Interactions, keep_min_rating
from .sources import Source, canonical_format, check_encoding, resolve
from .time_units import canonical_unit

ROLES = ("user", "item", "timestamp")
RATING = "rating"             # an optional role: read only when a rating threshold (min_rating) needs it
# header names recognised without a column mapping (lower case); MovieLens, RecBole and common spellings
ALIASES = {
    "user": ("user_id", "userid", "user", "uid", "visitorid", "customer_id", "reviewerid"),
    "item": ("item_id", "itemid", "item", "movieid", "movie_id", "iid", "product_id", "productid", "business_id",
             "asin"),
    "timestamp": ("timestamp", "ts", "time", "unix_time", "unixreviewtime", "datetime", "date"),
    RATING: ("rating", "ratings", "score", "stars", "overall"),       # MovieLens/RecBole, Yelp, Amazon reviews
}
MOVIELENS_COLUMNS = ["user", "item", "rating", "timestamp"]
# how messages tell a user to name the columns, in the Python API and on the command line
COLUMNS_HINT = ("name them with columns={'user': ..., 'item': ..., 'timestamp': ...} (Python) or "
                "--columns user=U,item=I,timestamp=T (command line)")


def read_interactions(path: Union[str, Path], format: Optional[str] = None, columns: Union[dict, str, None] = None,
                      time_unit: Optional[str] = None, min_rating: Optional[float] = None) -> Interactions:
    """Read a file, folder or archive into Interactions (rules: docs/data.md).

    columns:    maps user/item/timestamp (and optionally rating) to column names (or 0-based positions for
                header-less CSV) where the names are not the usual ones: a dict, or the text form
                "user=uid,item=iid,timestamp=ts[,rating=r]".
    time_unit:  unit of numeric timestamps: "s", "ms", "us", "ns", or None/"auto" to detect it by magnitude.
    min_rating: keep only events rated at least this (RecBole's `val_interval: {rating: "[min_rating,inf)"}`);
                None keeps every event and never reads the rating column. `raw.meta` counts the rows dropped.

    Raises:
        DataError: anything wrong with the input, naming the file, line and column; with min_rating, a format or
            file without a rating column, or a rating that is not a finite number.
    """
    path = Path(path).expanduser()
    unit = canonical_unit(time_unit)
    _check_min_rating(min_rating)
    fmt, sources = resolve(path, canonical_format(format))
    name = dataset_name(path, sources)
    reader = {"recbole": read_recbole, "movielens-tab": read_movielens_tab, "movielens-dat": read_movielens_dat,
              "csv": read_csv, "parquet": read_parquet, "seq-pair": read_sequence_pair}[fmt]
    raw = reader(*sources, columns=_check_mapping(columns), time_unit=unit, ratings=min_rating is not None)
    raw.name, raw.format, raw.files = name, fmt, sorted({s.path for s in sources})
    if len(raw) == 0:
        raise DataError("no interactions in the file (only a header or blank lines)", sources[0].name)
    if min_rating is not None:
        raw = keep_min_rating(raw, min_rating)
        if len(raw) == 0:
            raise DataError(f"no interaction is rated {min_rating:g} or more (min_rating); the "
                            f"{raw.meta['rows_dropped_by_min_rating']:,} rows read are all rated below it",
                            sources[0].name)
    return raw


def _check_min_rating(min_rating) -> None:
    if min_rating is None:
        return
    if isinstance(min_rating, bool) or not isinstance(min_rating, (int, float)) or not math.isfinite(min_rating):
        raise DataError(f"min_rating={min_rating!r}: expected a finite number (keep events rated at least this) "
                        "or None (keep every event)")


def dataset_name(path: Path, sources: list) -> str:
    """ml-100k for ml-100k/u.data or ml-100k.zip, Beauty for Beauty_item_org_rank.txt, else the file stem."""
    if path.is_dir():
        return path.resolve().name
    if path.suffix.lower() == ".zip":
        return path.stem
    base = sources[0].basename
    if "_item_" in base:
        return base.split("_item_")[0]
    stem = base.rsplit(".", 1)[0]
    return path.resolve().parent.name if stem.lower() in ("u", "ratings", "data", "interactions") else stem


# -- formats ---------------------------------------------------------------------------------------------------------
def read_movielens_tab(source: Source, columns=None, time_unit=None, ratings: bool = False) -> Interactions:
    """GroupLens `u.data`: user, item, rating, timestamp separated by tabs, no header."""
    _check_not_empty(source)
    mapping = _with_rating(columns or {r: r for r in ROLES}, MOVIELENS_COLUMNS, source, ratings)
    return _read_delimited(source, "\t", MOVIELENS_COLUMNS, header_lines=0, quoting=False, mapping=mapping,
                           time_unit=time_unit)


def read_movielens_dat(source: Source, columns=None, time_unit=None, ratings: bool = False) -> Interactions:
    """GroupLens `ratings.dat`: user::item::rating::timestamp. The two-character separator becomes one for pyarrow."""
    data = _nonempty_bytes(source).replace(b"::", b"\x1f")
    mapping = _with_rating(columns or {r: r for r in ROLES}, MOVIELENS_COLUMNS, source, ratings)
    return _read_delimited(source, "\x1f", MOVIELENS_COLUMNS, header_lines=0, quoting=False, mapping=mapping,
                           data=data, shown_delimiter="::", time_unit=time_unit)


def read_recbole(source: Source, columns=None, time_unit=None, ratings: bool = False) -> Interactions:
    """RecBole atomic `.inter`: tab-separated, typed header `user_id:token item_id:token ... timestamp:float`.
    Id columns are tokens whatever type the header gives them (RecBole's own rule for `:token`).

    Raises:
        DataError: an untyped header, or any bad field (naming file, line and column).
    """
    _check_not_empty(source)
    header = source.first_line().split("\t")
    untyped = [h for h in header if ":" not in h]
    if untyped:
        raise DataError(f"expected a RecBole typed header such as 'user_id:token<TAB>item_id:token<TAB>"
                        f"timestamp:float', got field {untyped[0]!r}", source.name, line=1)
    names = [h.split(":", 1)[0] for h in header]
    mapping = _with_rating(columns or {"user": "user_id", "item": "item_id", "timestamp": "timestamp"}, names,
                           source, ratings)
    return _read_delimited(source, "\t", names, header_lines=1, quoting=False, mapping=mapping,
                           time_unit=time_unit)


def read_csv(source: Source, columns=None, time_unit=None, ratings: bool = False) -> Interactions:
    """Generic delimited text with a header (or header-less with a positional mapping); delimiter sniffed."""
    _check_not_empty(source)
    first = source.first_line()
    delimiter = "\t" if source.basename.lower().endswith(".tsv") else _sniff_delimiter(first, source)
    fields = [f.strip().strip('"') for f in first.split(delimiter)]
    if columns and all(isinstance(v, int) for v in columns.values()):
        has_header = not all(_is_number(fields[i]) for i in columns.values() if i < len(fields))
        names = [f"column{i + 1}" for i in range(len(fields))]
        mapping = {role: names[i] if i < len(names) else f"column{i + 1}" for role, i in columns.items()}
        return _read_delimited(source, delimiter, names, header_lines=int(has_header), quoting=True,
                               mapping=_with_rating(mapping, names, source, ratings), time_unit=time_unit)
    mapping = _with_rating(columns or _mapping_from_aliases(fields, source), fields, source, ratings)
    return _read_delimited(source, delimiter, fields, header_lines=1, quoting=True, mapping=mapping,
                           time_unit=time_unit)


def read_parquet(source: Source, columns=None, time_unit=None, ratings: bool = False) -> Interactions:
    """A Parquet file with user, item and timestamp columns (typed integer, text or date-time columns), and a rating
    column when a threshold needs one.

    Raises:
        DataError: not readable as Parquet, a missing column, or a bad value (naming the row and column).
    """
    import pyarrow.parquet as pq
    try:
        handle = pa.BufferReader(source.read_bytes()) if source.compressed else str(source.path)
        parquet = pq.ParquetFile(handle)
        names = parquet.schema_arrow.names
        mapping = _with_rating(columns or _mapping_from_aliases(names, source), names, source, ratings)
        _require_columns(mapping, names, source)
        table = parquet.read(columns=list(dict.fromkeys(mapping.values())))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"not a readable Parquet file ({exc})", source.name) from None
    where = validate.RowLocator(source.name, None, 0, {n: i + 1 for i, n in enumerate(names)})
    return _interactions(table, mapping, where, time_unit)


def read_sequence_pair(item_source: Source, time_source: Source, columns=None, time_unit=None,
                       ratings: bool = False) -> Interactions:
    """`<name>_item_*.txt` + `<name>_time_*.txt`: line k of each is `user_id v_1 ... v_n` / `user_id t_1 ... t_n`.

    Raises:
        DataError: files with different line counts, lines that do not pair up, or a bad token (naming file, line
            and field); a rating threshold (the format has no ratings).
    """
    if ratings:
        raise DataError("a sequence pair (<name>_item_*.txt + <name>_time_*.txt) has no rating column, so min_rating "
                        "cannot apply; leave min_rating unset (--min-rating)", item_source.name)
    item_lines = _lines(item_source)
    time_lines = _lines(time_source)
    if len(item_lines) != len(time_lines):
        shorter = item_source if len(item_lines) < len(time_lines) else time_source
        raise DataError(f"{item_source.basename} has {len(item_lines):,} lines but {time_source.basename} has "
                        f"{len(time_lines):,}; expected one line per user in both", shorter.name,
                        line=min(len(item_lines), len(time_lines)) + 1)
    item_tokens = [line.split() for line in item_lines]
    time_tokens = [line.split() for line in time_lines]
    _check_pair_lines(item_tokens, time_tokens, item_source, time_source)
    counts = np.fromiter((len(t) - 1 for t in item_tokens), dtype=np.int64, count=len(item_tokens))
    users = pa.array(np.repeat(np.array([t[0] for t in item_tokens]), counts))
    items = pa.array(np.array([v for t in item_tokens for v in t[1:]]))
    ends = np.cumsum(counts)
    times_at = _TokenLocator(time_source, time_lines, ends)
    times = validate.as_text(pa.array(np.array([v for t in time_tokens for v in t[1:]])), "timestamp", times_at)
    return _with_times(Interactions(users=validate.ids(users, "user", _TokenLocator(item_source, item_lines, ends)),
                                    items=validate.ids(items, "item", _TokenLocator(item_source, item_lines, ends)),
                                    timestamps=np.zeros(0, np.int64), name="", format="seq-pair"),
                       validate.times(times, "timestamp", times_at, time_unit))


class _TokenLocator:
    """validate's row locator for sequence-pair files: event k is a token on some line (field 1 is the user)."""

    def __init__(self, source: Source, lines: list, ends: np.ndarray):
        self.source_name, self.lines, self.ends = source.name, lines, ends

    def error(self, row: int, column, message: str) -> DataError:
        line_index = int(np.searchsorted(self.ends, row, side="right"))
        first_of_line = int(self.ends[line_index - 1]) if line_index else 0
        field = 1 if column == "user" else row - first_of_line + 2
        return DataError(message, self.source_name, line=line_index + 1, column=field,
                         line_text=self.lines[line_index])


# -- shared helpers ------------------------------------------------------------------------------------------------
def _read_delimited(source: Source, delimiter: str, names: list, header_lines: int, quoting: bool, mapping: dict,
                    data: Optional[bytes] = None, shown_delimiter: Optional[str] = None,
                    time_unit: Optional[str] = None) -> Interactions:
    """Parse with pyarrow (from `data` if given, else straight from the file); errors re-read the text lazily.
    Id columns are read as text (tokens), never inferred as numbers: a float or overflowing int would merge ids."""
    _require_columns(mapping, names, source)
    wanted = list(dict.fromkeys(mapping.values()))
    id_types = {mapping["user"]: pa.string(), mapping["item"]: pa.string()}
    text = (lambda: data) if data is not None else source.read_bytes
    try:
        table = pacsv.read_csv(
            pa.BufferReader(data) if data is not None else source.arrow_input(),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=header_lines, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoting else False),
            convert_options=pacsv.ConvertOptions(include_columns=wanted, column_types=id_types))
    except pa.ArrowInvalid as exc:
        raise _parse_error(source, text(), delimiter, names, header_lines, quoting, exc,
                           shown_delimiter or delimiter) from None
    where = validate.RowLocator(source.name, text, header_lines, {n: i + 1 for i, n in enumerate(names)})
    return _interactions(table, mapping, where, time_unit)


def _interactions(table: pa.Table, mapping: dict, where: validate.RowLocator, time_unit: Optional[str]) -> Interactions:
    if table.num_rows == 0:
        raise DataError("no interactions in the file (only a header or blank lines)", where.source_name)
    raw = Interactions(users=validate.ids(table.column(mapping["user"]), "user", where),
                       items=validate.ids(table.column(mapping["item"]), "item", where),
                       timestamps=np.zeros(0, np.int64), name="", format="")
    if RATING in mapping:
        raw.ratings = validate.ratings(table.column(mapping[RATING]), mapping[RATING], where)
    return _with_times(raw, validate.times(table.column(mapping["timestamp"]), "timestamp", where, time_unit))


def _with_times(raw: Interactions, times: validate.EventTimes) -> Interactions:
    raw.timestamps, raw.subsecond = times.seconds, times.subsecond
    raw.time_unit, raw.time_unit_source = times.unit, times.unit_source
    return raw


def _parse_error(source, data, delimiter, names, header_lines, quoting, exc, shown) -> DataError:
    if "UTF8" in str(exc) or "UTF-8" in str(exc):
        line_no, text = validate.first_non_utf8_line(data)
        return DataError("not UTF-8 text; save the file as UTF-8", source.name, line=line_no, line_text=text)
    bad = validate.first_bad_field_count(data, delimiter, len(names), header_lines, quoting)
    if bad is None:
        return DataError(f"cannot parse ({exc})", source.name)
    line_no, text, count = bad
    message = (f"expected {len(names)} fields ({', '.join(names)}) separated by {shown!r}, got {count}")
    if line_no == data.count(b"\n") + 1 and not data.endswith(b"\n"):
        message += "; the file ends mid-line (truncated?)"
    return DataError(message, source.name, line=line_no, line_text=text)


def _check_not_empty(source: Source) -> None:
    limit = 1 << 16
    head = source.head(limit)
    if len(head) < limit and not head.strip():
        raise DataError("file is empty; expected interactions (user, item, timestamp)", source.name)


def _nonempty_bytes(source: Source) -> bytes:
    data = check_encoding(source.read_bytes(), source.name)
    if not data or data.isspace():
        raise DataError("file is empty; expected interactions (user, item, timestamp)", source.name)
    return data


def parse_columns(text: str) -> dict:
    """'user=uid,item=iid,timestamp=ts' -> {'user': 'uid', ...}; whole numbers are 0-based positions (header-less
    CSV). The text form of `columns` used by the command line (--columns) and config files.

    Raises:
        DataError: a part that is not role=column.
    """
    mapping = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise DataError(f"columns: expected role=column pairs like user=uid,item=iid,timestamp=ts, got {part!r}")
        mapping[key.strip()] = int(value) if value.strip().isdigit() else value.strip()
    return mapping


def _check_mapping(columns) -> Optional[dict]:
    if not columns:
        return None
    if isinstance(columns, str):
        columns = parse_columns(columns)
    unknown = set(columns) - set(ROLES) - {RATING}
    missing = set(ROLES) - set(columns)
    if unknown or missing:
        raise DataError(f"the column mapping must name exactly {', '.join(ROLES)} (and optionally {RATING}); got "
                        f"{sorted(columns)}")
    return dict(columns)


def _with_rating(mapping: dict, names: list, source: Source, wanted: bool) -> dict:
    """The column mapping with the rating column when a threshold needs one (the mapping's, else the first header
    name among ALIASES["rating"]); without a threshold, the mapping without it: ratings are then never parsed.

    Raises:
        DataError: a threshold is given and the file has no rating column.
    """
    if not wanted:
        return {role: column for role, column in mapping.items() if role != RATING}
    if RATING in mapping:
        return mapping
    lower = {str(n).lower(): n for n in names}
    found = next((lower[a] for a in ALIASES[RATING] if a in lower), None)
    if found is None:
        raise DataError(f"no rating column among {names} (expected one of {ALIASES[RATING]}), so min_rating cannot "
                        f"apply; name it with columns={{..., 'rating': ...}} (Python) or --columns ...,rating=R "
                        "(command line), or leave min_rating unset", source.name, line=1)
    return {**mapping, RATING: found}


def _require_columns(mapping: dict, names: list, source: Source) -> None:
    for role in mapping:
        if mapping[role] not in names:
            raise DataError(f"no {role} column {mapping[role]!r}; the file has columns {names}; {COLUMNS_HINT}",
                            source.name, line=1)


def _mapping_from_aliases(names: list, source: Source) -> dict:
    lower = {n.lower(): n for n in names}
    mapping = {}
    for role in ROLES:
        found = next((lower[a] for a in ALIASES[role] if a in lower), None)
        if found is None:
            raise DataError(f"cannot find a {role} column among {names}; expected one of {ALIASES[role]} or "
                            f"{COLUMNS_HINT}", source.name, line=1)
        mapping[role] = found
    return mapping


def _sniff_delimiter(first_line: str, source: Source) -> str:
    counts = {d: first_line.count(d) for d in (",", "\t", ";", "|")}
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        raise DataError("cannot find the delimiter of this CSV file (tried , tab ; |)", source.name, line=1)
    return best


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _lines(source: Source) -> list:
    data = _nonempty_bytes(source)
    lines = data.split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise DataError("blank line; expected 'user_id value_1 value_2 ...'", source.name, line=number)
    return lines


def _check_pair_lines(item_tokens, time_tokens, item_source, time_source) -> None:
    for number, (items, times) in enumerate(zip(item_tokens, time_tokens), start=1):
        user = items[0].decode(errors="replace")
        if items[0] != times[0]:
            raise DataError(f"user {user!r} in {item_source.basename} but {times[0].decode(errors='replace')!r} in "
                            f"{time_source.basename}; expected the same user on the same line",
                            time_source.name, line=number, column=1)
        if len(items) != len(times):
            message = (f"user {user!r} has {len(items) - 1} items in {item_source.basename} but "
                       f"{len(times) - 1} timestamps in {time_source.basename}; expected equal lengths")
            shorter = item_source if len(items) < len(times) else time_source
            if number == len(item_tokens) and not shorter.read_bytes().endswith(b"\n"):
                message += f"; {shorter.basename} ends mid-line (truncated?)"
            raise DataError(message, shorter.name, line=number, column=min(len(items), len(times)) + 1)
