"""How large must the test-time step be to do anything, and does it pay off? Chosen on VALIDATION data only.

The paper's step (α = 0.005 on μ1' L_time + μ2' L_state, batches of 256 users) moves the tamed models' parameters
by ~1e-5 relative: a numerical no-op (docs/results.md). This study takes models trained by the reproduction study
(`python -m bench.studies.reproduce DATA ... --keep DIR`), evaluates a grid of step sizes on validation — plain SGD
α over four decades and the scale-free rule (`ttt_rule=relative`: a chosen relative change ρ of every adapted
tensor) — and runs on test only the paper's step and the one validation chose (if it beat "no step" there).

    python -m bench.studies.ttt_step amazon-beauty --keep DIR --seeds 0 1 2 [--model t2arec] [--out DIR]
    python -m bench.studies.ttt_step amazon-beauty --combine A.json B.json [--out DIR]   # seeds run apart, joined

For every setting it records NDCG@10, the mean relative parameter change ‖θ'−θ‖/‖θ‖ on the first batch and the
share of users whose target rank moved, so that "no effect" and "no change" can be told apart.
Writes DIR/ttt_step_<data>_<model>.json (default bench/results) and prints the table; `python -m
bench.studies.report` renders the same table into docs/results.md.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.harness import add_out_argument, code_version, environment, join_seed_runs, write_json
from bench.studies.reproduce import DATASETS, paired_t
from t2arec_fast import adapt
from t2arec_fast.adapt import episode_parameters
from t2arec_fast.config import TTTConfig
from t2arec_fast.data import eval_batches, leave_one_out, load_dataset
from t2arec_fast.evaluate import EPISODE_ORDERS, episode_order, evaluate
from t2arec_fast.metrics import ndcg_per_example
from t2arec_fast.model import load_model

PAPER = ("sgd", 0.005)
# (rule, size): the paper's α first, then SGD two and four decades up, then the scale-free rule's relative sizes
GRID = [PAPER, ("sgd", 0.5), ("sgd", 5.0), ("sgd", 50.0),
        ("relative", 0.001), ("relative", 0.01), ("relative", 0.03), ("relative", 0.1), ("relative", 0.2),
        ("relative", 0.5)]
# Controls at validation's choice, on validation and test (explanations, never chosen): is it the alignment
# losses' direction that helps, and which loss? Same rule, size and reached tensors.
CONTROLS = ("L_time only", "L_state only", "opposite direction", "random direction")


def setting(rule: str, size: float, episode: int = 256, order: str = "time") -> TTTConfig:
    """The paper's test-time step (all parameters, μ1' = μ2' = 0.1, one update, 256 users per episode, episodes
    in the default order: by request time, bench/studies/ttt_episodes.py) with the update rule and size changed —
    nothing else, so the size is the only question asked. episode: users per episode (1 = each user alone, the
    form serving uses); order: how users are grouped into episodes (`ttt_order`)."""
    return TTTConfig(ttt_rule=rule, ttt_lr=size, ttt_batch_size=episode, ttt_order=order)


@contextlib.contextmanager
def direction(kind: str, seed: int = 0):
    """Within the block, every test-time update moves along another direction than −∇(μ1' L_time + μ2' L_state):
    "opposite" (+∇: ascent) or "random" (a Gaussian direction with the gradient's norm, drawn anew per update;
    zero for the tensors the losses do not reach); `adapt.update` then applies the same rule and size. A study
    control: it swaps adapt.alignment_update for the duration and puts it back."""
    original = adapt.alignment_update
    generator = torch.Generator().manual_seed(seed)

    def other_direction(aux_losses, fast, items, times, target_times, mu_time, mu_state, lr, rule="sgd"):
        grads = adapt.alignment_gradients(fast, aux_losses, items, times, target_times, mu_time, mu_state)
        if kind == "opposite":
            grads = {k: -g for k, g in grads.items()}
        else:                        # a Gaussian direction with the gradient's norm, so that either rule moves as far
            grads = {k: _same_norm(torch.randn(g.shape, generator=generator, dtype=g.dtype), g)
                     for k, g in grads.items()}
        return {name: adapt.update(t, grads[name], lr, rule) for name, t in fast.items()}

    adapt.alignment_update = other_direction
    try:
        yield
    finally:
        adapt.alignment_update = original


def _same_norm(direction: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """`direction` rescaled to ‖grad‖ (zero where the losses do not reach the tensor)."""
    norm = float(direction.norm())
    return direction * (float(grad.norm()) / norm) if norm > 0 else direction * 0


def controls_for(episode: int) -> tuple:
    """The controls a study runs: the direction controls swap the shared-episode update (`direction`), which
    per-user episodes (vmap over `adapt.update`) do not call."""
    return CONTROLS if episode > 1 else tuple(c for c in CONTROLS if "direction" not in c)


def control_run(model, split, which: str, max_len: int, chosen: dict, control: str, episode: int = 256,
                order: str = "time") -> float:
    """NDCG@10 on `which` with validation's chosen step changed as `control` says (CONTROLS)."""
    cfg = setting(chosen["rule"], chosen["size"], episode, order)
    if control == "L_time only":
        cfg = dataclasses.replace(cfg, ttt_mu_state=0.0)
    elif control == "L_state only":
        cfg = dataclasses.replace(cfg, ttt_mu_time=0.0)
    other = control in ("opposite direction", "random direction")
    with direction(control.split()[0]) if other else contextlib.nullcontext():
        return evaluate(model, split, which, max_len, ttt=cfg)["ndcg@10"]


