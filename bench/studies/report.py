"""Render the generated tables of docs/results.md: the real-data studies (bench/results/reproduce_<dataset>.json,
bench/studies/reproduce.py; a shipped recipe's study beside the defaults', reproduce_<dataset>_<recipe>.json),
the same-budget searches (same_budget_<dataset>_<model>.json), the validation searches
(bench/results/tune_<name>.json, bench/studies/tune_alignment.py), the test-time step sizes (ttt_step_*.json)
and episode orders (ttt_episodes_*.json), the order of ties (tie_order_*.json) and RecBole's SASRec run side by side
(recbole_sasrec_*.json, bench/recbole_sasrec.py).

    python -m bench.studies.report            # rewrites the block between the reproduce markers in docs/results.md
    python -m bench.studies.report --print    # only prints it

One table per data set: test Recall/MRR/NDCG@10 (mean ± std over seeds) for the baselines, the ablations, T2ARec
without and with the test-time step; validation NDCG@10, best epoch and seconds per epoch beside them; paired
t-tests of T2ARec against the better baseline and of the test-time step against no step. Nothing is typed by hand:
rerun the study, then this script.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Optional

from bench.harness import RESULTS, ROOT
from bench.studies.reproduce import DATASETS, mean_std, paired_t

DOC = ROOT / "docs" / "results.md"
BEGIN, END = "<!-- reproduce:begin (bench/studies/report.py) -->", "<!-- reproduce:end -->"
ORDER = ("sasrec", "backbone", "t2arec w/o L_time", "t2arec w/o L_state", "t2arec", "t2arec mu1, per-user step")
METRICS = ("recall@10", "mrr@10", "ndcg@10")


def fmt(values: list) -> str:
    return "{:.4f} ± {:.4f}".format(*mean_std(values))


def rows_of(report: dict) -> list:
    """(label, runs, split) in display order; T2ARec with the test-time step after it."""
    rows = []
    for label in ORDER:
        runs = report["runs"].get(label) or []
        if not runs:
            continue
        rows.append((label if label != "t2arec" else "t2arec, no test-time step", runs, "test"))
        if label == "t2arec" and all("test_ttt" in r for r in runs):
            rows.append(("t2arec + test-time step (paper's Algorithm 1)", runs, "test_ttt"))
        if label == "t2arec mu1, per-user step" and all("test_ttt" in r for r in runs):
            rows[-1] = ("t2arec μ = 1, no test-time step", runs, "test")
            rows.append(("t2arec μ = 1 + per-user test-time step", runs, "test_ttt"))
    return rows


def paired(report: dict, a: str, split_a: str, b: str, split_b: str) -> str:
    ra = {r["seed"]: r[split_a]["ndcg@10"] for r in report["runs"].get(a, [])}
    rb = {r["seed"]: r[split_b]["ndcg@10"] for r in report["runs"].get(b, [])}
    seeds = sorted(set(ra) & set(rb))
    t, p = paired_t([ra[s] for s in seeds], [rb[s] for s in seeds])
    diff = statistics.mean(ra[s] - rb[s] for s in seeds) if seeds else float("nan")
    if t is None:
        if len(seeds) > 1 and all(ra[s] == rb[s] for s in seeds):
            return f"identical on all {len(seeds)} seeds"
        return f"mean difference {diff:+.4f} over {len(seeds)} seed(s) (too few seeds for a t-test)"
    verdict = "significant at 0.05" if p < 0.05 else "not significant"
    return f"mean difference {diff:+.4f}, t = {t:.2f}, p = {p:.2f} over {len(seeds)} seeds ({verdict})"


def dataset_section(report: dict, heading: Optional[str] = None, plot: bool = True) -> str:
    """One study's table and tests; heading defaults to "### <data>", plot adds the data set's segment plot."""
    name = report["dataset"]
    lines = [f"{heading or '### ' + name} — `{command_of(report)}`", "",
             "| model | seeds | test Recall@10 | test MRR@10 | test NDCG@10 | valid NDCG@10 | best epoch | s/epoch |",
             "|---|---|---|---|---|---|---|---|"]
    for label, runs, split in rows_of(report):
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(fmt([r[split][m] for r in runs]) for m in METRICS)
                     + f" | {fmt([r['valid']['ndcg@10'] for r in runs])}"
                     + f" | {statistics.mean(r['best_epoch'] for r in runs):.0f}"
                     + f" | {statistics.mean(r['seconds_per_epoch'] for r in runs):.1f} |")
    lines.append("")
    baselines = [b for b in ("sasrec", "backbone") if report["runs"].get(b)]
    best = max(baselines, key=lambda b: statistics.mean(r["test"]["ndcg@10"] for r in report["runs"][b]),
               default=None)
    if report["runs"].get("t2arec") and best:
        lines.append(f"- T2ARec (no step) vs {best}, the better baseline, test NDCG@10: "
                     + paired(report, "t2arec", "test", best, "test") + ".")
        if all("test_ttt" in r for r in report["runs"]["t2arec"]):
            lines.append("- T2ARec with vs without the test-time step, test NDCG@10: "
                         + paired(report, "t2arec", "test_ttt", "t2arec", "test") + ".")
    tuned = "t2arec mu1, per-user step"
    if report["runs"].get(tuned) and all("test_ttt" in r for r in report["runs"][tuned]) and best:
        lines.append(f"- T2ARec μ = 1 + per-user step vs {best}, test NDCG@10: "
                     + paired(report, tuned, "test_ttt", best, "test") + "; the step alone (with vs without): "
                     + paired(report, tuned, "test_ttt", tuned, "test") + ".")
    for ablation in ("t2arec w/o L_time", "t2arec w/o L_state"):
        if report["runs"].get(ablation) and report["runs"].get("t2arec"):
            lines.append(f"- T2ARec vs {ablation}, test NDCG@10: "
                         + paired(report, "t2arec", "test", ablation, "test") + ".")
    lines += ["", f"{report['n_users']:,} users, {report['n_items']:,} items after the {report['k_core']}-core filter, "
              f"max length {report['max_len']}, seeds {report['seeds']}, at most {report['max_epochs']} epochs with "
              f"early stopping on validation NDCG@10, overrides {report['overrides'] or 'none'} on top of the package "
              f"defaults; {report['machine']}, torch {report['torch']}, finished {report['date']}, "
              + (f"{report['wall_seconds'] / 60:.0f} min summed over {len(report['combined_from'])} processes run "
                 "side by side" if report.get("combined_from") else
                 f"{report['wall_seconds'] / 60:.0f} min for the last invocation")
              + " (seconds per epoch are inflated when "
              "two studies shared the 2 cores; clean epoch times are in docs/benchmarks.md)."]
    figure = RESULTS / f"segments_{name}.png"
    if plot and figure.exists():
        lines += ["", f"![NDCG@10 per test-time segment on {name}](../bench/results/{figure.name})"]
    return "\n".join(lines)


def command_of(report: dict) -> str:
    sets = " ".join(f"{k}={v}" for k, v in report["overrides"].items())
    return (f"python -m bench.studies.reproduce {report['dataset']} --seeds {' '.join(map(str, report['seeds']))} "
            f"--epochs {report['max_epochs']}" + (f" --set {sets}" if sets else ""))


TUNE_BEGIN, TUNE_END = "<!-- tune:begin (bench/studies/report.py) -->", "<!-- tune:end -->"


def tune_section(name: str, report: dict) -> str:
    """One validation search of bench/studies/tune_alignment.py: pre-training variants, then the step chosen on
    valid."""
    batch = f" --batch-size {report['batch_size']}" if report.get("batch_size", 256) != 256 else ""
    command = f"python -m bench.studies.tune_alignment {report['dataset']} --epochs {report['epochs']}{batch}"
    lines = [f"### {name} — `{command}`", "",
             "| variant | valid NDCG@10 | test NDCG@10 | step chosen on valid (params, α, μ', users per batch) "
             "| valid with it | test with it |", "|---|---|---|---|---|---|"]
    for vname, v in report["variants"].items():
        chosen, test_ttt = v.get("ttt_chosen_on_valid"), v.get("test_ttt")
        if chosen and test_ttt:
            step = (f"{chosen['ttt_params']}, {chosen['ttt_lr']}, {chosen['ttt_mu']}, {chosen['ttt_batch_size']} | "
                    f"{chosen['valid']['ndcg@10']:.4f} | {test_ttt['ndcg@10']:.4f}")
        elif "ttt_grid" in v:
            step = "none beat no step | — | —"
        else:
            step = "— | — | —"
        lines.append(f"| {vname} | {v['valid']['ndcg@10']:.4f} | {v['test']['ndcg@10']:.4f} | {step} |")
    lines += ["", f"{report['n_users']:,} users, {report['n_items']:,} items, seed {report['seed']}, at most "
              f"{report['epochs']} epochs (patience 5), {report['machine']}, torch {report['torch']}, "
              f"{report['date']}. Variants: " + "; ".join(f"{k} = {v['overrides']}"
                                                         for k, v in report["variants"].items()) + "."]
    return "\n".join(lines)


def render_tune() -> str:
    return "\n\n".join(tune_section(p.stem[len("tune_"):], json.loads(p.read_text()))
                        for p in sorted(RESULTS.glob("tune_*.json")))


SHIFT_BEGIN, SHIFT_END = "<!-- shift:begin (bench/studies/report.py) -->", "<!-- shift:end -->"


def render_shift() -> str:
    """The synthetic shift studies (bench/studies/shift_study.py, one JSON per seed and variant) as one table: each
    test-time setting's NDCG@10 (mean ± std over seeds) overall and on targets right after a true shift, the
    paired difference to no step, and how many seeds' validation chose it."""
    studies = {}
    for path in sorted(RESULTS.glob("shift_study*.json")):
        report = json.loads(path.read_text())
        studies.setdefault(shift_variant(report), []).append(report)
    lines = ["| model, data | test-time step | seeds | valid NDCG@10 | test NDCG@10 | test, after a true shift | "
             "test vs no step (paired) | chosen on valid |", "|---|---|---|---|---|---|---|---|"]
    for variant, reports in studies.items():
        if "model=backbone" in variant:             # no alignment losses: only the variants table below
            continue
        reports = sorted(reports, key=lambda r: r["seed"])
        base = [r["rows"][0]["test"]["ndcg@10"] for r in reports]
        voted = [r for r in reports if "chosen_on_valid" in r]
        settings = [(row["setting"].strip(), [r["rows"][i] for r in reports])
                    for i, row in enumerate(reports[0]["rows"])]
        if voted and len(voted) == len(reports):      # each seed's own choice, scored on its test split
            settings.append(("**the step validation chose, per seed**",
                             [next(row for row in r["rows"] if row["setting"] == r["chosen_on_valid"])
                              for r in reports]))
        for i, (label, rows) in enumerate(settings):
            cells = [[row[split][key] for row in rows]
                     for split, key in (("valid", "ndcg@10"), ("test", "ndcg@10"), ("test", "ndcg@10_after_shift"))]
            t, p = paired_t(cells[1], base) if i else (None, None)
            versus = "—" if not i else (f"{statistics.mean(cells[1]) - statistics.mean(base):+.4f}"
                                        + (f", p = {p:.2f}" if p is not None else ""))
            chosen = (f"{sum(r['chosen_on_valid'].strip() == label for r in voted)} of {len(voted)}"
                      if voted and i < len(reports[0]["rows"]) else "—")
            lines.append(f"| {variant} | {label} | {len(reports)} | {fmt(cells[0])} | "
                         f"{fmt(cells[1])} | {fmt(cells[2])} | {versus} | {chosen} |")
    default = studies.get("package defaults, default data", [])
    lines += variants_vs_defaults(studies, default)
    curve = shift_curve(default)
    readout = studies.get(f"{REQUEST_GAP_READOUT}, default data", [])
    if readout:
        curve.update({f"request-gap readout, {k}": v
                      for k, v in shift_curve(readout, settings=CURVE_SETTINGS[:1]).items()})
    if curve:
        plot_shift_curve(curve, RESULTS / "shift_curve.png", len(default))
        positions = next(iter(curve.values()))
        lines += ["", "Around the shifts (package defaults, default data; valid and test targets pooled over the "
                  "seeds; targets per position in the header):", "",
                  "| setting | " + " | ".join(f"{offset_label(k)} ({n:,})" for k, (_, n) in positions.items()) + " |",
                  "|---" * (1 + len(positions)) + "|"]
        lines += [f"| {label} | " + " | ".join(f"{v:.4f}" for v, _ in points.values()) + " |"
                  for label, points in curve.items()]
        lines += ["", "![NDCG@10 around true shifts](../bench/results/shift_curve.png)"]
    commands = sorted({shift_command(r) for reports in studies.values() for r in reports})
    dates = sorted(r["date"] for reports in studies.values() for r in reports)
    return "\n".join(lines + ["", "Commands: " + "; ".join(f"`{c}`" for c in commands)
                              + f". Run {dates[0][:16]}–{dates[-1][:16]} UTC on the 2-core CPU VM."])


