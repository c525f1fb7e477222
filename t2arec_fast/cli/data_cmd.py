"""`t2arec data ...`: look at data sets."""
from __future__ import annotations

import argparse

from .common import UserError, write_json

DATASET_HELP = ("a file (.inter, u.data, ratings.dat, ratings.csv, .csv, .parquet, <name>_item_*.txt; may be .gz, "
                ".bz2, .xz or a .zip archive), a folder holding one, or synthetic[:key=value,...]")


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect data sets", description="Inspect data sets.")
    commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    commands.required = True
    stats = commands.add_parser(
        "stats", help="load a data set and print its statistics",
        description="Load a data set (reader, k-core, id maps) and print its statistics: users, items, "
                    "interactions, history lengths, sparsity, time span, share of zero gaps, how long after the "
                    "previous event each user's last event comes (request-gap bins), sha256 of the input.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataset_arguments(stats)
    stats.add_argument("--json", metavar="PATH", help="also write the statistics as JSON to PATH")
    stats.set_defaults(func=run_stats)


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """DATASET, --format, --min-count, --columns, --time-unit: shared by every command that loads data."""
    parser.add_argument("dataset", metavar="DATASET", help=DATASET_HELP)
    parser.add_argument("--format", default=None,
                        help="force a reader: recbole, movielens-tab, movielens-dat, csv, parquet, seq-pair "
                             "(default: detect from the name and first line)")
    parser.add_argument("--min-count", type=int, default=10, metavar="N",
                        help="iterative k-core: keep users and items with at least N interactions")
    parser.add_argument("--columns", default=None, metavar="user=U,item=I,timestamp=T",
                        help="column names of a CSV/Parquet file whose columns are not named as usual")
    parser.add_argument("--time-unit", default=None, metavar="UNIT",
                        help="unit of numeric timestamps: s, ms, us, ns (default: detected from their magnitude)")


def load_from_args(args, verbose: bool = False):
    from t2arec_fast.data import load_dataset
    return load_dataset(args.dataset, format=args.format, min_count=args.min_count, columns=args.columns,
                        time_unit=args.time_unit, verbose=verbose)


def run_stats(args) -> int:
    from t2arec_fast.data import format_stats
    ds = load_from_args(args)
    stats = ds.stats()
    print(f"{ds.name}: {stats['users']:,} users, {stats['items']:,} items, {stats['interactions']:,} interactions")
    print(format_stats(stats))
    write_json(args.json, stats)
    return 0
