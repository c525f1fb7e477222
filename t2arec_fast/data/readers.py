"""Readers: one function per file format, each returning Interactions (raw ids, int64 seconds, file order).

Text formats are parsed by pyarrow's multi-threaded CSV reader; every value is then checked in whole-array passes
(validate.py), which also turns a bad row into "file, line, column: what was expected".
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from . import validate
from .errors import DataError
from .preprocess import Interactions
from .sources import Source, canonical_format, resolve

ROLES = ("user", "item", "timestamp")
# header names recognised without a column mapping (lower case); MovieLens, RecBole and common spellings
ALIASES = {
    "user": ("user_id", "userid", "user", "uid", "visitorid", "customer_id", "reviewerid"),
    "item": ("item_id", "itemid", "item", "movieid", "movie_id", "iid", "product_id", "productid", "business_id",
             "asin"),
    "timestamp": ("timestamp", "ts", "time", "unix_time", "unixreviewtime", "datetime", "date"),
}
MOVIELENS_COLUMNS = ["user", "item", "rating", "timestamp"]


def read_interactions(path: Union[str, Path], format: Optional[str] = None,
                      columns: Optional[dict] = None) -> Interactions:
    """Read a file, folder or archive into Interactions. `columns` maps user/item/timestamp to column names (or
    0-based positions for header-less CSV) where the names are not the usual ones."""
    path = Path(path).expanduser()
    fmt, sources = resolve(path, canonical_format(format))
    name = dataset_name(path, sources)
    reader = {"recbole": read_recbole, "movielens-tab": read_movielens_tab, "movielens-dat": read_movielens_dat,
              "csv": read_csv, "parquet": read_parquet, "seq-pair": read_sequence_pair}[fmt]
    raw = reader(*sources, columns=_check_mapping(columns))
    raw.name, raw.format, raw.files = name, fmt, sorted({s.path for s in sources})
    if len(raw) == 0:
        raise DataError("no interactions in the file (only a header or blank lines)", sources[0].name)
    return raw


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
def read_movielens_tab(source: Source, columns=None) -> Interactions:
    """GroupLens `u.data`: user, item, rating, timestamp separated by tabs, no header."""
    _check_not_empty(source)
    return _read_delimited(source, "\t", MOVIELENS_COLUMNS, header_lines=0, quoting=False,
                           mapping=columns or {r: r for r in ROLES})


def read_movielens_dat(source: Source, columns=None) -> Interactions:
    """GroupLens `ratings.dat`: user::item::rating::timestamp. The two-character separator becomes one for pyarrow."""
    data = _nonempty_bytes(source).replace(b"::", b"\x1f")
    return _read_delimited(source, "\x1f", MOVIELENS_COLUMNS, header_lines=0, quoting=False,
                           mapping=columns or {r: r for r in ROLES}, data=data, shown_delimiter="::")


def read_recbole(source: Source, columns=None) -> Interactions:
    """RecBole atomic `.inter`: tab-separated, typed header `user_id:token item_id:token ... timestamp:float`."""
    _check_not_empty(source)
    header = source.first_line().split("\t")
    untyped = [h for h in header if ":" not in h]
    if untyped:
        raise DataError(f"expected a RecBole typed header such as 'user_id:token<TAB>item_id:token<TAB>"
                        f"timestamp:float', got field {untyped[0]!r}", source.name, line=1)
    names = [h.split(":", 1)[0] for h in header]
    mapping = columns or {"user": "user_id", "item": "item_id", "timestamp": "timestamp"}
    return _read_delimited(source, "\t", names, header_lines=1, quoting=False, mapping=mapping)


def read_csv(source: Source, columns=None) -> Interactions:
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
                               mapping=mapping)
    mapping = columns or _mapping_from_aliases(fields, source)
    return _read_delimited(source, delimiter, fields, header_lines=1, quoting=True, mapping=mapping)


def read_parquet(source: Source, columns=None) -> Interactions:
    import pyarrow.parquet as pq
    try:
        handle = pa.BufferReader(source.read_bytes()) if source.compressed else str(source.path)
        parquet = pq.ParquetFile(handle)
        names = parquet.schema_arrow.names
        mapping = columns or _mapping_from_aliases(names, source)
        _require_columns(mapping, names, source)
        table = parquet.read(columns=list(dict.fromkeys(mapping.values())))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"not a readable Parquet file ({exc})", source.name) from None
    where = validate.RowLocator(source.name, None, 0, {n: i + 1 for i, n in enumerate(names)})
    return _interactions(table, mapping, where)


def read_sequence_pair(item_source: Source, time_source: Source, columns=None) -> Interactions:
    """`<name>_item_*.txt` + `<name>_time_*.txt`: line k of each is `user_id v_1 ... v_n` / `user_id t_1 ... t_n`."""
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
    users = np.array([t[0] for t in item_tokens])
    items = np.array([v for t in item_tokens for v in t[1:]])
    times = np.array([v for t in time_tokens for v in t[1:]])
    timestamps = _token_seconds(times, counts, time_source, time_lines)
    return Interactions(users=_ids_from_tokens(np.repeat(users, counts)), items=_ids_from_tokens(items),
                        timestamps=timestamps, name="", format="seq-pair")


# -- shared helpers ------------------------------------------------------------------------------------------------
def _read_delimited(source: Source, delimiter: str, names: list, header_lines: int, quoting: bool, mapping: dict,
                    data: Optional[bytes] = None, shown_delimiter: Optional[str] = None) -> Interactions:
    """Parse with pyarrow (from `data` if given, else straight from the file); errors re-read the text lazily."""
    _require_columns(mapping, names, source)
    wanted = list(dict.fromkeys(mapping.values()))
    text = (lambda: data) if data is not None else source.read_bytes
    try:
        table = pacsv.read_csv(
            pa.BufferReader(data) if data is not None else source.arrow_input(),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=header_lines, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoting else False),
            convert_options=pacsv.ConvertOptions(include_columns=wanted))
    except pa.ArrowInvalid as exc:
        raise _parse_error(source, text(), delimiter, names, header_lines, quoting, exc,
                           shown_delimiter or delimiter) from None
    where = validate.RowLocator(source.name, text, header_lines, {n: i + 1 for i, n in enumerate(names)})
    return _interactions(table, mapping, where)


def _interactions(table: pa.Table, mapping: dict, where: validate.RowLocator) -> Interactions:
    if table.num_rows == 0:
        raise DataError("no interactions in the file (only a header or blank lines)", where.source_name)
    return Interactions(users=validate.ids(table.column(mapping["user"]), "user", where),
                        items=validate.ids(table.column(mapping["item"]), "item", where),
                        timestamps=validate.seconds(table.column(mapping["timestamp"]), "timestamp", where),
                        name="", format="")


def _parse_error(source, data, delimiter, names, header_lines, quoting, exc, shown) -> DataError:
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
    data = source.read_bytes()
    if not data or data.isspace():
        raise DataError("file is empty; expected interactions (user, item, timestamp)", source.name)
    return data


def _check_mapping(columns: Optional[dict]) -> Optional[dict]:
    if columns is None:
        return None
    unknown = set(columns) - set(ROLES)
    missing = set(ROLES) - set(columns)
    if unknown or missing:
        raise DataError(f"columns= must map exactly {', '.join(ROLES)} to column names; "
                        f"got {sorted(columns)}")
    return dict(columns)


def _require_columns(mapping: dict, names: list, source: Source) -> None:
    for role in ROLES:
        if mapping[role] not in names:
            raise DataError(f"no {role} column {mapping[role]!r}; the file has columns {names}; pass "
                            "columns={'user': ..., 'item': ..., 'timestamp': ...} to name them",
                            source.name, line=1)


def _mapping_from_aliases(names: list, source: Source) -> dict:
    lower = {n.lower(): n for n in names}
    mapping = {}
    for role in ROLES:
        found = next((lower[a] for a in ALIASES[role] if a in lower), None)
        if found is None:
            raise DataError(f"cannot find a {role} column among {names}; expected one of {ALIASES[role]} or pass "
                            "columns={'user': ..., 'item': ..., 'timestamp': ...}", source.name, line=1)
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
        if items[0] != times[0]:
            raise DataError(f"user {items[0].decode()!r} in {item_source.basename} but {times[0].decode()!r} in "
                            f"{time_source.basename}; expected the same user on the same line",
                            time_source.name, line=number, column=1)
        if len(items) != len(times):
            message = (f"user {items[0].decode()!r} has {len(items) - 1} items in {item_source.basename} but "
                       f"{len(times) - 1} timestamps in {time_source.basename}; expected equal lengths")
            shorter = item_source if len(items) < len(times) else time_source
            if number == len(item_tokens) and not shorter.read_bytes().endswith(b"\n"):
                message += f"; {shorter.basename} ends mid-line (truncated?)"
            raise DataError(message, shorter.name, line=number, column=min(len(items), len(times)) + 1)


def _token_seconds(tokens: np.ndarray, counts: np.ndarray, source: Source, lines: list) -> np.ndarray:
    """int64 seconds from byte-string tokens; on failure name the line and column (field) of the first bad one."""
    expected = "expected whole unix seconds (a non-negative integer)"
    try:
        values = tokens.astype(np.int64)
        problems = {"is negative": values < 0}
    except ValueError:
        try:
            floats = tokens.astype(np.float64)
        except ValueError:
            bad = next(i for i, token in enumerate(tokens) if not _is_number(token))
            raise _token_error(bad, "is not a number", expected, tokens, counts, source, lines) from None
        finite = np.isfinite(floats)
        problems = {"is NaN or infinite": ~finite, "has a fraction of a second": floats != np.floor(floats),
                    "is negative": floats < 0}
        values = np.where(finite, floats, 0).astype(np.int64)
    for what, mask in problems.items():
        if mask.any():
            raise _token_error(int(np.flatnonzero(mask)[0]), what, expected, tokens, counts, source, lines)
    return values


def _token_error(bad: int, what: str, expected: str, tokens, counts, source, lines) -> DataError:
    ends = np.cumsum(counts)
    line_index = int(np.searchsorted(ends, bad, side="right"))
    first_of_line = int(ends[line_index - 1]) if line_index else 0
    column = bad - first_of_line + 2  # fields are 1-based and field 1 is the user id
    token = tokens[bad].decode(errors="replace")
    return DataError(f"timestamp {token!r} {what}; {expected}", source.name, line=line_index + 1, column=column,
                     line_text=lines[line_index])


def _ids_from_tokens(tokens: np.ndarray) -> pa.Array:
    """Integer ids when every token is an integer, else strings."""
    try:
        return pa.array(tokens.astype(np.int64))
    except ValueError:
        return pa.array(tokens.astype(str))
