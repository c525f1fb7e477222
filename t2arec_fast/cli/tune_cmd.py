"""`t2arec tune`: search hyperparameters on validation data with Optuna (t2arec_fast.tune, docs/tuning.md).

    t2arec tune DATASET --space SPACE.yaml --trials N [--storage sqlite:///study.db] [--study-name NAME]
                [--model M] [--format F] [--columns ...] [--time-unit UNIT] [--min-count N] [--min-rating R]
                [--config Y] [--key value ...] [--prune-after K] [--sampler-seed S] [--json P] [--save-config P.yaml]
"""
from __future__ import annotations

from .common import DATASET_HELP, UserError, reader_options, reader_settings, write_json
from .train_cmd import MODELS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tune", help="search hyperparameters on validation NDCG@10 (Optuna; resumable studies)",
        description="Train one model per trial with the parameters of a YAML search space, score each by its best "
        "validation NDCG@10 (test data is never used), prune trials that trail the median after a few epochs, and "
        "print one line per trial. With --storage the study is kept in a database: running the same command again "
        "(another process, another day) continues it up to --trials finished trials. Settings that are not searched "
        "come from --config, the reader options and --key=value, as for `t2arec train`.",
        parents=[reader_options()])
    p.add_argument("dataset", metavar="DATASET", help=DATASET_HELP)
    p.add_argument("--space", metavar="SPACE.yaml", required=True,
                   help="search space: config key → {type: float|int, low, high, log, step} or a list of choices")
    p.add_argument("--trials", type=int, required=True, metavar="N",
                   help="finished (complete or pruned) trials the study should hold; a resumed study runs the rest")
    p.add_argument("--storage", metavar="URL", default=None,
                   help="SQLAlchemy URL of the study's database, e.g. sqlite:///study.db (default: in memory, "
                   "not resumable)")
    p.add_argument("--study-name", default=None, metavar="NAME",
                   help="name of the study in the storage (default: t2arec-<model>)")
    p.add_argument("--model", choices=MODELS, default=None, help="model to tune (default: the config's, t2arec)")
    p.add_argument("--config", metavar="Y", default=None, help="YAML config of the settings that are not searched")
    p.add_argument("--prune-after", type=int, default=3, metavar="K",
                   help="epochs every trial runs before it may be pruned (default 3)")
    p.add_argument("--sampler-seed", type=int, default=0, metavar="S", help="seed of the TPE sampler (default 0)")
    p.add_argument("--json", metavar="P", default=None, help="write the study's summary and best configuration here")
    p.add_argument("--save-config", metavar="P.yaml", default=None,
                   help="write the best trial's full configuration as YAML (for `t2arec train --config`)")
    p.set_defaults(func=_tune, accepts_overrides=True)


def _tune(args) -> int:
    from t2arec_fast.config import Config, parse_overrides
    from t2arec_fast.optional import require
    from t2arec_fast.progress import write_line
    require("optuna", "tune", "t2arec tune (hyperparameter search)")     # a one-line error naming the extra
    from t2arec_fast.tune import load_space, run_study, study_summary
    if args.trials < 1:
        raise UserError(f"--trials must be ≥ 1, got {args.trials}")
    if args.prune_after < 0:
        raise UserError(f"--prune-after must be ≥ 0, got {args.prune_after}")
    space = load_space(args.space)
    clash = sorted(set(space) & (set(parse_overrides(args.overrides)) | set(reader_settings(args))))
    if clash:
        raise UserError(f"{', '.join(clash)}: both searched ({args.space}) and fixed on the command line")
    cfg = Config.from_sources(args.config, overrides={"progress": False}, args=args.overrides)
    cfg.update(reader_settings(args), source="command line")
    cfg.data.dataset = args.dataset
    if args.model:
        cfg.model.model = args.model
    if cfg.model.model not in MODELS:
        raise UserError(f"model={cfg.model.model!r}: expected one of {', '.join(MODELS)}")
    dataset = _load(args.dataset, cfg)
    name = args.study_name or f"t2arec-{cfg.model.model}"
    write_line(f"study {name!r} ({args.storage or 'in memory'}): {cfg.model.model} on {args.dataset}, "
               f"{len(space)} searched keys ({', '.join(space)}), up to {cfg.train.epochs} epochs per trial")
    study = run_study(dataset, space, cfg, args.trials, storage=args.storage, study_name=name,
                      prune_after=args.prune_after, seed=args.sampler_seed, dataset_name=str(args.dataset),
                      on_trial=write_line)
    summary = study_summary(study, cfg) | {"storage": args.storage}
    write_json(args.json, summary)
    best = summary["best"]
    if best is None:
        raise UserError(f"study {name!r}: no trial completed ({summary['trials']})")
    write_line(f"best: trial {best['trial']}, valid NDCG@10 {best['value']:.4f}, " +
               " ".join(f"{k}={v}" for k, v in best["params"].items()))
    if args.save_config:
        Config.from_sources(overrides=best["config"]).save_yaml(args.save_config)
    return 0


def _load(dataset: str, cfg):
    from t2arec_fast.data import load_dataset_from_config
    return load_dataset_from_config(dataset, cfg.data, verbose=False)
