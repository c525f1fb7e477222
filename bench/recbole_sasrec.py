"""RecBole 1.2.1's own SASRec on one of our data sets, in our exact events and order: a reference curve.

The data set is read with our loader (`t2arec_fast.data.load_dataset`, the k-core, max length and tie order of
bench/studies/reproduce.py), written as a RecBole atomic `.inter` file whose timestamp is each event's position in
its user's history (0, 1, 2, ...), so that RecBole's time order is exactly ours, and trained by RecBole itself:
leave-one-out by time (`eval_args` split LS valid_and_test, order TO, mode full), no filtering (the intervals admit
every user and item; before training, the counts RecBole reports and its valid and test examples, target and
input window, are checked against ours), MAX_ITEM_LIST_LENGTH =
our max length, NDCG / Recall / MRR @10, early stopping on valid NDCG@10, and RecBole's SASRec defaults (2 layers,
2 heads, hidden 64, inner 256, dropout 0.5, CE loss, Adam 1e-3, batch 2048) unless `--set key=value` overrides
them. Recorded per epoch: training loss and seconds, validation seconds and metrics; then the best validation
epoch, test metrics at its checkpoint, the median seconds per epoch (validation excluded) and the counts.

RecBole is not a dependency of this package. It needs an environment of its own (about 1.7 GB, a minute or two
to install):

    python3 -m venv /tmp/rb
    /tmp/rb/bin/pip install torch==2.13.0 recbole==1.2.1 pyarrow "pandas<3"

and is run from the repository root with that interpreter (the checkout's `t2arec_fast` is imported from there;
pyarrow is the one dependency of our data loader that RecBole does not bring; pandas 3 runs, but RecBole 1.2.1 was
written for pandas 1-2, and under pandas 3's copy-on-write its in-place fills of missing values do nothing):

    /tmp/rb/bin/python -m bench.recbole_sasrec ml-100k --epochs 50
    /tmp/rb/bin/python -m bench.recbole_sasrec amazon-beauty --seed 0 --set learning_rate=0.0005 --out DIR

RecBole 1.2.1 predates numpy 2 and torch 2.6: this script (only) gives numpy back the aliases it uses (`np.float`,
`np.float_`, `np.complex_`, `np.bool8`, ...) and makes `torch.load` default to weights_only=False for RecBole's own
checkpoints. `recbole.quick_start` is not used: it imports ray, whose `import pkg_resources` fails with the
setuptools that torch 2.13 requires (>= 77; pkg_resources is gone from current releases), so the run goes through
Config / create_dataset / data_preparation / get_model / get_trainer. RecBole's checkpoint and tensorboard folders
go into the temporary folder that holds the atomic file (--work DIR keeps them).

Writes recbole_sasrec_<data>.json into --out DIR (default $OUT, else bench/results).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.harness import add_out_argument, environment, write_json

RECBOLE_VERSION = "1.2.1"
INSTALL_HINT = ("recbole is not importable here: make its environment with `python3 -m venv /tmp/rb && "
                f"/tmp/rb/bin/pip install torch==2.13.0 recbole=={RECBOLE_VERSION} pyarrow 'pandas<3'`, then run "
                "`/tmp/rb/bin/python -m bench.recbole_sasrec DATA` from the repository root (docs/benchmarks.md)")
METRICS = ("ndcg@10", "recall@10", "mrr@10")
DEFAULT_K_CORE = 10
# RecBole names its own presets after data sets (properties/dataset/ml-100k.yaml and more): ours get this prefix so
# that none of those presets is loaded behind our settings.
NAME_PREFIX = "t2arec-"


# ---- our data → RecBole's atomic file (pure: needs numpy only) -------------------------------------------------

def resolve_data(data: str, datasets_dir: Path | None = None) -> tuple:
    """(path or spec, k-core, max length or None) of DATA: a name of bench/studies/reproduce.py's table (its
    k-core and max length; its folder under `datasets_dir` when given), else a path or `synthetic:...` spec."""
    from bench.studies.reproduce import DATASETS
    if data in DATASETS:
        path, k_core, max_len = DATASETS[data]
        if datasets_dir is not None:
            path = Path(datasets_dir) / Path(path).name
        return str(path), k_core, max_len
    return data, None, None


def data_label(data: str) -> str:
    """The short name of DATA used in file names: the table's name, a path's last part, or 'synthetic'."""
    if data.startswith("synthetic"):
        return "synthetic"
    return Path(data.rstrip("/")).name or "data"


def write_atomic(ds, folder: Path, name: str) -> Path:
    """Writes `folder/name/name.inter` (RecBole's atomic format, tab-separated, typed header) with one row per event
    of `ds` in our order (users in row order, each user's events in time order): `user_id:token` = our user row,
    `item_id:token` = our item id (1..n_items), `timestamp:float` = the event's position in its user's history.

    Positions are distinct within a user, so RecBole's sort by (user, time) keeps our order exactly, ties included.
    Returns the file's path."""
    target = Path(folder) / name
    target.mkdir(parents=True, exist_ok=True)
    lengths = np.diff(ds.offsets)
    users = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    positions = np.arange(len(ds.items), dtype=np.int64) - np.repeat(ds.offsets[:-1], lengths)
    path = target / f"{name}.inter"
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        np.savetxt(f, np.stack([users, ds.items.astype(np.int64), positions], axis=1), fmt="%d", delimiter="\t")
    return path


def parse_overrides(pairs) -> dict:
    """`key=value` strings → {key: value}, each value read as YAML (numbers, booleans, lists, dicts; else text).

    Raises:
        ValueError: an item without '='."""
    import yaml
    out = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise ValueError(f"--set {pair!r}: expected key=value")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def recbole_config(work_dir: Path, max_len: int, seed: int = 0, epochs: int = 50, stopping_step: int = 10,
                   overrides: dict | None = None) -> dict:
    """The config_dict handed to RecBole's Config: our file and split, RecBole's SASRec defaults written out (so that
    the JSON records them), then `overrides` (`--set`) on top."""
    config = {
        # where the atomic file is, and what to load from it
        "data_path": str(work_dir), "checkpoint_dir": str(Path(work_dir) / "saved"),
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        # our data is already k-cored: filter nothing (the counts are checked after loading)
        "rm_dup_inter": None, "val_interval": None, "filter_inter_by_user_or_item": False,
        "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
        "MAX_ITEM_LIST_LENGTH": int(max_len),
        # leave-one-out by time, full ranking, history not masked (RecBole's sequential default)
        "eval_args": {"split": {"LS": "valid_and_test"}, "group_by": "user", "order": "TO", "mode": "full"},
        "metrics": ["NDCG", "Recall", "MRR"], "topk": [10], "valid_metric": "NDCG@10", "valid_metric_bigger": True,
        "metric_decimal_place": 8,           # RecBole rounds to 4 places by default; display only
        # SASRec as RecBole ships it (properties/model/SASRec.yaml, overall.yaml)
        "n_layers": 2, "n_heads": 2, "hidden_size": 64, "inner_size": 256, "hidden_dropout_prob": 0.5,
        "attn_dropout_prob": 0.5, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "initializer_range": 0.02,
        "loss_type": "CE", "train_neg_sample_args": None, "learner": "adam", "learning_rate": 1e-3,
        "train_batch_size": 2048, "eval_batch_size": 4096, "weight_decay": 0.0,
        # the run
        "seed": int(seed), "reproducibility": True, "epochs": int(epochs), "stopping_step": int(stopping_step),
        "eval_step": 1, "show_progress": False, "save_dataset": False, "save_dataloaders": False,
        "log_wandb": False, "state": "WARNING",
    }
    config.update(overrides or {})
    return config


def our_counts(ds, split) -> dict:
    """Users, items, interactions, and training / valid / test examples of our leave-one-out split."""
    return {"n_users": ds.n_users, "n_items": ds.n_items, "n_interactions": ds.n_interactions,
            "train_examples": split.n_train_targets(), "valid_examples": len(split.valid),
            "test_examples": len(split.test)}


# ---- RecBole (needs the environment above) ---------------------------------------------------------------------

def require_recbole() -> None:
    """Exits with INSTALL_HINT (one line) when recbole is not installed; touches nothing else."""
    import importlib.util
    if importlib.util.find_spec("recbole") is None:
        raise SystemExit(INSTALL_HINT)


def import_recbole():
    """Applies the compatibility shims and imports the RecBole pieces; exits with INSTALL_HINT when absent."""
    require_recbole()
    # numpy 2 removed these aliases; RecBole 1.2.1 uses them (Config.compatibility_settings reads np.float_ etc.)
    aliases = {"float": float, "int": int, "bool": bool, "complex": complex, "object": object, "str": str,
               "long": int, "unicode": str, "float_": np.float64, "complex_": np.complex128, "bool8": np.bool_,
               "unicode_": np.str_, "int_": np.int64}
    for alias, target in aliases.items():
        if alias not in np.__dict__:
            setattr(np, alias, target)
    try:
        import torch
        import recbole
        from recbole.config import Config
        from recbole.data import create_dataset, data_preparation
        from recbole.utils import get_model, get_trainer, init_seed
    except ImportError as e:
        raise SystemExit(f"{INSTALL_HINT} ({e})") from None
    if not getattr(torch.load, "_weights_only_default_off", False):
        # torch >= 2.6 loads weights only by default; RecBole's checkpoints hold its Config object
        original = torch.load

        @functools.wraps(original)
        def load(*args, **kwargs):
            kwargs.setdefault("weights_only", False)
            return original(*args, **kwargs)
        load._weights_only_default_off = True
        torch.load = load
    return dict(version=recbole.__version__, Config=Config, create_dataset=create_dataset,
                data_preparation=data_preparation, get_model=get_model, get_trainer=get_trainer, init_seed=init_seed)


def recbole_counts(dataset, train_data, valid_data, test_data, n_interactions: int) -> dict:
    """The counts of `our_counts` as RecBole has them (its user and item numbers include a padding id 0).
    `n_interactions` is the dataset's row count read before data_preparation, which replaces its rows by the
    augmented prefixes."""
    return {"n_users": int(dataset.user_num - 1), "n_items": int(dataset.item_num - 1),
            "n_interactions": int(n_interactions), "train_examples": int(train_data.dataset.inter_num),
            "valid_examples": int(valid_data.dataset.inter_num), "test_examples": int(test_data.dataset.inter_num)}


def same_examples(dataset, part_data, ds, part) -> dict:
    """Compares one evaluation part (valid or test) as RecBole built it with ours, example by example: the target
    item of each user, and the input sequence (RecBole's last MAX_ITEM_LIST_LENGTH events before the target) with
    the same window of our events. {"users": n, "targets_equal": n, "inputs_equal": n}."""
    inter = part_data.dataset.inter_feat
    tokens_user = np.asarray(dataset.field2id_token[dataset.uid_field])
    tokens_item = np.asarray(dataset.field2id_token[dataset.iid_field])
    users = tokens_user[inter[dataset.uid_field].numpy()].astype(np.int64)
    targets = tokens_item[inter[dataset.iid_field].numpy()].astype(np.int64)
    lists = inter[dataset.iid_field + dataset.config["LIST_SUFFIX"]].numpy()
    lengths = inter[dataset.config["ITEM_LIST_LENGTH_FIELD"]].numpy()
    stop_of = dict(zip(part.users.tolist(), part.stops.tolist()))
    found = {"users": len(users), "targets_equal": 0, "inputs_equal": 0}
    for user, target, row, length in zip(users.tolist(), targets.tolist(), lists, lengths.tolist()):
        stop = stop_of.get(user)
        if stop is None:
            continue
        found["targets_equal"] += int(ds.items[stop] == target)
        start = max(int(ds.offsets[user]), stop - length)
        theirs = tokens_item[row[:length]].astype(np.int64)
        found["inputs_equal"] += int(stop - start == length and np.array_equal(ds.items[start:stop], theirs))
    return found


@contextlib.contextmanager
def bare_argv():
    """RecBole's Config also reads `--key=value` options from sys.argv: hide this script's own options from it."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def record_epochs(trainer) -> list:
    """Wraps this trainer's per-epoch training and validation calls so that each epoch appends
    {epoch, train_loss (mean over batches), train_loss_sum (RecBole's figure), train_seconds, valid_seconds,
    valid: {metric: value}} to the returned list."""
    epochs = []
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch

    def timed_train(train_data, epoch_idx, *args, **kwargs):
        start = time.perf_counter()
        loss = train_epoch(train_data, epoch_idx, *args, **kwargs)
        seconds = time.perf_counter() - start
        total = float(sum(loss) if isinstance(loss, tuple) else loss)     # RecBole sums the batches' losses
        epochs.append({"epoch": int(epoch_idx), "train_loss": total / max(len(train_data), 1),
                       "train_loss_sum": total, "train_seconds": seconds})
        return loss

    def timed_valid(valid_data, *args, **kwargs):
        start = time.perf_counter()
        score, result = valid_epoch(valid_data, *args, **kwargs)
        epochs[-1].update(valid_seconds=time.perf_counter() - start,
                          valid={k.lower(): float(v) for k, v in result.items()})
        return score, result

    trainer._train_epoch, trainer._valid_epoch = timed_train, timed_valid
    return epochs


def run(args) -> dict:
    """Loads DATA our way, writes it for RecBole, checks that RecBole sees the same data and split, trains RecBole's
    SASRec with early stopping, tests the best checkpoint and writes the JSON; returns the report (with --dry: the
    counts and the example checks only)."""
    rb = import_recbole()
    import torch
    from t2arec_fast.data import leave_one_out, load_dataset
    if args.threads:
        torch.set_num_threads(args.threads)
    spec, k_core, max_len = resolve_data(args.data, args.datasets)
    k_core = args.k_core if args.k_core is not None else (k_core if k_core is not None else DEFAULT_K_CORE)
    if not spec.startswith("synthetic") and not Path(spec).exists():
        raise SystemExit(f"{spec} not found: the real data sets live in ../shared/datasets beside the checkout "
                         "(--datasets DIR names another folder)")
    ds = load_dataset(spec, min_count=k_core, verbose=False, tie_order=args.tie_order)
    max_len = args.max_len or max_len or ds.default_max_len
    split = leave_one_out(ds)
    ours = our_counts(ds, split)
    label = data_label(args.data)
    name = NAME_PREFIX + label
    overrides = parse_overrides(args.set)

    with contextlib.ExitStack() as stack:
        work = Path(args.work) if args.work else Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="recbole_sasrec_")))
        work = work.resolve()
        write_atomic(ds, work, name)
        config_dict = recbole_config(work, max_len, args.seed, args.epochs, args.stopping_step, overrides)
        stack.enter_context(contextlib.chdir(work))      # RecBole writes log_tensorboard/ into the working folder
        with bare_argv():
            config = rb["Config"](model="SASRec", dataset=name, config_dict=config_dict)
        rb["init_seed"](config["seed"], config["reproducibility"])
        dataset = rb["create_dataset"](config)
        n_interactions = dataset.inter_num
        train_data, valid_data, test_data = rb["data_preparation"](config, dataset)
        theirs = recbole_counts(dataset, train_data, valid_data, test_data, n_interactions)
        if theirs != ours:
            raise SystemExit(f"RecBole's counts differ from ours: RecBole {theirs}, ours {ours}")
        examples = {name_: same_examples(dataset, data_, ds, part_) for name_, data_, part_ in
                    (("valid", valid_data, split.valid), ("test", test_data, split.test))}
        for part_name, found in examples.items():
            if not found["users"] == found["targets_equal"] == found["inputs_equal"] == len(split.part(part_name)):
                raise SystemExit(f"RecBole's {part_name} examples differ from ours: {found} of "
                                 f"{len(split.part(part_name))}")
        print(f"{label}: {ours['n_users']:,} users, {ours['n_items']:,} items, {ours['n_interactions']:,} "
              f"interactions, {ours['train_examples']:,} training examples; RecBole counts the same and its "
              f"valid and test examples (targets, input windows) equal ours; max length {max_len}", flush=True)
        if args.dry:
            return {"counts": {"ours": ours, "recbole": theirs}, "same_examples": examples}
        rb["init_seed"](config["seed"] + config["local_rank"], config["reproducibility"])
        model = rb["get_model"](config["model"])(config, train_data.dataset).to(config["device"])
        trainer = rb["get_trainer"](config["MODEL_TYPE"], config["model"])(config, model)
        epochs = record_epochs(trainer)
        best = {"epoch": None}

        def after_validation(epoch_idx, valid_score):
            if trainer.cur_step == 0:         # RecBole just saved this epoch as its best (score >= best so far)
                best["epoch"] = int(epoch_idx)
            e = epochs[-1]
            print(f"epoch {epoch_idx}: loss {e['train_loss']:.4f}, train {e['train_seconds']:.1f} s, valid "
                  + "  ".join(f"{m} {e['valid'][m]:.4f}" for m in METRICS)
                  + f" ({e['valid_seconds']:.1f} s){'  *' if best['epoch'] == epoch_idx else ''}", flush=True)

        started = time.perf_counter()
        trainer.fit(train_data, valid_data, verbose=False, saved=True, show_progress=False,
                    callback_fn=after_validation)
        test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
        wall = time.perf_counter() - started
        resolved = {k: config[k] for k in config_dict if k not in ("data_path", "checkpoint_dir")}
        device = str(config["device"])

    seconds = [e["train_seconds"] for e in epochs]
    best_valid = next(e["valid"] for e in epochs if e["epoch"] == best["epoch"])
    report = {
        "what": "RecBole's SASRec on our data set, our events and order (bench/recbole_sasrec.py)",
        "dataset": label, "path": spec, "k_core": k_core, "max_len": max_len, "tie_order": args.tie_order,
        "recbole": rb["version"], "device": device, "config": resolved, "overrides": overrides,
        "counts": {"ours": ours, "recbole": theirs, "equal": theirs == ours},
        "same_examples": examples,       # per part: users whose target and input window equal ours
        "epochs": epochs, "epochs_run": len(epochs), "max_epochs": args.epochs, "stopping_step": args.stopping_step,
        "best_epoch": best["epoch"], "best_valid": best_valid,
        "test": {k.lower(): float(v) for k, v in test.items()},
        "seconds_per_epoch": statistics.median(seconds), "first_epoch_s": seconds[0],
        "valid_seconds": statistics.median(e["valid_seconds"] for e in epochs), "wall_s": wall,
        "environment": environment(recbole=rb["version"]),
    }
    path = write_json(args.out, f"recbole_sasrec_{label}.json", report)
    print(f"best valid epoch {best['epoch']}: " + "  ".join(f"{m} {best_valid[m]:.4f}" for m in METRICS)
          + " | test " + "  ".join(f"{m} {report['test'][m]:.4f}" for m in METRICS)
          + f" | {report['seconds_per_epoch']:.1f} s/epoch -> {path}", flush=True)
    return report


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("data", metavar="DATA",
                    help="a data set of bench/studies/reproduce.py (ml-100k, amazon-beauty, ...), a path or a "
                         "synthetic:... spec")
    ap.add_argument("--epochs", type=int, default=50, help="most epochs (default 50, as reproduce.py)")
    ap.add_argument("--stopping-step", type=int, default=10,
                    help="stop after this many validations without improvement (RecBole's default 10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="RecBole config overrides (values read as YAML), e.g. learning_rate=0.0005 n_layers=1")
    ap.add_argument("--k-core", type=int, default=None, help="override the data set's k-core (a path's: 10)")
    ap.add_argument("--max-len", type=int, default=None, help="override the data set's max length")
    ap.add_argument("--tie-order", default="file", help="our loader's tie_order (default file, as reproduce.py)")
    ap.add_argument("--datasets", type=Path, default=None, metavar="DIR",
                    help="folder holding the named data sets (default ../shared/datasets beside the checkout)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--work", type=Path, default=None, metavar="DIR",
                    help="keep the atomic file, checkpoint and tensorboard log here (default: a temporary folder)")
    ap.add_argument("--dry", action="store_true",
                    help="only load, write and check the data (counts, valid and test examples); no training, no JSON")
    add_out_argument(ap)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
