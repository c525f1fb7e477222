"""`t2arec data ...`: look at data sets."""
from __future__ import annotations

import argparse

from .common import DATASET_HELP, reader_options, reader_settings, write_json


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect data sets", description="Inspect data sets.")
    commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    commands.required = True
    stats = commands.add_parser(
        "stats", help="load a data set and print its statistics",
        description="Load a data set (reader, k-core, id maps) and print its statistics: users, items, "
                    "interactions, history lengths, sparsity, time span, share of zero gaps, how long after the "
                    "previous event each user's last event comes (request-gap bins), sha256 of the input.",
        parents=[reader_options()], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    stats.add_argument("dataset", metavar="DATASET", help=DATASET_HELP)
    stats.add_argument("--json", metavar="PATH", help="also write the statistics as JSON to PATH")
    stats.set_defaults(func=run_stats)


def run_stats(args) -> int:
    from t2arec_fast.config import DataConfig
    from t2arec_fast.data import format_stats, load_dataset
    settings = {"min_count": DataConfig.min_count, **reader_settings(args)}
    ds = load_dataset(args.dataset, verbose=False, **settings)
    stats = ds.stats()
    print(f"{ds.name}: {stats['users']:,} users, {stats['items']:,} items, {stats['interactions']:,} interactions")
    print(format_stats(stats))
    write_json(args.json, stats)
    return 0
