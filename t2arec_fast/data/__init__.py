"""Data: readers for real interaction files, the synthetic interest-shift generator, preprocessing, splits, batches.

    ds = load_dataset("data/ml-100k")                        # file, folder, archive or "synthetic[:key=value,...]"
    split = leave_one_out(ds)
    for batch in train_batches(split, max_len=ds.default_max_len, batch_size=256): ...
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Union

from .batches import Batch, Batches, eval_batches, gather, train_batches, training_windows
from .dataset import SequenceDataset
from .errors import DataError
from .id_maps import ItemIdMap, UserIdMap
from .preprocess import Interactions, build_dataset
from .split import EvalPart, Split, global_time_split, leave_one_out, make_split, time_segments
from .stats import CONTENT_KEYS, format_stats

__all__ = ["load_dataset", "SequenceDataset", "Batch", "Batches", "DataError", "Interactions", "Split", "EvalPart",
           "leave_one_out", "global_time_split", "make_split", "train_batches", "eval_batches", "training_windows",
           "gather", "time_segments", "build_dataset", "format_stats", "CONTENT_KEYS", "ItemIdMap", "UserIdMap",
           "load_dataset_from_config", "READER_KEYS"]


def load_dataset(path_or_spec: Union[str, Path], format: Optional[str] = None, min_count: int = 10,
                 columns: Union[dict, str, None] = None, time_unit: Optional[str] = None,
                 id_maps: Optional[dict] = None, unknown_ids: str = "error", verbose: bool = True,
                 tie_order: str = "file", min_rating: Optional[float] = None) -> SequenceDataset:
    """Load a data set: a file, a folder holding a known file, a .zip archive, or `synthetic[:key=value,...]`.

    format:    force a reader (recbole, movielens-tab, movielens-dat, csv, parquet, seq-pair); None = detect.
    min_count: iterative k-core on users and items (the paper uses 10; 0 or 1 keeps everything).
    columns:   {"user": ..., "item": ..., "timestamp": ...} column names for CSV/Parquet files with other names
               (or the text form "user=uid,item=iid,timestamp=ts"; whole numbers are positions).
    time_unit: unit of numeric timestamps in the file: "s", "ms", "us", "ns"; None or "auto" detects it from the
               magnitude of the values (docs/data.md). The data set is in int64 seconds either way;
               `ds.meta["time_unit"]` and the statistics say which unit was read.
    id_maps:   a model's saved id maps (`model.id_maps`): number users and items as the model does, so that a new
               or edited file is read the way the model was trained (evaluation); see build_dataset.
    unknown_ids: with id_maps, "error" (default) refuses events whose ids the model does not know, "drop" drops
               them (counted in `ds.meta["unknown_ids"]`).
    verbose:   print the statistics table.
    tie_order: order of a user's events with equal timestamps: "file" (as read), "item", "reversed", "random"
               (data/ties.py; on day-resolution data it decides which item is the valid and test target).
    min_rating: keep only events rated at least this, BEFORE the k-core (RecBole's ml-1m_seq recipe,
               `val_interval: {rating: "[3,inf)"}`, is min_rating=3); None (default) keeps every event. Needs a
               rating column (docs/data.md, "Ratings"); `ds.meta` records the threshold and the rows it dropped.

    Ids are tokens: distinct ids in the file stay distinct (docs/data.md, "Ids").

    Raises:
        DataError: unreadable or invalid input (naming file, line and column), nothing left after the k-core, or
            min_rating for data without ratings.
    """
    spec = str(path_or_spec)
    if spec == "synthetic" or spec.startswith("synthetic:") or (format or "").lower() == "synthetic":
        if min_rating is not None:
            raise DataError("synthetic data has no ratings, so min_rating cannot apply; leave it unset", spec)
        from .synthetic import from_spec
        ds = from_spec(spec if spec.startswith("synthetic") else f"synthetic:{spec}", min_count=min_count)
    else:
        from .readers import read_interactions
        raw = read_interactions(path_or_spec, format=format, columns=columns, time_unit=time_unit,
                                min_rating=min_rating)
        ds = build_dataset(raw, min_count=min_count, id_maps=id_maps, unknown_ids=unknown_ids)
    if tie_order != "file":
        from .ties import TIE_ORDERS, reorder_ties
        if tie_order not in TIE_ORDERS:
            raise DataError(f"tie_order={tie_order!r}: expected one of {', '.join(TIE_ORDERS)}", spec)
        ds = reorder_ties(ds, tie_order)
    if ds.n_interactions == 0:
        kept = f" of the events rated {min_rating:g} or more" if min_rating is not None else ""
        raise DataError(f"no interactions left after the {min_count}-core filter{kept}; try a smaller min_count "
                        "(--min-count)", spec)
    if verbose:
        print(f"{ds.name}: {ds.n_users:,} users, {ds.n_items:,} items, {ds.n_interactions:,} interactions",
              file=sys.stdout)
        print(format_stats(ds.stats()), file=sys.stdout)
    return ds


# the DataConfig keys (config.py) that say how a data set is read: one list for every caller that loads from a config
READER_KEYS = ("format", "columns", "time_unit", "min_count", "min_rating", "tie_order")


def load_dataset_from_config(path_or_spec: Union[str, Path], data_config, **options) -> SequenceDataset:
    """load_dataset with the reader settings (READER_KEYS) of a config's data section (`Config.data`); `options`
    are load_dataset's other arguments (id_maps, unknown_ids, verbose).

    Raises:
        DataError: as load_dataset.
    """
    return load_dataset(path_or_spec, **{key: getattr(data_config, key) for key in READER_KEYS}, **options)
