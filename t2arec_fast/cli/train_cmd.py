"""`t2arec train` and `t2arec evaluate`.

    t2arec train DATASET --model t2arec|backbone|sasrec [READER OPTIONS] [--config Y] [--key=value ...] --out DIR
    t2arec evaluate CHECKPOINT DATASET [READER OPTIONS] [--ttt/--no-ttt] [--config Y] [--key=value ...] [--json P]

READER OPTIONS (common.reader_options, as for `data stats`): --format, --columns, --time-unit, --min-count,
--min-rating.
Config precedence: defaults < YAML (--config) < --key=value or --key value < reader options. `evaluate` starts from the data and test-time settings
saved with the checkpoint (min_count, min_rating, max_len, ttt_*), so the same dataset maps to the same item ids.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from t2arec_fast.config import CHOICES
from t2arec_fast.data.id_maps import UNKNOWN_IDS

from .common import DATASET_HELP, UserError, checkpoint_dir, reader_options, reader_settings, write_json

MODELS = CHOICES["model"]


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="pre-train a model, then evaluate it (valid, test, test with TTT)",
                              description="Pre-train T2ARec, the backbone or SASRec with early stopping on "
                              "validation NDCG@10, then report valid/test metrics at the best epoch. Any config key "
                              "can be given as --key=value or --key value (e.g. --epochs 20 --mu_time=0.1).",
                              parents=[reader_options()])
    p.add_argument("dataset", metavar="DATASET", help=DATASET_HELP)
    p.add_argument("--model", choices=MODELS, default=None, help="model to train (default: the config's, t2arec)")
    p.add_argument("--config", metavar="Y", default=None, help="YAML config file")
    p.add_argument("--out", metavar="DIR", required=True, help="output folder: best/, last/, config.yaml, results.json")
    p.add_argument("--json", metavar="P", default=None, help="also write the results JSON here")
    p.add_argument("--resume", metavar="DIR", default=None, help="resume from a previous --out folder (its last/)")
    p.set_defaults(func=_train, accepts_overrides=True)

    e = subparsers.add_parser("evaluate", help="evaluate a checkpoint (full ranking), with and without the TTT step",
                              description="Full-ranking evaluation (Recall/MRR/NDCG @ 5, 10, 20 and NDCG@10 per "
                              "test-time segment) of a saved model on valid and test, without and with test-time "
                              "alignment. Settings as --key=value or --key value (e.g. --ttt_lr 0.01 "
                              "--mask_history=true). Reader options default to the ones the model was trained with.",
                              parents=[reader_options()])
    e.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint folder (or a train --out folder: uses best/)")
    e.add_argument("dataset", metavar="DATASET", help="the data to evaluate on, read with the model's id maps: "
                   + DATASET_HELP)
    e.add_argument("--ttt", action=argparse.BooleanOptionalAction, default=None,
                   help="run the test-time step too (default: yes for t2arec, no for backbone and sasrec)")
    e.add_argument("--unknown-ids", choices=UNKNOWN_IDS, default="error",
                   help="events whose item or user the model was not trained on: refuse (error) or drop them and "
                        "say how many (drop)")
    e.add_argument("--config", metavar="Y", default=None, help="YAML config file")
    e.add_argument("--json", metavar="P", default=None, help="write the results JSON here")
    e.set_defaults(func=_evaluate, accepts_overrides=True)


# -- train -----------------------------------------------------------------------------------------------------------
def _train(args) -> int:
    from t2arec_fast.config import Config
    from t2arec_fast.evaluate import format_table
    from t2arec_fast.train import train_and_evaluate
    cfg = Config.from_sources(args.config, args=args.overrides)
    cfg.update(reader_settings(args), source="command line")
    cfg.data.dataset = args.dataset
    if args.model:
        cfg.model.model = args.model
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    _, results = train_and_evaluate(cfg, out_dir=out, resume=args.resume)
    if results:                                   # rank 0 only under torchrun
        print(format_table({k: v for k, v in results.items() if k in ("valid", "valid_ttt", "test", "test_ttt")}))
        write_json(out / "results.json", results)
        write_json(args.json, results)
        print(f"\n{results['epochs']} epochs, best {results['best_epoch']}, "
              f"{results['seconds_per_epoch']:.2f} s/epoch; results {out / 'results.json'}")
        if not (out / "best" / "config.json").is_file():   # only a checkpoint that exists is named
            print(f"t2arec train: error: no checkpoint written: no epoch reached a finite validation NDCG@10 "
                  f"(the model diverged?); {out / 'last'} holds the final weights", file=sys.stderr)
            return 1
        print(f"checkpoint {out / 'best'}")
    return 0


# -- evaluate --------------------------------------------------------------------------------------------------------
def _evaluation_config(args, saved: dict):
    """Config = defaults < the checkpoint's data/ttt settings < --config < --key=value; model keys only `backend`."""
    from t2arec_fast.config import Config, SECTIONS, load_yaml, parse_overrides
    cfg = Config()
    carried = {"data": {k: v for k, v in saved.get("data", {}).items() if k != "dataset"},
               "ttt": saved.get("ttt", {}),
               "train": {k: v for k, v in saved.get("train", {}).items() if k in ("eval_batch_size", "device")}}
    cfg.update(carried, source="checkpoint")
    user = {}
    for key, value in (load_yaml(args.config) if args.config else {}).items():
        grouped = key in SECTIONS and isinstance(value, dict)          # YAML may be flat or grouped by section
        user.update(value if grouped else {key: value})
    user.update(parse_overrides(args.overrides))
    user.update(reader_settings(args))
    model_keys = {f for f in vars(cfg.model)} - {"backend"}
    fixed = sorted(k for k in user if k in model_keys)
    if fixed:
        raise UserError(f"model options come from the checkpoint and cannot be changed here: {', '.join(fixed)}")
    cfg.update(user, source="command line")
    return cfg


