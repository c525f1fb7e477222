"""Input files: where they are, how to read their bytes (compressed or inside a zip), which format they hold.

Format detection works on names first (`u.data`, `ratings.dat`, `*.inter`, `<name>_item_*.txt` ...) and falls back
to sniffing the first line, so a renamed file still loads. An explicit `format=` always wins.
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

from .errors import DataError

# canonical format names, and the spellings users may pass as format=
FORMATS = ("recbole", "movielens-tab", "movielens-dat", "csv", "parquet", "seq-pair")
FORMAT_ALIASES = {
    "recbole": "recbole", "inter": "recbole", "atomic": "recbole",
    "movielens-tab": "movielens-tab", "u.data": "movielens-tab", "ml-100k": "movielens-tab", "udata": "movielens-tab",
    "movielens-dat": "movielens-dat", "ratings.dat": "movielens-dat", "ml-1m": "movielens-dat", "dat": "movielens-dat",
    "csv": "csv", "tsv": "csv", "movielens-csv": "csv", "ratings.csv": "csv",
    "parquet": "parquet", "pq": "parquet",
    "seq-pair": "seq-pair", "sequence-pair": "seq-pair", "seq": "seq-pair",
}
_DECOMPRESS = {".gz": gzip.decompress, ".bz2": bz2.decompress, ".xz": lzma.decompress}
_PAIR_NAME = re.compile(r"^(?P<stem>.+)_(?P<kind>item|time)_(?P<rest>.*)\.txt$", re.IGNORECASE)


@dataclass(frozen=True)
class Source:
    """One input file on disk, possibly compressed (.gz/.bz2/.xz) or a member of a .zip archive."""
    path: Path
    member: Optional[str] = None

    @property
    def name(self) -> str:
        """How errors name this file: `data/ml-100k.zip:ml-100k/u.data` for an archive member."""
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    @property
    def basename(self) -> str:
        """The inner file name, without folders and compression suffix: what format detection looks at."""
        name = PurePosixPath(self.member).name if self.member else self.path.name
        suffix = Path(name).suffix.lower()
        return name[: -len(suffix)] if suffix in _DECOMPRESS else name

    @property
    def compressed(self) -> bool:
        """True for a .gz/.bz2/.xz file or a zip member: its bytes must be read (and inflated) before parsing."""
        return self.member is not None or self.path.suffix.lower() in _DECOMPRESS

    def arrow_input(self):
        """A pyarrow input: the file memory-mapped when plain (no copy), else its decompressed bytes."""
        import pyarrow as pa
        return pa.BufferReader(self.read_bytes()) if self.compressed else pa.memory_map(str(self.path))

    def head(self, limit: int = 1 << 16) -> bytes:
        """The first `limit` bytes of the (decompressed) content, without reading the whole file; a UTF-8 byte
        order mark is left out (pyarrow skips it too).

        Raises:
            DataError: a damaged compressed file, or UTF-16 text (which no reader here parses).
        """
        if self.member:
            with zipfile.ZipFile(self.path) as archive, archive.open(self.member) as handle:
                return check_encoding(handle.read(limit), self.name)
        opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(self.path.suffix.lower(), open)
        try:
            with opener(self.path, "rb") as handle:
                return check_encoding(handle.read(limit), self.name)
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise DataError(f"cannot decompress ({exc}); the file is damaged or not {self.path.suffix}",
                            self.name) from None

    def first_line(self) -> str:
        """The content's first line as text (undecodable bytes replaced), without its line end.

        Raises:
            DataError: as `head`.
        """
        return self.head().split(b"\n", 1)[0].decode("utf-8", errors="replace").rstrip("\r")

    def read_bytes(self) -> bytes:
        """The whole (decompressed) content.

        Raises:
            DataError: a damaged compressed file.
        """
        if self.member:
            with zipfile.ZipFile(self.path) as archive:
                return archive.read(self.member)
        raw = self.path.read_bytes()
        decompress = _DECOMPRESS.get(self.path.suffix.lower())
        if decompress is None:
            return raw
        try:
            return decompress(raw)
        except (OSError, EOFError, ValueError, lzma.LZMAError) as exc:
            raise DataError(f"cannot decompress ({exc}); the file is damaged or not {self.path.suffix}",
                            self.name) from None


UTF8_BOM = b"\xef\xbb\xbf"


def check_encoding(data: bytes, name: str) -> bytes:
    """`data` without a UTF-8 byte order mark.

    Raises:
        DataError: UTF-16 text (as Excel's "Unicode text" writes), naming the file.
    """
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError("the file is UTF-16 text; save it as UTF-8 (or plain ASCII) text", name)
    return data[len(UTF8_BOM):] if data.startswith(UTF8_BOM) else data


def canonical_format(format: Optional[str]) -> Optional[str]:
    """The canonical name of a format= spelling (FORMAT_ALIASES: "u.data" → "movielens-tab"); None stays None.

    Raises:
        DataError: an unknown format, listing the known ones.
    """
    if format is None:
        return None
    canonical = FORMAT_ALIASES.get(format.lower())
    if canonical is None:
        raise DataError(f"unknown format {format!r}; known formats: {', '.join(FORMATS)} (or 'synthetic')")
    return canonical


def resolve(path: Path, format: Optional[str] = None) -> tuple[str, list[Source]]:
    """The format and the file(s) to read for a user-given path (file, folder or .zip archive); docs/data.md.

    Raises:
        DataError: a missing or empty path, no or several candidate files in a folder or archive, a bad archive,
            a sequence-pair file without its partner, or a file whose format cannot be told.
    """
    if not path.exists():
        raise DataError("file or folder not found", path)
    if path.is_dir():
        return _pick([Source(p) for p in sorted(path.iterdir()) if p.is_file()], path, format)
    if path.stat().st_size == 0:
        raise DataError("file is empty; expected interactions (user, item, timestamp)", path)
    if path.suffix.lower() == ".zip":
        return _pick(_zip_members(path), path, format)
    source = Source(path)
    fmt = format or format_from_name(source.basename) or sniff_format(source)
    if fmt == "seq-pair":
        return fmt, _pair_of(source)
    return fmt, [source]


def format_from_name(basename: str) -> Optional[str]:
    """The format a file name implies (`*.inter`, `u.data`, `ratings.dat`, pairs, `*.parquet`, `*.csv`), or None."""
    lower = basename.lower()
    if lower.endswith(".inter"):
        return "recbole"
    if lower == "u.data":
        return "movielens-tab"
    if lower == "ratings.dat":
        return "movielens-dat"
    if _PAIR_NAME.match(basename):
        return "seq-pair"
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith((".csv", ".tsv")):
        return "csv"
    return None


def sniff_format(source: Source) -> str:
    """Guess the format of a file with an unknown name from its first line.

    Raises:
        DataError: nothing recognisable; the message says how to name the format.
    """
    head = source.head()
    if head[:4] == b"PAR1":
        return "parquet"
    first = head.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    if ":token" in first or ":float" in first:
        return "recbole"
    if "::" in first:
        return "movielens-dat"
    fields = first.split("\t")
    if len(fields) == 4 and all(f.strip().lstrip("-").replace(".", "", 1).isdigit() for f in fields):
        return "movielens-tab"
    if "," in first or ";" in first:
        return "csv"
    raise DataError("unknown format: cannot tell from the name or the first line what this file holds; "
                    f"name it with format= (Python) or --format (command line), one of {', '.join(FORMATS)}",
                    source.name)


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 4 MiB blocks), for the statistics' provenance."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


# -- choosing the interaction file among several (folder or archive) ----------------------------------------------
_PRIORITY = (  # (format, test on the lower-case basename); earlier rows win
    ("recbole", lambda n: n.endswith(".inter")),
    ("movielens-tab", lambda n: n == "u.data"),
    ("movielens-dat", lambda n: n == "ratings.dat"),
    ("csv", lambda n: n == "ratings.csv"),
    ("seq-pair", lambda n: bool(_PAIR_NAME.match(n)) and "_item_" in n),
    ("parquet", lambda n: n.endswith((".parquet", ".pq"))),
    ("csv", lambda n: n.endswith((".csv", ".tsv"))),
)


def _pick(candidates: list[Source], where: Path, format: Optional[str]) -> tuple[str, list[Source]]:
    for fmt, matches in _PRIORITY:
        if format is not None and fmt != format:
            continue
        found = [s for s in candidates if matches(s.basename.lower())]
        if len(found) > 1:
            names = ", ".join(s.basename for s in found)
            raise DataError(f"several candidate interaction files ({names}); name the file to load", where)
        if found:
            return fmt, (_pair_of(found[0], candidates) if fmt == "seq-pair" else found)
    expected = "*.inter, u.data, ratings.dat, ratings.csv, <name>_item_*.txt + <name>_time_*.txt, *.csv, *.parquet"
    if format is not None:
        expected = f"a {format} file"
    raise DataError(f"no interaction file found; expected one of: {expected}", where)


def _zip_members(path: Path) -> list[Source]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [info.filename for info in archive.infolist() if not info.is_dir()]
    except zipfile.BadZipFile as exc:
        raise DataError(f"not a readable zip archive ({exc})", path) from None
    return [Source(path, name) for name in names]


def _pair_of(source: Source, candidates: Optional[list[Source]] = None) -> list[Source]:
    """[item file, time file] for either file of a `<name>_item_<x>.txt` / `<name>_time_<x>.txt` pair."""
    match = _PAIR_NAME.match(source.basename)
    if match is None:
        raise DataError("expected a sequence-pair file named <name>_item_<x>.txt or <name>_time_<x>.txt",
                        source.name)
    other_kind = "time" if match["kind"].lower() == "item" else "item"
    partner_name = f"{match['stem']}_{other_kind}_{match['rest']}.txt"
    if candidates is None:
        suffix = source.path.name[len(source.basename):]  # keep a .gz/.bz2/.xz suffix
        partner = Source(source.path.with_name(partner_name + suffix))
        exists = partner.path.is_file()
    else:
        partner = next((c for c in candidates if c.basename == partner_name), None)
        exists = partner is not None
    if not exists:
        raise DataError(f"the matching {other_kind} file {partner_name} is missing; a sequence pair needs both "
                        "<name>_item_<x>.txt and <name>_time_<x>.txt", source.name)
    return [source, partner] if other_kind == "time" else [partner, source]
