"""Reproduction study: SASRec, the backbone and T2ARec (with its ablations) on real data sets, several seeds.

For each data set and seed, every model is pre-trained with early stopping on validation NDCG@10 and evaluated
(full ranking, history not masked) on valid and test, and under the CoSeRec family's protocol (seen items masked:
"valid_masked", "test_masked"); T2ARec is also evaluated with the test-time step. Settings
are the package defaults (chosen on validation, docs/results.md) unless overridden with --set key=value.

    python -m bench.studies.reproduce ml-100k --seeds 0 1 2                       # ≈ 35 min on the 2-core CPU
    python -m bench.studies.reproduce amazon-beauty --seeds 0 --epochs 20
    python -m bench.studies.reproduce amazon-beauty --seeds 2 --out /tmp/s2     # another process, another core ...
    python -m bench.studies.reproduce amazon-beauty --combine /tmp/s2/reproduce_amazon-beauty.json  # ... one study

Writes bench/results/reproduce_<dataset>.json (every run) and bench/results/segments_<dataset>.png (NDCG@10 per
test-time segment, as the paper's Figure 5), and prints the mean ± std table that docs/results.md quotes.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from t2arec_fast import json_io
from t2arec_fast.config import Config
from t2arec_fast.data import leave_one_out, load_dataset
from t2arec_fast.evaluate import evaluate
from t2arec_fast.metrics import ndcg_per_example
from t2arec_fast.train import fit

from bench.harness import RESULTS, ROOT, code_version

CODE = code_version()          # the code this process runs, read once at start (edits during a run don't count)

SHARED = ROOT.parent / "shared" / "datasets"
# name → (path, k-core, max length), as in the papers that use these sets (docs/model.md §7)
DATASETS = {
    "ml-100k": (SHARED / "ml-100k", 10, 200),
    "ml-latest-small": (SHARED / "ml-latest-small", 10, 200),
    "amazon-beauty": (SHARED / "amazon-beauty", 5, 50),
    "yelp-a": (SHARED / "yelp-a", 5, 50),
}
# label → overrides; the ablations switch one part of T2ARec off at a time
MODELS = {
    "sasrec": {"model": "sasrec"},
    "backbone": {"model": "backbone"},
    "t2arec": {"model": "t2arec"},
    "t2arec w/o L_time": {"model": "t2arec", "mu_time": 0.0},
    "t2arec w/o L_state": {"model": "t2arec", "mu_state": 0.0},
    # chosen on ml-100k validation by bench/tune_alignment.py (seed 0): μ1 = μ2 = 1 in pre-training and a per-user
    # test-time step on all parameters (α 0.05, μ1' = μ2' = 1); docs/results.md
    "t2arec mu1, per-user step": {"model": "t2arec", "mu_time": 1.0, "mu_state": 1.0, "ttt_batch_size": 1,
                                  "ttt_lr": 0.05, "ttt_mu_time": 1.0, "ttt_mu_state": 1.0, "ttt_params": "all"},
}
METRICS = ("recall@10", "mrr@10", "ndcg@10")


def run_one(ds, split, data_over: dict, over: dict, seed: int, epochs: int, extra: dict, keep=None) -> dict:
    """Train one model (checkpoints under `keep` when given, for later analysis) and evaluate it."""
    cfg = Config.from_sources(overrides={**data_over, **over, **extra, "seed": seed, "epochs": epochs,
                                         "progress": False})
    t0 = time.perf_counter()
    model, history = fit(cfg, dataset=ds, out_dir=keep)
    out = {"seed": seed, "overrides": over, "best_epoch": history["best_epoch"], "epochs_run": history["epochs_run"],
           "seconds_per_epoch": history["seconds_per_epoch"], "train_seconds": time.perf_counter() - t0,
           "epochs": history["epochs"]}      # per epoch: losses (rec, time, state, cl), lr, valid NDCG@10, seconds
    max_len = history["max_len"]
    out["valid"] = evaluate(model, split, "valid", max_len)
    out["test"] = evaluate(model, split, "test", max_len)
    for which in ("valid", "test"):              # the other published protocol, from the same model
        out[f"{which}_masked"] = masked_history_metrics(model, split, which, max_len)
    if cfg.model.model == "t2arec" and cfg.ttt.ttt:
        out["test_ttt"] = evaluate(model, split, "test", max_len, ttt=cfg.ttt)
    return out


def masked_history_metrics(model, split, which: str, max_len: int) -> dict:
    """Metrics with the user's seen items masked out of the ranking — the protocol of the CoSeRec family's code
    (TiCoSeRec: 0.0418 on amazon-beauty), where RecBole's and ours rank every item (docs/results.md, "Why the
    figures differ: seen items masked or ranked"). The mask covers the model's input (the last max_len events;
    that code masks the whole history) and leaves a repeated target rankable (that code masks it too), so
    "ndcg@10_strict" counts a target already in the user's whole history as a miss; "repeat_targets" is their
    share."""
    r = evaluate(model, split, which, max_len, mask_history=True, return_ranks=True)
    repeat = repeat_targets(split, which)
    r["repeat_targets"] = float(repeat.mean()) if len(repeat) else float("nan")
    r["ndcg@10_strict"] = float((ndcg_per_example(r.pop("ranks"), 10) * ~repeat).mean())
    return r


def repeat_targets(split, which: str):
    """(n,) bool over split.part(which): is the target item among the user's earlier events (all of them)."""
    part, ds = split.part(which), split.dataset
    return np.array([ds.items[stop] in ds.items[ds.offsets[u]:stop] for u, stop in zip(part.users, part.stops)],
                    dtype=bool)


