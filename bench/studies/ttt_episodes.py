"""Does a per-episode test-time step gain from what its users share because of how the data numbers them?

A test-time step taken once per episode of B users (`ttt_batch_size` B > 1) adapts the model to those users
together, so its result depends on how users are grouped (`ttt_order`, t2arec_fast/evaluate.py): "stored" (the
data's own user order, what evaluation used before 2026-12-01), "random" (a fixed permutation) or "time" (by request
time, each episode adapting on the events before its earliest request only: what a server batching concurrent
requests could do, and the default). This study evaluates kept models with the same step in every order, on
validation and test, beside no step, and measures what an order gives away: the share of users whose target item is
in another member's history, and the median span of an episode's request times.

    python -m bench.studies.ttt_episodes yelp-a --keep DIR --model backbone --seeds 0 1 2 \\
        --ttt_rule relative --ttt_lr 0.1 --episode 64
    python -m bench.studies.ttt_episodes yelp-a --combine A.json B.json

DIR/<data>/<model>/seed<S>/best are models kept by `python -m bench.studies.reproduce ... --keep DIR`. Writes
bench/results/ttt_episodes_<data>_<model>_<B>.json (or --out) and prints the table; `python -m bench.studies.report`
renders it into docs/results.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from bench.harness import add_out_argument, code_version, environment, join_seed_runs, write_json
from bench.studies.reproduce import DATASETS, paired_t
from t2arec_fast.config import CHOICES, TTTConfig
from t2arec_fast.data import leave_one_out, load_dataset
from t2arec_fast.evaluate import EPISODE_ORDERS, episode_order, evaluate
from t2arec_fast.model import load_model

DAY = 86_400


def order_facts(split, part: str, order: str, episode: int) -> dict:
    """What episodes formed in `order` share: the share of users whose target is in another member's history
    (their events before their own target), and the median span of the episodes' request times (days)."""
    examples = split.part(part)
    index = episode_order(split, part, order)
    items, offsets = split.dataset.items, split.dataset.offsets
    targets = items[examples.stops]
    request = split.dataset.timestamps[examples.stops]
    shared, spans = 0, []
    for b in range(0, len(index), episode):
        members = index[b:b + episode]
        seen = {}
        for m in members:                                 # item → members that have it in their history
            for item in set(items[offsets[examples.users[m]]:examples.stops[m]].tolist()):
                seen.setdefault(item, set()).add(m)
        shared += sum(bool(seen.get(int(targets[m]), set()) - {m}) for m in members)
        spans.append((request[members].max() - request[members].min()) / DAY)
    return {"target_in_another_members_history": shared / len(index), "median_span_days": float(np.median(spans))}


def study_seed(model, split, max_len: int, ttt: TTTConfig) -> dict:
    """NDCG@10 with no step and with the step in every episode order, on validation and test."""
    out = {}
    for part in ("valid", "test"):
        row = {"no step": evaluate(model, split, part, max_len)["ndcg@10"]}
        for order in EPISODE_ORDERS:
            row[order] = evaluate(model, split, part, max_len, ttt=dataclasses.replace(ttt, ttt_order=order))["ndcg@10"]
        out[part] = row
    return out


def paired_summary(seeds: dict) -> dict:
    """Test and validation: every order against no step, and "stored" against "time" (paired t over seeds)."""
    out = {}
    for part in ("valid", "test"):
        rows = [seeds[s][part] for s in seeds]
        pairs = [(order, "no step") for order in EPISODE_ORDERS] + [("stored", "time")]
        for a, b in pairs:
            t, p = paired_t([r[a] for r in rows], [r[b] for r in rows])
            out[f"{part}: {a} − {b}"] = {"mean_diff": statistics.mean(r[a] - r[b] for r in rows), "t": t, "p": p}
    return out