def relative_change(model, split, max_len: int, ttt: TTTConfig) -> float:
    """Mean over the adapted tensors of ‖θ'−θ‖/‖θ‖ after the step on the first validation episode as evaluation
    forms it (`ttt_order`, causal for "time"; tensors the losses do not reach, such as the FFN, count with 0)."""
    order = episode_order(split, "valid", ttt.ttt_order)
    batch = next(iter(eval_batches(split, "valid", max_len, ttt.ttt_batch_size, order=order))).to_torch("cpu")
    model.eval()
    fast = episode_parameters(model, batch.items, batch.times, batch.target_times, ttt,
                              causal=ttt.ttt_order == "time" and ttt.ttt_batch_size > 1)
    own = {k: v.detach() for k, v in model.named_parameters()}
    changes = [float((fast[k] - own[k]).norm() / own[k].norm()) for k in fast if float(own[k].norm()) > 0]
    return statistics.mean(changes)


def study_seed(model, split, max_len: int, episode: int = 256, order: str = "time") -> dict:
    """Validation grid, then test for no step, the paper's step and validation's choice (`episode` users per
    episode)."""
    plain = {w: evaluate(model, split, w, max_len, return_ranks=True) for w in ("valid", "test")}
    plain_valid = ndcg_per_example(plain["valid"]["ranks"])
    grid = []
    for rule, size in GRID:
        cfg = setting(rule, size, episode, order)
        t0 = time.perf_counter()
        res = evaluate(model, split, "valid", max_len, ttt=cfg, return_ranks=True)
        grid.append({"rule": rule, "size": size, "valid_ndcg@10": res["ndcg@10"],
                     "valid_vs_no_step": float((ndcg_per_example(res["ranks"]) - plain_valid).mean()),
                     "share_of_ranks_moved": float(np.mean(np.asarray(res["ranks"]) != plain["valid"]["ranks"])),
                     "relative_parameter_change": relative_change(model, split, max_len, cfg),
                     "seconds": time.perf_counter() - t0})
    best = max(grid, key=lambda g: g["valid_ndcg@10"])
    chosen = best if best["valid_ndcg@10"] > plain["valid"]["ndcg@10"] else None
    out = {"valid": plain["valid"]["ndcg@10"], "test": plain["test"]["ndcg@10"], "grid": grid,
           "chosen": None if chosen is None else {"rule": chosen["rule"], "size": chosen["size"]}}
    paper = evaluate(model, split, "test", max_len, ttt=setting(*PAPER, episode, order), return_ranks=True)
    out["test_paper_step"] = paper["ndcg@10"]
    out["test_chosen"] = plain["test"]["ndcg@10"]
    if chosen is not None:
        out["test_chosen"] = evaluate(model, split, "test", max_len,
                                      ttt=setting(chosen["rule"], chosen["size"], episode, order))["ndcg@10"]
        out["controls"] = {c: {w: control_run(model, split, w, max_len, out["chosen"], c, episode, order)
                               for w in ("valid", "test")} for c in controls_for(episode)}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument("--keep", metavar="DIR", type=Path,
                    help="the reproduction study's --keep folder (DIR/<dataset>/<model>/seed<k>/best)")
    ap.add_argument("--model", default="t2arec", help="model label in the study (t2arec, backbone, ...)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--episode", type=int, default=256,
                    help="users per episode (the paper: 256; 1 = each user alone, the form serving uses)")
    ap.add_argument("--order", default="time", choices=EPISODE_ORDERS,
                    help="how users are grouped into episodes (ttt_order; 'stored' = before 2026-12-01)")
    ap.add_argument("--combine", nargs="+", type=Path, metavar="JSON", default=None,
                    help="join finished studies of other seeds (same data, model and grid) instead of running")
    add_out_argument(ap)
    args = ap.parse_args(argv)
    if args.combine:
        report = combine([json.loads(p.read_text()) for p in args.combine], [str(p) for p in args.combine])
        write_json(args.out, file_name(report), report)
        print(table_markdown(report))
        return
    if args.keep is None:
        ap.error("--keep DIR is required (or --combine JSON ...)")
    path, k_core, max_len = DATASETS[args.dataset]
    split = leave_one_out(load_dataset(str(path), min_count=k_core, verbose=False))
    torch.set_num_threads(1)
    seeds = {}
    for seed in args.seeds:
        folder = args.keep / args.dataset / args.model.replace(" ", "_") / f"seed{seed}" / "best"
        if not folder.exists():
            raise SystemExit(f"no kept model at {folder}: run the reproduction study with --keep {args.keep} first")
        seeds[seed] = study_seed(load_model(folder), split, max_len, args.episode, args.order)
        print(f"seed {seed}: " + summary_line(seeds[seed]), flush=True)
    report = {"dataset": args.dataset, "model": args.model, "keep": str(args.keep), "code": code_version(),
              "environment": environment(), "grid": [list(g) for g in GRID],
              "episode": args.episode, "episode_order": args.order, "seeds": seeds,
              "paired": paired_summary(seeds)}
    write_json(args.out, file_name(report), report)
    print(table_markdown(report))


