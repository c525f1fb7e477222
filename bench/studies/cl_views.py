"""How often do the contrastive option's augmented views leave a training row unchanged? (docs/results.md, "Contrastive
augmentation")

Builds one epoch's training batches as `fit` does (windows, length buckets, batch 256, seed 0) and draws two views
of every row with `model.contrastive.augment` at the given rates: reports the rows' input lengths, the share of
views equal to their input and of rows whose two views both are (those differ only by dropout). No training.

    python -m bench.studies.cl_views amazon-beauty [--crop 0.6] [--drop 0.3] [--reorder 0.3] [--out DIR]

Writes DIR/cl_views_<data>.json (default bench/results) and prints one line.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from bench.harness import add_out_argument, environment, write_json
from bench.studies.reproduce import DATASETS
from t2arec_fast.data import leave_one_out, load_dataset, train_batches
from t2arec_fast.model.contrastive import augment


def view_stats(split, max_len: int, crop: float, drop: float, reorder: float, batch_size: int = 256) -> dict:
    torch.manual_seed(0)
    lengths, same_view, same_both = [], 0, 0
    for b in train_batches(split, max_len, batch_size, shuffle=True, seed=0, epoch=0, bucket=True):
        items, times = torch.from_numpy(b.items), torch.from_numpy(b.times)
        equal = [(augment(items, times, crop, drop, reorder)[0] == items).all(1) for _ in range(2)]
        same_view += int(equal[0].sum() + equal[1].sum())
        same_both += int((equal[0] & equal[1]).sum())
        lengths.append((items != 0).sum(1).numpy())
    n = np.concatenate(lengths)
    return {"rows": int(len(n)), "median_inputs": float(np.median(n)), "share_2_inputs": float((n == 2).mean()),
            "share_views_unchanged": same_view / (2 * len(n)), "share_rows_both_unchanged": same_both / len(n)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", choices=list(DATASETS))
    ap.add_argument("--crop", type=float, default=0.6)
    ap.add_argument("--drop", type=float, default=0.3)
    ap.add_argument("--reorder", type=float, default=0.3)
    add_out_argument(ap)
    args = ap.parse_args(argv)
    path, k_core, max_len = DATASETS[args.dataset]
    split = leave_one_out(load_dataset(str(path), min_count=k_core, verbose=False))
    stats = view_stats(split, max_len, args.crop, args.drop, args.reorder)
    print(f"{args.dataset}: {stats['rows']:,} training rows, median {stats['median_inputs']:g} inputs, "
          f"{stats['share_2_inputs']:.1%} with 2; views equal to their input {stats['share_views_unchanged']:.1%}, "
          f"rows whose two views both are {stats['share_rows_both_unchanged']:.1%}")
    write_json(args.out, f"cl_views_{args.dataset}.json",
               {"environment": environment(), "config": vars(args) | {"out": None}, **stats})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