def _evaluate(args) -> int:
    from t2arec_fast.data import load_dataset_from_config, make_split
    from t2arec_fast.evaluate import evaluate_splits, format_table
    from t2arec_fast.model import T2ARec, load_model
    from t2arec_fast.train import DistContext, resolve_device
    directory = checkpoint_dir(args.checkpoint)
    model = load_model(directory)
    extra = (model.checkpoint_meta or {}).get("extra", {}) or {}
    cfg = _evaluation_config(args, extra.get("train_config", {}))
    if cfg.model.backend != "auto" and isinstance(model, T2ARec):          # SASRec has no scan
        model.set_backend(cfg.model.backend)
    maps = model.id_maps or None        # ids are read the way the model numbers them, never renumbered
    ds = load_dataset_from_config(args.dataset, cfg.data, id_maps=maps, unknown_ids=args.unknown_ids,
                                  verbose=cfg.train.progress)
    if ds.n_items != model.n_items:     # a checkpoint without id maps, or synthetic data (numbered by the generator)
        raise UserError(f"{directory} was trained on {model.n_items} items but {args.dataset} has {ds.n_items} after "
                        f"min_count={cfg.data.min_count}; the checkpoint has no id maps to read other data with")
    unknown = ds.meta.get("unknown_ids")
    if unknown and unknown["events_dropped"]:
        print(f"note: dropped {unknown['events_dropped']:,} events with ids the model was not trained on "
              f"({unknown['items']:,} unknown items, {unknown['users']:,} unknown users)", file=sys.stderr)
    device = resolve_device(cfg.train.device, DistContext())
    model = model.to(device)
    max_len = cfg.data.max_len or extra.get("max_len") or ds.default_max_len
    run_ttt = (cfg.ttt.ttt and model.uses_alignment) if args.ttt is None else args.ttt
    if run_ttt and not isinstance(model, T2ARec):
        print(f"note: {model.model_name} has no alignment losses; the test-time step is skipped", file=sys.stderr)
        run_ttt = False
    results = evaluate_splits(model, make_split(ds, cfg.data.split), max_len, batch_size=cfg.train.eval_batch_size,
                              ttt=cfg.ttt if run_ttt else None, mask_history=cfg.data.mask_history,
                              n_segments=cfg.data.n_segments, progress=cfg.train.progress)
    results.update(checkpoint=str(directory), model=model.config.model, dataset=str(args.dataset),
                   max_len=max_len, config=cfg.to_dict(), unknown_ids=unknown)
    print(format_table({k: v for k, v in results.items() if k in ("valid", "valid_ttt", "test", "test_ttt")}))
    write_json(args.json, results)
    return 0