def table_markdown(report: dict) -> str:
    """Per order: what its episodes share, and mean ± sd (per seed) NDCG@10 on validation and test."""
    seeds, facts = report["seeds"], report["facts"]
    lines = ["| episodes of users in | targets in another member's history (test) | median span of requests, "
             "days (test) | valid NDCG@10 | test NDCG@10 |", "|---|---|---|---|---|"]
    for name in ("no step",) + tuple(EPISODE_ORDERS):
        cells = []
        for part in ("valid", "test"):
            values = [seeds[s][part][name] for s in seeds]
            sd = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.4f}{sd} ({' / '.join(f'{v:.4f}' for v in values)})")
        shared = "—" if name == "no step" else f"{facts[name]['target_in_another_members_history']:.1%}"
        span = "—" if name == "no step" else f"{facts[name]['median_span_days']:.1f}"
        lines.append(f"| {name} | {shared} | {span} | {cells[0]} | {cells[1]} |")
    lines.append("")
    for key, row in report["paired"].items():
        p = "—" if row["p"] is None else f"{row['p']:.3f}"
        lines.append(f"- {key}: {row['mean_diff']:+.4f} (p = {p})")
    return "\n".join(lines)


def combine(reports: list, files: list) -> dict:
    """One study from runs of other seeds; refuses another data set, model or step, and a seed found twice."""
    return join_seed_runs(reports, files, ("dataset", "model", "ttt", "facts"), paired_summary)


def file_name(report: dict) -> str:
    return f"ttt_episodes_{report['dataset']}_{report['model']}_{report['ttt']['ttt_batch_size']}.json"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument("--keep", metavar="DIR", type=Path, help="models kept by the reproduction study")
    ap.add_argument("--model", default="backbone", help="model label in the study (backbone, t2arec, ...)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ttt_rule", default="relative", choices=CHOICES["ttt_rule"])
    ap.add_argument("--ttt_lr", type=float, default=0.1)
    ap.add_argument("--episode", type=int, default=64, help="users per episode (ttt_batch_size, at least 2)")
    ap.add_argument("--combine", nargs="+", type=Path, metavar="JSON", default=None)
    add_out_argument(ap)
    args = ap.parse_args(argv)
    if args.combine:
        report = combine([json.loads(p.read_text()) for p in args.combine], [str(p) for p in args.combine])
        write_json(args.out, file_name(report), report)
        print(table_markdown(report))
        return
    if args.keep is None:
        ap.error("--keep DIR is required (or --combine JSON ...)")
    if args.episode < 2:
        ap.error("--episode must be at least 2: a user alone in its episode does not depend on the order")
    ttt = TTTConfig(ttt_rule=args.ttt_rule, ttt_lr=args.ttt_lr, ttt_batch_size=args.episode)
    path, k_core, max_len = DATASETS[args.dataset]
    split = leave_one_out(load_dataset(str(path), min_count=k_core, verbose=False))
    torch.set_num_threads(1)
    facts = {order: order_facts(split, "test", order, args.episode) for order in EPISODE_ORDERS}
    seeds = {}
    for seed in args.seeds:
        folder = args.keep / args.dataset / args.model / f"seed{seed}" / "best"
        if not folder.exists():
            raise SystemExit(f"no kept model at {folder}: run the reproduction study with --keep {args.keep} first")
        seeds[seed] = study_seed(load_model(folder), split, max_len, ttt)
        print(f"seed {seed}: " + "; ".join(f"{part} " + ", ".join(f"{name} {value:.4f}" for name, value in row.items())
                                            for part, row in seeds[seed].items()), flush=True)
    report = {"dataset": args.dataset, "model": args.model, "keep": str(args.keep), "ttt": dataclasses.asdict(ttt),
              "facts": facts, "code": code_version(), "environment": environment(), "seeds": seeds,
              "paired": paired_summary(seeds)}
    write_json(args.out, file_name(report), report)
    print(table_markdown(report))


if __name__ == "__main__":
    main()
