"""How much does the order of same-time events move NDCG@10? (docs/results.md, "Why the figures differ")

On day-resolution data the order of a user's same-day events is not in the data, yet it decides which item is the
validation and the test target (data/ties.py). This study keeps the models the reproduction study trained on the
file's order (`python -m bench.studies.reproduce DATA ... --keep DIR`) and evaluates each of them on the splits
that every `tie_order` gives (file, item, reversed, random with three seeds): the targets, and the histories
before them, change; the model does not. A model retrained on another order is a `reproduce --set tie_order=X` run.

    python -m bench.studies.tie_order amazon-beauty --keep DIR --models sasrec t2arec --seeds 0 1 2 [--out DIR]

Writes DIR/tie_order_<data>.json (default bench/results) and prints the table.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from bench.harness import add_out_argument, code_version, environment, write_json
from bench.studies.reproduce import DATASETS
from t2arec_fast.data import leave_one_out, load_dataset
from t2arec_fast.data.ties import reorder_ties
from t2arec_fast.evaluate import evaluate
from t2arec_fast.model import load_model

# (label, tie_order, seed of the random order)
ORDERS = [("file", "file", 0), ("item", "item", 0), ("reversed", "reversed", 0),
          ("random 0", "random", 0), ("random 1", "random", 1), ("random 2", "random", 2)]


def splits(path: Path, k_core: int) -> dict:
    """label → leave-one-out split of the data with that order of ties (the k-core is taken once, on the file's
    order, so that every split has the same users and items)."""
    ds = load_dataset(str(path), min_count=k_core, verbose=False)
    return {label: leave_one_out(reorder_ties(ds, order, seed=seed)) for label, order, seed in ORDERS}


def target_changed(split, reference, which: str) -> float:
    """Share of users whose `which` target item differs from the reference split's."""
    a, b = split.part(which), reference.part(which)
    return float(np.mean(split.dataset.items[a.stops] != reference.dataset.items[b.stops]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument("--keep", metavar="DIR", required=True, type=Path,
                    help="the reproduction study's --keep folder (DIR/<dataset>/<model>/seed<k>/best)")
    ap.add_argument("--models", nargs="+", default=["sasrec", "t2arec"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add_out_argument(ap)
    args = ap.parse_args(argv)
    path, k_core, max_len = DATASETS[args.dataset]
    torch.set_num_threads(1)
    by_order = splits(path, k_core)
    changed = {label: {w: target_changed(s, by_order["file"], w) for w in ("valid", "test")}
               for label, s in by_order.items()}
    results = {}
    for model_label in args.models:
        for seed in args.seeds:
            folder = args.keep / args.dataset / model_label.replace(" ", "_") / f"seed{seed}" / "best"
            if not folder.exists():
                raise SystemExit(f"no kept model at {folder}: run the reproduction study with --keep first")
            model = load_model(folder)
            for label, split in by_order.items():
                res = {w: evaluate(model, split, w, max_len)["ndcg@10"] for w in ("valid", "test")}
                results.setdefault(model_label, {}).setdefault(label, {})[seed] = res
                print(f"{model_label} seed {seed} ties {label}: valid {res['valid']:.4f} test {res['test']:.4f}",
                      flush=True)
    report = {"dataset": args.dataset, "keep": str(args.keep), "code": code_version(), "environment": environment(),
              "orders": [list(o) for o in ORDERS], "targets_changed": changed, "ndcg@10": results}
    write_json(args.out, f"tie_order_{args.dataset}.json", report)
    print(table_markdown(report))


def table_markdown(report: dict) -> str:
    """Per order of ties: the share of test targets that differ from the file's order's, and each model's test
    NDCG@10 (mean ± std over the kept seeds), as docs/results.md shows it."""
    models = list(report["ndcg@10"])
    lines = ["| order of ties | test targets changed | " + " | ".join(f"{m} test NDCG@10" for m in models) + " |",
             "|---|---|" + "---|" * len(models)]
    for label, _, _ in report["orders"]:
        cells = []
        for m in models:
            values = list(report["ndcg@10"][m][label].values())
            test = [v["test"] for v in values]
            cells.append(f"{statistics.mean(test):.4f}" + (f" ± {statistics.stdev(test):.4f}" if len(test) > 1
                                                            else ""))
        lines.append(f"| {label} | {100 * report['targets_changed'][label]['test']:.1f} % | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