def mean_std(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def paired_t(a, b):
    """Paired t statistic of a − b over seeds and its two-sided p-value (Student t, df = n − 1)."""
    diffs = [x - y for x, y in zip(a, b)]
    n = len(diffs)
    if n < 2:
        return None, None
    sd = statistics.stdev(diffs)
    if sd == 0:
        return None, None
    t = statistics.mean(diffs) / (sd / math.sqrt(n))
    return t, _t_two_sided_p(t, n - 1)


def _t_two_sided_p(t: float, df: int) -> float:
    try:
        from scipy import stats
        return float(2 * stats.t.sf(abs(t), df))
    except ImportError:  # numerical integration of the t density: enough for a report
        x = abs(t)
        c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
        steps, upper = 20000, x + 200.0
        h = (upper - x) / steps
        area = sum(c * (1 + ((x + (i + 0.5) * h) ** 2) / df) ** (-(df + 1) / 2) for i in range(steps)) * h
        return min(1.0, 2 * area)


def table(runs: dict) -> tuple:
    """Rows: label → {metric: (mean, std)} for test, and test_ttt for t2arec."""
    rows = {}
    for label, seeds in runs.items():
        rows[label] = {m: mean_std([r["test"][m] for r in seeds]) for m in METRICS}
        rows[label]["seconds_per_epoch"] = mean_std([r["seconds_per_epoch"] for r in seeds])
        if all("test_ttt" in r for r in seeds):
            rows[f"{label} + test-time step"] = {m: mean_std([r["test_ttt"][m] for r in seeds]) for m in METRICS}
    return rows


def paired_vs_best(runs: dict) -> dict:
    """Paired t-test of T2ARec's test NDCG@10 against the better baseline, over the seeds both ran."""
    baselines = [b for b in ("sasrec", "backbone") if runs.get(b)]
    if not baselines or not runs.get("t2arec"):
        return {}
    best = max(baselines, key=lambda b: statistics.mean(r["test"]["ndcg@10"] for r in runs[b]))
    pairs = [(a["test"]["ndcg@10"], b["test"]["ndcg@10"]) for a in runs["t2arec"] for b in runs[best]
             if a["seed"] == b["seed"]]
    t, p = paired_t([a for a, _ in pairs], [b for _, b in pairs])
    return {"t2arec_vs": best, "metric": "test ndcg@10", "t": t, "p": p, "n_seeds": len(pairs)}


def kept_runs(json_path: Path, settings: dict, rerun: list) -> dict:
    """Runs of the models not re-run now, from an earlier study whose settings match (else an error: no mixing)."""
    if not json_path.exists():
        return {}
    old = json.loads(json_path.read_text())
    old_settings = {"seeds": old["seeds"], "max_epochs": old["max_epochs"], "overrides": old["overrides"]}
    if old_settings != settings:
        raise SystemExit(f"--merge: {json_path} was made with {old_settings}, this study uses {settings}; "
                         "rerun all models or use the same settings")
    return {label: seeds for label, seeds in old["runs"].items() if label not in rerun}


def write_report(json_path, args, ds, path, k_core, max_len, settings, runs, seconds) -> dict:
    done = {label: seeds for label, seeds in runs.items() if seeds}
    report = {"dataset": args.dataset, "path": str(path), "k_core": k_core, "max_len": max_len,
              "n_users": ds.n_users, "n_items": ds.n_items, **settings,
              "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads", "torch": torch.__version__,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "code": CODE,
              "wall_seconds": seconds,
              "summary": {k: {m: list(v) for m, v in r.items()} for k, r in table(done).items()},
              "paired_t_test": paired_vs_best(done), "runs": runs}
    json_io.write_json(json_path, report)
    return report


def plot_segments(runs: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    series = {label: [statistics.mean(s) for s in zip(*[r["test"]["ndcg@10_by_segment"] for r in seeds])]
              for label, seeds in runs.items() if label in ("sasrec", "backbone", "t2arec")}
    if "t2arec" in runs and all("test_ttt" in r for r in runs["t2arec"]):
        series["t2arec + test-time step"] = [statistics.mean(s) for s in
                                             zip(*[r["test_ttt"]["ndcg@10_by_segment"] for r in runs["t2arec"]])]
    if not series:                          # e.g. only ablations were run: nothing to compare by segment
        return
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        ax.bar([s + i * width for s in range(len(values))], values, width, label=label)
    ax.set_xticks([s + 0.4 - width / 2 for s in range(len(next(iter(series.values()))))])
    ax.set_xticklabels([f"segment {s + 1}" for s in range(len(next(iter(series.values()))))])
    ax.set_ylabel("test NDCG@10")
    ax.set_title(title + " — test users by test time (earliest → latest)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(series), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra config overrides for all runs")
    ap.add_argument("--out", type=Path, default=RESULTS, metavar="DIR", help="folder for the JSON and the plot")
    ap.add_argument("--keep", metavar="DIR", default=None,
                    help="keep every trained model (DIR/<dataset>/<model>/seed<k>/best, `t2arec evaluate` reads it)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the runs of other models from an earlier study with the same seeds, epochs and --set")
    ap.add_argument("--combine", nargs="+", metavar="JSON", default=None,
                    help="no training: add the runs of these studies (other processes' --out JSON) to this one's")
    args = ap.parse_args()
    if args.combine:
        json_path = Path(args.out) / f"reproduce_{args.dataset}.json"
        finish(combine(json_path, [Path(p) for p in args.combine]), json_path)
        return
    path, k_core, max_len = DATASETS[args.dataset]
    if not path.exists():
        raise SystemExit(f"{path} not found: the real data sets live in ../shared/datasets beside the checkout")
    extra = dict(kv.split("=", 1) for kv in args.set)
    data_over = {"dataset": str(path), "min_count": k_core, "max_len": max_len}
    ds = load_dataset(str(path), min_count=k_core, verbose=False, tie_order=extra.get("tie_order", "file"))
    split = leave_one_out(ds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"reproduce_{args.dataset}.json"
    settings = {"seeds": args.seeds, "max_epochs": args.epochs, "overrides": extra}
    kept = kept_runs(json_path, settings, args.models) if args.merge else {}
    runs = {**kept, **{label: [] for label in args.models}}
    started = time.perf_counter()
    for seed in args.seeds:
        for label in args.models:
            keep = None if args.keep is None else Path(args.keep) / args.dataset / label.replace(" ", "_").replace(
                "/", "") / f"seed{seed}"
            r = run_one(ds, split, data_over, MODELS[label], seed, args.epochs, extra, keep)
            runs[label].append(r)
            print(f"{args.dataset} seed {seed} {label:<20} test "
                  + "  ".join(f"{m} {r['test'][m]:.4f}" for m in METRICS)
                  + f"  | seen masked ndcg@10 {r['test_masked']['ndcg@10']:.4f}"
                  + (f"  | +ttt ndcg@10 {r['test_ttt']['ndcg@10']:.4f}" if "test_ttt" in r else "")
                  + f"  ({r['epochs_run']} epochs, best {r['best_epoch']}, {r['seconds_per_epoch']:.1f} s/epoch)",
                  flush=True)
            # written after every run so that a stopped study keeps what it finished
            write_report(json_path, args, ds, path, k_core, max_len, settings, runs, time.perf_counter() - started)
    report = write_report(json_path, args, ds, path, k_core, max_len, settings, runs, time.perf_counter() - started)
    finish(report, json_path)


def finish(report: dict, json_path: Path) -> None:
    """Segment plot beside the JSON, and the mean ± std table on stdout."""
    runs, test = {k: v for k, v in report["runs"].items() if v}, report["paired_t_test"]
    name = report["dataset"]
    try:
        plot_segments(runs, json_path.parent / f"segments_{name}.png", name)
    except ImportError:
        print("matplotlib not installed: no plot")
    print(f"\n{name}: test, mean ± std over seeds {report['seeds']} (full ranking, history not masked)")
    print(f"  {'model':<34}" + "".join(f"{m:>18}" for m in METRICS) + f"{'s/epoch':>10}")
    for label, r in table(runs).items():
        spe = r.get("seconds_per_epoch")
        print(f"  {label:<34}" + "".join(f"{r[m][0]:>10.4f} ± {r[m][1]:.4f}" for m in METRICS)
              + (f"{spe[0]:>10.1f}" if spe else ""))
    if test:
        print(f"  paired t-test t2arec vs {test['t2arec_vs']} (test NDCG@10): t = {test['t']}, p = {test['p']}")
    print(f"  wall time {report['wall_seconds'] / 60:.1f} min; wrote {json_path}")


def combine(json_path: Path, others: list) -> dict:
    """Union of the runs of several studies of one data set with the same epochs and overrides — a study split
    across processes (one per core, e.g. one seed each) — written to json_path. No training."""
    paths = [json_path, *others]
    for p in paths:
        if not p.exists():
            raise SystemExit(f"--combine: {p} not found")
    studies = [json.loads(p.read_text()) for p in paths]
    base = studies[0]
    for p, study in zip(paths[1:], studies[1:]):
        for key in ("dataset", "k_core", "max_len", "max_epochs", "overrides"):
            if study[key] != base[key]:
                raise SystemExit(f"--combine: {p} has {key} = {study[key]!r}, {json_path} has {base[key]!r}")
    runs = {}
    for p, study in zip(paths, studies):
        for label, seeds in study["runs"].items():
            twice = {r["seed"] for r in runs.get(label, [])} & {r["seed"] for r in seeds}
            if twice:
                raise SystemExit(f"--combine: {label} seed(s) {sorted(twice)} of {p} are already in another study")
            runs.setdefault(label, []).extend(seeds)
    runs = {label: sorted(seeds, key=lambda r: r["seed"]) for label, seeds in runs.items()}
    done = {label: seeds for label, seeds in runs.items() if seeds}
    report = {**base, "seeds": sorted({r["seed"] for seeds in done.values() for r in seeds}),
              "date": max(study["date"] for study in studies),
              "code": " & ".join(sorted({study.get("code", "unknown") for study in studies})),
              "wall_seconds": sum(study["wall_seconds"] for study in studies),
              "combined_from": [{"file": str(p), "seeds": study["seeds"], "date": study["date"],
                                 "code": study.get("code", "unknown"), "wall_seconds": study["wall_seconds"]}
                                for p, study in zip(paths, studies)],
              "summary": {k: {m: list(v) for m, v in r.items()} for k, r in table(done).items()},
              "paired_t_test": paired_vs_best(done), "runs": runs}
    json_io.write_json(json_path, report)
    return report

if __name__ == "__main__":
    main()