CURVE_SETTINGS = ("no test-time step", "paper: batch 256, all params, α 0.005, μ' 0.1",
                  "per user, L_time only, ssm params, α 10, gate 20×")


REQUEST_GAP_READOUT = "readout=request_gap"


def variants_vs_defaults(studies: dict, default: list) -> list:
    """Each model variant without a test-time step against the package defaults on the same seeds and data
    (paired by seed): what changing the model, not the step, does."""
    if not default:
        return []
    base = {r["seed"]: r["rows"][0] for r in default}
    lines = ["", "Model variants against the package defaults (no test-time step, paired by seed, default data):", "",
             "| model | seeds | valid NDCG@10 | test NDCG@10 | test, after a true shift | test vs defaults (paired) |",
             "|---|---|---|---|---|---|"]
    for variant, reports in studies.items():
        if not variant.endswith(", default data") or variant.startswith("package defaults"):
            continue
        paired = [(r["rows"][0], base[r["seed"]]) for r in sorted(reports, key=lambda r: r["seed"])
                  if r["seed"] in base]
        if not paired:
            continue
        valid = [row["valid"]["ndcg@10"] for row, _ in paired]
        test = [row["test"]["ndcg@10"] for row, _ in paired]
        after = [row["test"]["ndcg@10_after_shift"] for row, _ in paired]
        base_test = [b["test"]["ndcg@10"] for _, b in paired]
        _, p = paired_t(test, base_test)
        diff = statistics.mean(test) - statistics.mean(base_test)
        lines.append(f"| {variant.rsplit(', ', 1)[0]} | {len(paired)} | {fmt(valid)} | {fmt(test)} | {fmt(after)} | "
                     f"{diff:+.4f}" + (f", p = {p:.2f}" if p is not None else "") + " |")
    return lines


