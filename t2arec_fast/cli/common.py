"""Helpers shared by CLI command modules."""
from __future__ import annotations

import argparse
from pathlib import Path


class UserError(Exception):
    """An error the user can fix (bad input, bad option). Printed without a traceback."""


def user_error_types() -> tuple:
    """Exception types that mean bad input rather than a bug: shown as one line, exit code 2. OSError covers paths
    the user names that cannot be read or written (a folder given as --json, no permission, a full disk)."""
    from t2arec_fast.config import ConfigError
    from t2arec_fast.data.errors import DataError
    from t2arec_fast.errors import InputError, StoreError    # StoreError: Redis unreachable or unreadable
    from t2arec_fast.optional import MissingExtraError
    return (UserError, ConfigError, DataError, InputError, StoreError, MissingExtraError, OSError)


def checkpoint_dir(path) -> Path:
    """The checkpoint folder a command was given: `path` itself, or `path`/best for a `t2arec train --out` folder.

    Raises:
        UserError: neither holds a config.json (naming both places looked at).
    """
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    if (path / "best" / "config.json").is_file():
        return path / "best"
    raise UserError(f"{path}: not a checkpoint (no config.json here or in {path / 'best'})")


def write_json(path, payload) -> None:
    """Write `payload` as strict JSON to `path` (t2arec_fast.json_io: NaN → null); nothing when path is None."""
    if path is not None:
        from t2arec_fast.json_io import write_json as write
        write(path, payload)


# -- the data set reader options: one definition for every command that reads a data set -------------------------------
TIME_UNITS = ("auto", "s", "ms", "us", "ns")
DATASET_HELP = ("a file (.inter, u.data, ratings.dat, ratings.csv, .csv, .parquet, <name>_item_*.txt; may be .gz, "
                ".bz2, .xz or a .zip archive), a folder holding one, or synthetic[:key=value,...]")


def reader_options(min_count: bool = True) -> argparse.ArgumentParser:
    """--format, --columns, --time-unit, --min-rating (and --min-count where a data set is built), as an argparse
    parent.

    Defaults are None so that a YAML config or a checkpoint's saved settings apply unless the option is given.
    """
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("data set reader (docs/data.md)")
    group.add_argument("--format", default=None, metavar="F",
                       help="force a reader: recbole, movielens-tab, movielens-dat, csv, parquet, seq-pair "
                            "(default: detect from the name and first line)")
    group.add_argument("--columns", default=None, metavar="user=U,item=I,timestamp=T",
                       help="column names (or 0-based positions) of a CSV/Parquet file whose columns are not named "
                            "as usual")
    group.add_argument("--time-unit", default=None, choices=TIME_UNITS,
                       help="unit of numeric timestamps (default auto: detected from their magnitude)")
    group.add_argument("--min-rating", type=float, default=None, metavar="R",
                       help="keep only interactions rated R or more (before the k-core; RecBole's val_interval "
                            "rating \"[R,inf)\"); needs a rating column (default: keep every interaction)")
    if min_count:
        group.add_argument("--min-count", type=int, default=None, metavar="N",
                           help="iterative k-core: keep users and items with at least N interactions (default 10)")
    return parent


def reader_settings(args) -> dict:
    """The reader options given on the command line, as config keys (data section); aliases of --format resolved."""
    from t2arec_fast.config import check_value
    from t2arec_fast.data.sources import canonical_format
    settings = {key: getattr(args, key, None) for key in ("format", "columns", "time_unit", "min_count",
                                                           "min_rating")}
    settings = {key: value for key, value in settings.items() if value is not None}
    if "format" in settings and settings["format"].lower() != "synthetic":
        settings["format"] = canonical_format(settings["format"])
    for key, value in settings.items():              # the config's ranges and choices, also for `data stats`
        check_value(key, value)
    return settings


def split_overrides(parser: argparse.ArgumentParser, tokens: list) -> tuple[list, list]:
    """(tokens for `parser`, config settings): any --option the parser does not define is a config setting, as
    `--key=value` or `--key value` (config.parse_overrides reads them), wherever it stands among the arguments."""
    from t2arec_fast.config import override_takes_next
    known = parser._option_string_actions            # argparse's own table of option strings
    kept, settings, i = [], [], 0
    while i < len(tokens):
        token = tokens[i]
        name = token.split("=", 1)[0]
        if name in known:
            taken = 0 if "=" in token else _values_taken(known[name], tokens[i + 1:])
            kept += tokens[i:i + 1 + taken]
            i += 1 + taken
        elif token.startswith("--") and len(token) > 2:
            taken = "=" not in token and override_takes_next(name[2:], tokens[i + 1] if i + 1 < len(tokens) else None)
            settings += tokens[i:i + 1 + taken]
            i += 1 + taken
        else:
            kept.append(token)
            i += 1
    return kept, settings


def _values_taken(action: argparse.Action, following: list) -> int:
    if action.nargs == 0:
        return 0
    if action.nargs in (None, 1):
        return min(1, len(following))
    count = 0                                        # "*", "+", "?": values up to the next option
    while count < len(following) and not following[count].startswith("-"):
        count += 1
    return count if action.nargs != "?" else min(count, 1)