def file_name(report: dict) -> str:
    """ttt_step_<data>_<model>[_per_user | _e<B>].json (no suffix: the paper's 256 users per episode)."""
    episode, order = report.get("episode", 256), report.get("episode_order", "stored")
    suffix = "" if episode == 256 else "_per_user" if episode == 1 else f"_e{episode}"
    suffix += "" if order == "time" or episode == 1 else f"_{order}"
    return f"ttt_step_{report['dataset']}_{report['model'].replace(' ', '_')}{suffix}.json"


def combine(reports: list, files: list) -> dict:
    """One study from several runs of other seeds (run one process per core); refuses runs of another data set,
    model or grid, and a seed found twice."""
    return join_seed_runs(reports, files, ("dataset", "model", "grid", "episode", "episode_order"), paired_summary)


def summary_line(r: dict) -> str:
    chosen = "no step" if r["chosen"] is None else f"{r['chosen']['rule']} {r['chosen']['size']:g}"
    return (f"valid {r['valid']:.4f} test {r['test']:.4f}; paper's step test {r['test_paper_step']:.4f}; "
            f"validation chose {chosen}: test {r['test_chosen']:.4f}")


def paired_summary(seeds: dict) -> dict:
    """Paired t-tests over seeds of test NDCG@10: the paper's step and validation's choice vs no step."""
    base = [r["test"] for r in seeds.values()]
    out = {}
    for key in ("test_paper_step", "test_chosen"):
        other = [r[key] for r in seeds.values()]
        t, p = paired_t(other, base)
        out[key] = {"mean_difference": statistics.mean(o - b for o, b in zip(other, base)), "t": t, "p": p}
    return out


LABELS = {"test_paper_step": "the paper's step (sgd 0.005)", "test_chosen": "validation's choice"}


def table_markdown(report: dict) -> str:
    """The grid on validation (means over seeds), then test: no step, the paper's step, validation's choice per
    seed, with paired t-tests against no step (what docs/results.md shows)."""
    seeds = report["seeds"]
    lines = ["| rule | size | valid NDCG@10 (mean over seeds) | valid vs no step | ranks moved | ‖θ'−θ‖/‖θ‖ |",
             "|---|---|---|---|---|---|",
             f"| no step | — | {statistics.mean(r['valid'] for r in seeds.values()):.4f} | — | — | 0 |"]
    for i, (rule, size) in enumerate(report["grid"]):
        rows = [r["grid"][i] for r in seeds.values()]
        mean = lambda key: statistics.mean(g[key] for g in rows)   # noqa: E731
        lines.append(f"| {rule} | {size:g} | {mean('valid_ndcg@10'):.4f} | {mean('valid_vs_no_step'):+.5f} | "
                     f"{100 * mean('share_of_ranks_moved'):.1f} % | {mean('relative_parameter_change'):.1e} |")
    lines += ["", "| seed | validation chose | test, no step | test, paper's step | test, validation's choice |",
              "|---|---|---|---|---|"]
    for seed, r in seeds.items():
        chosen = "no step" if r["chosen"] is None else f"{r['chosen']['rule']} {r['chosen']['size']:g}"
        lines.append(f"| {seed} | {chosen} | {r['test']:.4f} | {r['test_paper_step']:.4f} | {r['test_chosen']:.4f} |")
    with_controls = [(s, r) for s, r in seeds.items() if r.get("controls")]
    if with_controls:
        lines += ["", "Controls at validation's choice (same rule, size and tensors; not chosen, explanations), "
                  "valid / test NDCG@10:", "",
                  "| seed | step as chosen | " + " | ".join(CONTROLS) + " |", "|---|---|" + "---|" * len(CONTROLS)]
        for seed, r in with_controls:
            cells = [f"{r['controls'][c]['valid']:.4f} / {r['controls'][c]['test']:.4f}" if c in r["controls"]
                     else "not run (per user)" for c in CONTROLS]
            best = next(g for g in r["grid"] if (g["rule"], g["size"]) == (r["chosen"]["rule"], r["chosen"]["size"]))
            lines.append(f"| {seed} | {best['valid_ndcg@10']:.4f} / {r['test_chosen']:.4f} | " + " | ".join(cells)
                         + " |")
    lines.append("")
    for key, res in report["paired"].items():
        p = "—" if res["p"] is None else f"{res['p']:.2f}"
        lines.append(f"- {LABELS[key]} vs no step, test NDCG@10: mean difference {res['mean_difference']:+.5f} "
                     f"(p = {p}, {len(seeds)} seeds).")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