def shift_curve(reports: list, settings=CURVE_SETTINGS) -> dict:
    """setting → {offset: (NDCG@10, targets)} pooled over the valid and test targets of every seed's run."""
    curve = {}
    for label in settings:
        sums = {}
        for report in reports:
            row = next((r for r in report["rows"] if r["setting"] == label), None)
            for split in ("valid", "test"):
                for k, (ndcg, n) in ((row or {}).get(split, {}).get("ndcg@10_by_shift_offset") or {}).items():
                    total = sums.setdefault(int(k), [0.0, 0])
                    total[0], total[1] = total[0] + ndcg * n, total[1] + n
        if sums:
            curve[label] = {k: (v[0] / v[1], v[1]) for k, v in sorted(sums.items())}
    return curve


def offset_label(k: int) -> str:
    return f"{k:+d}" if k else "0"


def plot_shift_curve(curve: dict, path: Path, seeds: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for label, points in curve.items():
        ks = sorted(points)
        ax.plot(ks, [points[k][0] for k in ks], marker="o", label=label)
    ks = sorted(next(iter(curve.values())))
    ax.set_xticks(ks, [("≥ " if k == max(ks) else "") + offset_label(k) for k in ks])
    ax.axvline(-0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("target's position relative to a true interest shift (0 = first event of the new interest)")
    ax.set_ylabel("NDCG@10 (log scale)")
    ax.set_title(f"Synthetic set: NDCG@10 around true shifts (valid + test targets, {seeds} seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def shift_variant(report: dict) -> str:
    model = " ".join(report.get("overrides") or []) or "package defaults"
    data = report.get("data", "synthetic").partition(":")[2]
    return f"{model}, {data or 'default data'}"


def shift_command(report: dict) -> str:
    data = report.get("data", "synthetic").partition(":")[2]
    return (f"python -m bench.studies.shift_study --epochs {report['epochs']} --seed {report['seed']}"
            + (f" --set {' '.join(report['overrides'])}" if report.get("overrides") else "")
            + (f" --valid-after-shift {data.partition('=')[2]}" if data.startswith("valid_after_shift=") else ""))


def replace_block(text: str, begin: str, end: str, block: str) -> str:
    if begin not in text or end not in text:
        raise SystemExit(f"{DOC} lacks the markers {begin!r} … {end!r}: add them where the tables belong")
    head, rest = text.split(begin, 1)
    return f"{head}{begin}\n{block}\n{end}{rest.split(end, 1)[1]}"


README = ROOT / "README.md"
README_BEGIN, README_END = "<!-- results:begin (bench/studies/report.py) -->", "<!-- results:end -->"


def readme_table() -> str:
    """One line per studied data set: test NDCG@10 (mean ± std over seeds) of each model, and the paired test."""
    lines = ["| data (test NDCG@10, full ranking) | seeds | SASRec | backbone | T2ARec | + paper's test-time step | "
             "T2ARec vs better baseline |", "|---|---|---|---|---|---|---|"]
    for name in DATASETS:
        path = RESULTS / f"reproduce_{name}.json"
        if not path.exists():
            continue
        report = json.loads(path.read_text())
        runs = report["runs"]
        cell = lambda label, split="test": (fmt([r[split]["ndcg@10"] for r in runs[label]])  # noqa: E731
                                            if runs.get(label) else "—")
        t2a = runs.get("t2arec") or []
        step = cell("t2arec", "test_ttt") if t2a and all("test_ttt" in r for r in t2a) else "—"
        test = report.get("paired_t_test") or {}
        verdict = (f"p = {test['p']:.2f} (vs {test['t2arec_vs']})" if test.get("p") is not None else "—")
        seeds = len({r["seed"] for label in ("sasrec", "backbone", "t2arec") for r in runs.get(label, [])})
        lines.append(f"| {name}: `{command_of(report)}` | {seeds} | {cell('sasrec')} | {cell('backbone')} | "
                     f"{cell('t2arec')} | {step} | {verdict} |")
    return "\n".join(lines)


# The studies run before `rec_weighting=target` became the default (2026-11-30, docs/results.md) are kept under
# this suffix once the data set is rerun with the new defaults: reproduce_<data>_batch_weighting.json.
BEFORE = "_batch_weighting"


def before_after(before: dict, after: dict) -> str:
    """Validation and test NDCG@10 per model, the study before the default change against the one after (mean ±
    std over seeds), and the differences of the means (different seeds' runs are not paired: the code changed in
    between). Validation is beside test because the defaults are chosen on it: where they disagree, both show."""
    lines = [f"Before / after the new defaults (`rec_weighting=target`), NDCG@10; before: `{command_of(before)}`"
             " (its JSON: bench/results/reproduce_" + before["dataset"] + BEFORE + ".json):", "",
             "| model | valid before | valid after | difference | test before | test after | difference |",
             "|---|---|---|---|---|---|---|"]
    for label, split in (("sasrec", "test"), ("backbone", "test"), ("t2arec", "test"), ("t2arec", "test_ttt")):
        old, new = before["runs"].get(label) or [], after["runs"].get(label) or []
        if not old or not new or not all(split in r for r in old + new):
            continue
        cells = []
        for part in ("valid", split):
            a, b = [r[part]["ndcg@10"] for r in old], [r[part]["ndcg@10"] for r in new]
            cells.append(f"{fmt(a)} | {fmt(b)} | {statistics.mean(b) - statistics.mean(a):+.4f}")
        name = label if split == "test" else "t2arec + test-time step"
        valid = cells[0] if split == "test" else "— | — | —"
        lines.append(f"| {name} | {valid} | {cells[1]} |")
    return "\n".join(lines)


def render() -> str:
    sections = []
    for name in DATASETS:
        path = RESULTS / f"reproduce_{name}.json"
        before = RESULTS / f"reproduce_{name}{BEFORE}.json"
        if path.exists():
            sections.append(dataset_section(json.loads(path.read_text())))
            if before.exists():
                sections.append(before_after(json.loads(before.read_text()), json.loads(path.read_text())))
            else:
                sections.append("Not yet rerun with the new defaults (`rec_weighting=target`): the table above is "
                                "the study before them (`rec_weighting=batch`, then the default).")
        else:
            sections.append(f"### {name}\n\nNot run yet (`python -m bench.studies.reproduce {name}`).")
    return "\n\n".join(sections)


SEARCH_BEGIN, SEARCH_END = "<!-- same_budget:begin (bench/studies/report.py) -->", "<!-- same_budget:end -->"


def render_same_budget() -> str:
    """The same-budget searches (`t2arec tune ... --json`, copied to bench/results/same_budget_<data>_<model>.json):
    every finished trial of each model, best first, and how many trials failed (killed processes; their
    parameters are retried) or were pruned."""
    lines = ["| data | model | trial | lr | dropout | layers | weight decay | valid NDCG@10 | best epoch / run |",
             "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for path in sorted(RESULTS.glob("same_budget_*.json")):
        summary = json.loads(path.read_text())
        data, model = path.stem[len("same_budget_"):].rsplit("_", 1)
        done = sorted((t for t in summary["all_trials"] if t["state"] == "complete"), key=lambda t: -t["value"])
        for t in done:
            q = t["params"]
            lines.append(f"| {data} | {model} | {t['number']} | {q['lr']:.3g} | {q['dropout']} | {q['n_layers']} | "
                         f"{q['weight_decay']} | {t['value']:.4f} | {t['best_epoch']} / {t['epochs_run']} |")
        counts = summary["trials"]
        notes.append(f"{data} {model}: {counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} "
                     "failed (killed processes)")
    if not notes:
        return "No same-budget search stored yet."
    return "\n".join(lines) + "\n\nTrials per study: " + "; ".join(notes) + "."


RECIPE_BEGIN, RECIPE_END = "<!-- recipe:begin (bench/studies/report.py) -->", "<!-- recipe:end -->"
# Studies of a shipped recipe (t2arec_fast/configs/<recipe>.yaml, every model under it), kept beside the defaults'
# study as bench/results/reproduce_<data>_<recipe>.json.
RECIPES = ("tuned_beauty",)


def paired_cell(old: list, new: list, split: str) -> str:
    """Means of two studies' runs of one model, and the difference paired by seed (t-test when ≥ 2 seeds)."""
    a, b = {r["seed"]: r[split]["ndcg@10"] for r in old}, {r["seed"]: r[split]["ndcg@10"] for r in new}
    seeds = sorted(set(a) & set(b))
    t, p = paired_t([b[s] for s in seeds], [a[s] for s in seeds])
    diff = statistics.mean(b[s] - a[s] for s in seeds) if seeds else float("nan")
    return (f"{fmt(list(a.values()))} | {fmt(list(b.values()))} | {diff:+.4f}"
            + (f" (p = {p:.3f})" if p is not None else ""))


def defaults_vs_recipe(base: dict, recipe: dict, name: str) -> str:
    """Each model under the package defaults against the same model under the recipe, valid and test NDCG@10."""
    lines = [f"Package defaults (`{command_of(base)}`) against the recipe `{name}`, NDCG@10, mean ± std over seeds; "
             "differences paired by seed:", "",
             "| model | valid, defaults | valid, recipe | difference | test, defaults | test, recipe | difference |",
             "|---|---|---|---|---|---|---|"]
    for label in ("sasrec", "backbone", "t2arec"):
        old, new = base["runs"].get(label) or [], recipe["runs"].get(label) or []
        if old and new:
            lines.append(f"| {label} | {paired_cell(old, new, 'valid')} | {paired_cell(old, new, 'test')} |")
    return "\n".join(lines)


def render_recipes() -> str:
    sections = []
    for name in DATASETS:
        for recipe in RECIPES:
            path = RESULTS / f"reproduce_{name}_{recipe}.json"
            if not path.exists():
                continue
            report = json.loads(path.read_text())
            # the segment plot belongs to the defaults' study
            sections.append(dataset_section(report, heading=f"#### {name}, recipe `{recipe}`", plot=False))
            base = RESULTS / f"reproduce_{name}.json"
            if base.exists():
                sections.append(defaults_vs_recipe(json.loads(base.read_text()), report, recipe))
    return "\n\n".join(sections) or "No recipe studied yet."


PROTOCOLS_BEGIN, PROTOCOLS_END = "<!-- protocols:begin (bench/studies/report.py) -->", "<!-- protocols:end -->"
# Published figures on exactly our files under the seen-items-masked protocol: (model, NDCG@10, HR@10, source).
MASKED_ANCHORS = {"amazon-beauty": ("TiCoSeRec", 0.0418, 0.0740,
                                    "KingGugu/TiCoSeRec README (its code masks the user's seen items)")}


def protocols_section(report: dict, title: str) -> str:
    """One study's models under both protocols: every item ranked (RecBole's, ours) and the user's seen items
    masked (the CoSeRec family's code); the same trained models, NDCG@10 and HR@10, mean ± std over seeds."""
    name = report["dataset"]
    lines = [f"#### {title} — `{command_of(report)}`", "",
             "| model | valid NDCG@10, all items | valid, seen masked | test NDCG@10, all items | test, seen masked "
             "| test HR@10, all items | test HR@10, seen masked |", "|---|---|---|---|---|---|---|"]
    for label in ("sasrec", "backbone", "t2arec"):
        runs = [r for r in report["runs"].get(label) or [] if "test_masked" in r]
        if not runs:
            continue
        cells = [fmt([r[split][metric] for r in runs]) for metric, splits in
                 (("ndcg@10", ("valid", "valid_masked", "test", "test_masked")),
                  ("recall@10", ("test", "test_masked"))) for split in splits]
        lines.append(f"| {label} ({len(runs)} seeds) | " + " | ".join(cells) + " |")
    if name in MASKED_ANCHORS:
        model, ndcg, hr, source = MASKED_ANCHORS[name]
        lines.append(f"| {model} (published; {source}) | | | | {ndcg:.4f} | | {hr:.4f} |")
    masked = {label: {r["seed"]: r["test_masked"]["ndcg@10"] for r in runs if "test_masked" in r}
              for label, runs in report["runs"].items() if label in ("sasrec", "backbone", "t2arec")}
    lows = [f"{label} {min(v.values()):.4f}" for label, v in masked.items() if v]
    if lows:
        lines += ["", "Lowest seed, test NDCG@10 with seen items masked: " + ", ".join(lows) + "."]
    if masked.get("t2arec") and masked.get("backbone"):
        lines.append("T2ARec against its backbone with seen items masked, paired by seed: "
                     + paired(report, "t2arec", "test_masked", "backbone", "test_masked") + ".")
    repeats = sorted({round(r["test_masked"]["repeat_targets"], 4) for runs in report["runs"].values()
                      for r in runs if "test_masked" in r})
    lines += [f"Share of test targets already in the user's history (counted as misses by that code, ranked "
              f"by ours): {', '.join(f'{x:.4f}' for x in repeats)}; {report['machine']}, torch {report['torch']}, "
              f"{report['date']}, code {report['code']}."]
    return "\n".join(lines)


def render_protocols() -> str:
    sections = []
    for name in DATASETS:
        for suffix, title in [("", f"{name}, package defaults")] + [(f"_{r}", f"{name}, recipe `{r}`")
                                                                   for r in RECIPES]:
            path = RESULTS / f"reproduce_{name}{suffix}.json"
            if path.exists():
                report = json.loads(path.read_text())
                if any("test_masked" in r for runs in report["runs"].values() for r in runs):
                    sections.append(protocols_section(report, title))
    return "\n\n".join(sections) or "No study evaluated under both protocols yet."


TTT_BEGIN, TTT_END = "<!-- ttt_step:begin (bench/studies/report.py) -->", "<!-- ttt_step:end -->"
TIES_BEGIN, TIES_END = "<!-- tie_order:begin (bench/studies/report.py) -->", "<!-- tie_order:end -->"


def machine_line(report: dict) -> str:
    env = report.get("environment") or {}
    return (f"{env.get('cpu', '?')} ({env.get('cpus', '?')} CPUs), Python {env.get('python', '?')}, "
            f"torch {env.get('torch', '?')}, {env.get('date', '?')}, code {report.get('code', '?')}")


def render_ttt_step() -> str:
    """bench/results/ttt_step_<data>_<model>[_<variant>].json (bench/studies/ttt_step.py): the step-size grid on
    validation and test for no step, the paper's step and validation's choice; a variant named in RECIPES is a
    study of models trained with that recipe."""
    from bench.studies.ttt_step import table_markdown
    sections = []
    for path in sorted(RESULTS.glob("ttt_step_*.json")):
        report = json.loads(path.read_text())
        seeds = " ".join(str(s) for s in report["seeds"])
        order = report.get("episode_order", "stored")       # studies before ttt_order batched in the stored order
        episode = report.get("episode", 256)
        users = "each user alone" if episode == 1 else f"{episode} users per episode, by {ORDER_WORDS[order]}"
        option = ("" if episode == 256 else f" --episode {episode}") + (
            "" if order == "time" or episode == 1 else f" --order {order}")
        recipe = next((f", trained with the recipe `{r}`" for r in RECIPES if path.stem.endswith(f"_{r}")), "")
        sections.append(f"#### {report['dataset']}, {report['model']}{recipe}, {users} — "
                        f"`python -m bench.studies.ttt_step {report['dataset']} --keep DIR --model {report['model']} "
                        f"--seeds {seeds}{option}`\n\n"
                        f"{table_markdown(report)}\n\n{machine_line(report)}; JSON: bench/results/{path.name}.")
    return "\n\n".join(sections) or "Not run yet (`python -m bench.studies.ttt_step DATA --keep DIR`)."


ORDER_WORDS = {"time": "request time", "random": "a random order", "stored": "the stored user order"}
EPISODES_BEGIN, EPISODES_END = "<!-- ttt_episodes:begin (bench/studies/report.py) -->", "<!-- ttt_episodes:end -->"


def render_ttt_episodes() -> str:
    """bench/results/ttt_episodes_<data>_<model>_<B>.json (bench/studies/ttt_episodes.py): one step, episodes of
    users grouped in every order."""
    from bench.studies.ttt_episodes import table_markdown
    sections = []
    reports = sorted(((path, json.loads(path.read_text())) for path in RESULTS.glob("ttt_episodes_*.json")),
                     key=lambda pr: (pr[1]["dataset"], pr[1]["model"], pr[1]["ttt"]["ttt_batch_size"]))
    if reports:
        sections.append(episodes_summary([report for _, report in reports]))
    for path, report in reports:
        ttt, seeds = report["ttt"], " ".join(str(s) for s in report["seeds"])
        sections.append(f"#### {report['dataset']}, {report['model']}, {ttt['ttt_batch_size']} users per episode, "
                        f"{ttt['ttt_rule']} {ttt['ttt_lr']:g} — `python -m bench.studies.ttt_episodes "
                        f"{report['dataset']} --keep DIR --model {report['model']} --seeds {seeds} "
                        f"--ttt_rule {ttt['ttt_rule']} --ttt_lr {ttt['ttt_lr']:g} --episode {ttt['ttt_batch_size']}`"
                        f"\n\n{table_markdown(report)}\n\n{machine_line(report)}; JSON: bench/results/{path.name}.")
    return "\n\n".join(sections) or "Not run yet (`python -m bench.studies.ttt_episodes DATA --keep DIR`)."


def episodes_summary(reports: list) -> str:
    """One row per study: test NDCG@10 (mean over seeds) with no step and with the step in each order, and the
    paired test of the request-time order against no step."""
    lines = ["| data | model | users per episode | seeds | no step | by request time (p vs no step) | random | "
             "stored user order |", "|---|---|---|---|---|---|---|---|"]
    for r in reports:
        test = {name: statistics.mean(r["seeds"][s]["test"][name] for s in r["seeds"])
                for name in ("no step", "time", "random", "stored")}
        p = r["paired"]["test: time − no step"]["p"]
        lines.append(f"| {r['dataset']} | {r['model']} | {r['ttt']['ttt_batch_size']} | {len(r['seeds'])} | "
                     f"{test['no step']:.4f} | {test['time']:.4f} ({'—' if p is None else f'{p:.3f}'}) | "
                     f"{test['random']:.4f} | {test['stored']:.4f} |")
    return "Test NDCG@10, mean over seeds (step: relative ρ as in each study's heading):\n\n" + "\n".join(lines)


def render_ties() -> str:
    """bench/results/tie_order_<data>.json (bench/studies/tie_order.py): kept models on every order of ties."""
    from bench.studies.tie_order import table_markdown
    sections = []
    for path in sorted(RESULTS.glob("tie_order_*.json")):
        report = json.loads(path.read_text())
        models = " ".join(report["ndcg@10"])
        seeds = sorted({s for m in report["ndcg@10"].values() for r in m.values() for s in r})
        sections.append(f"#### {report['dataset']} — `python -m bench.studies.tie_order {report['dataset']} "
                        f"--keep DIR --models {models} --seeds {' '.join(map(str, seeds))}`\n\n"
                        f"{table_markdown(report)}\n\n{machine_line(report)}; JSON: bench/results/{path.name}.")
    return "\n\n".join(sections) or "Not run yet (`python -m bench.studies.tie_order DATA --keep DIR`)."


RECBOLE_BEGIN, RECBOLE_END = "<!-- recbole:begin (bench/studies/report.py) -->", "<!-- recbole:end -->"


def recbole_command(report: dict) -> str:
    """The command that wrote a bench/recbole_sasrec.py JSON, rebuilt from what it recorded."""
    parts = [f"python -m bench.recbole_sasrec {report['dataset']} --seed {report['config']['seed']} "
             f"--epochs {report['max_epochs']}"]
    if report.get("stopping_step", 10) != 10:
        parts.append(f"--stopping-step {report['stopping_step']}")
    if report.get("tie_order", "file") != "file":
        parts.append(f"--tie-order {report['tie_order']}")
    if report.get("overrides"):
        parts.append("--set " + " ".join(f"{k}={v}" for k, v in report["overrides"].items()))
    return " ".join(parts)


def recbole_section(theirs: dict, ours: Optional[dict]) -> str:
    """RecBole's SASRec (one run of bench/recbole_sasrec.py) beside our SASRec of the reproduction study on the same
    data set: validation NDCG@10 at the best epoch and test metrics at that checkpoint; RecBole's per-epoch curve."""
    curve = " ".join(f"{e['valid']['ndcg@10']:.4f}".lstrip("0") for e in theirs["epochs"])
    test = theirs["test"]
    lines = [f"#### {theirs['dataset']} — RecBole: `{recbole_command(theirs)}` (its own environment)", "",
             "| run | seeds | best valid NDCG@10 (epoch) | test NDCG@10 | test Recall@10 | test MRR@10 | s/epoch |",
             "|---|---|---|---|---|---|---|",
             f"| RecBole {theirs['recbole']} SASRec | {theirs['config']['seed']} | "
             f"{theirs['best_valid']['ndcg@10']:.4f} ({theirs['best_epoch'] + 1} of {theirs['epochs_run']}) | "
             f"{test['ndcg@10']:.4f} | {test['recall@10']:.4f} | {test['mrr@10']:.4f} | "
             f"{theirs['seconds_per_epoch']:.0f} |"]
    if ours and ours["runs"].get("sasrec"):
        runs = ours["runs"]["sasrec"]
        epochs = ", ".join(str(r["best_epoch"]) for r in runs)
        lines.append(f"| ours, SASRec: `{command_of(ours)}` | {' '.join(str(r['seed']) for r in runs)} | "
                     f"{fmt([r['valid']['ndcg@10'] for r in runs])} ({epochs}) | "
                     + " | ".join(fmt([r["test"][m] for r in runs]) for m in ("ndcg@10", "recall@10", "mrr@10"))
                     + f" | {statistics.median(r['seconds_per_epoch'] for r in runs):.0f} |")
    env = theirs.get("environment") or {}
    lines += ["", f"RecBole's validation NDCG@10 after each epoch (epoch 1 first): {curve}. "
              f"{env.get('cpu', '?')} ({env.get('cpus', '?')} CPUs), torch {env.get('torch', '?')}, "
              f"{env.get('date', '?')}; JSON: bench/results/recbole_sasrec_{theirs['dataset']}.json."]
    return "\n".join(lines)


def render_recbole() -> str:
    """bench/results/recbole_sasrec_<data>.json beside our reproduce_<data>.json."""
    sections = []
    for path in sorted(RESULTS.glob("recbole_sasrec_*.json")):
        theirs = json.loads(path.read_text())
        ours_path = RESULTS / f"reproduce_{theirs['dataset']}.json"
        sections.append(recbole_section(theirs, json.loads(ours_path.read_text()) if ours_path.exists() else None))
    return "\n\n".join(sections) or "Not run yet (`python -m bench.recbole_sasrec DATA`, docs/benchmarks.md)."


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--print", action="store_true", help="print the block instead of writing docs/results.md")
    args = ap.parse_args(argv)
    block, tune = render(), render_tune()
    if args.print:
        print(block + "\n\n" + tune)
        return 0
    text = replace_block(DOC.read_text(), BEGIN, END, block)
    if TUNE_BEGIN in text:
        text = replace_block(text, TUNE_BEGIN, TUNE_END, tune)
    if SHIFT_BEGIN in text:
        text = replace_block(text, SHIFT_BEGIN, SHIFT_END, render_shift())
    if SEARCH_BEGIN in text:
        text = replace_block(text, SEARCH_BEGIN, SEARCH_END, render_same_budget())
    if RECIPE_BEGIN in text:
        text = replace_block(text, RECIPE_BEGIN, RECIPE_END, render_recipes())
    if TTT_BEGIN in text:
        text = replace_block(text, TTT_BEGIN, TTT_END, render_ttt_step())
    if EPISODES_BEGIN in text:
        text = replace_block(text, EPISODES_BEGIN, EPISODES_END, render_ttt_episodes())
    if TIES_BEGIN in text:
        text = replace_block(text, TIES_BEGIN, TIES_END, render_ties())
    if RECBOLE_BEGIN in text:
        text = replace_block(text, RECBOLE_BEGIN, RECBOLE_END, render_recbole())
    if PROTOCOLS_BEGIN in text:
        text = replace_block(text, PROTOCOLS_BEGIN, PROTOCOLS_END, render_protocols())
    DOC.write_text(text)
    if README.exists() and README_BEGIN in README.read_text():
        README.write_text(replace_block(README.read_text(), README_BEGIN, README_END, readme_table()))
    print(f"rewrote the generated blocks of {DOC} and {README.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
