"""bench/studies/report.py renders docs/results.md's real-data tables from reproduce JSON: numbers and tests come
from data."""
import json

import pytest

from bench.studies import report
from bench.studies.reproduce import paired_t


def run(seed, ndcg, ttt=None):
    metrics = {"recall@10": 2 * ndcg, "mrr@10": ndcg / 2, "ndcg@10": ndcg}
    out = {"seed": seed, "best_epoch": 5, "seconds_per_epoch": 1.5, "valid": metrics, "test": metrics}
    if ttt is not None:
        out["test_ttt"] = {**metrics, "ndcg@10": ttt}
    return out


def study():
    return {"dataset": "ml-100k", "k_core": 10, "max_len": 200, "n_users": 943, "n_items": 1152, "seeds": [0, 1, 2],
            "max_epochs": 60, "overrides": {"batch_size": "64"}, "machine": "x86_64, 1 torch threads",
            "torch": "2.x", "date": "2026-11-27", "wall_seconds": 600,
            "runs": {"backbone": [run(0, 0.10), run(1, 0.11), run(2, 0.12)],
                     "sasrec": [run(0, 0.05), run(1, 0.05), run(2, 0.05)],
                     "t2arec": [run(0, 0.11, 0.11), run(1, 0.13, 0.13), run(2, 0.15, 0.15)]}}


def test_paired_t_matches_the_textbook_value():
    t, p = paired_t([0.11, 0.13, 0.15], [0.10, 0.11, 0.12])     # differences 0.01, 0.02, 0.03
    assert t == pytest.approx(3.4641, abs=1e-3)                  # mean 0.02 / (sd 0.01 / √3)
    assert p == pytest.approx(0.0742, abs=2e-3)                  # Student t, 2 degrees of freedom


def test_section_has_every_model_and_the_tests():
    text = report.dataset_section(study())
    assert "| backbone | 3 | 0.2200 ± 0.0200 | 0.0550 ± 0.0050 | 0.1100 ± 0.0100 |" in text
    assert "t2arec + test-time step" in text
    assert "vs backbone, the better baseline" in text and "t = 3.46" in text
    assert "with vs without the test-time step, test NDCG@10: identical on all 3 seeds" in text
    assert "--set batch_size=64" in text


def test_rewrites_only_the_marked_block(tmp_path, monkeypatch):
    (tmp_path / "reproduce_ml-100k.json").write_text(json.dumps(study()))
    doc = tmp_path / "results.md"
    doc.write_text(f"intro\n{report.BEGIN}\nold table\n{report.END}\nafter\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n{report.README_BEGIN}\nold\n{report.README_END}\nrest\n")
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    monkeypatch.setattr(report, "DOC", doc)
    monkeypatch.setattr(report, "README", readme)
    report.main([])
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("after\n") and "old table" not in text
    assert "### ml-100k" in text and "### amazon-beauty\n\nNot run yet" in text
    row = ("| ml-100k: `python -m bench.studies.reproduce ml-100k --seeds 0 1 2 --epochs 60 --set batch_size=64` "
           "| 3 | 0.0500 ± 0.0000 | 0.1100 ± 0.0100 | 0.1300 ± 0.0200 | 0.1300 ± 0.0200 |")
    assert row in readme.read_text()
    assert readme.read_text().endswith("rest\n") and "old" not in readme.read_text()


def test_missing_markers_are_a_clear_error(tmp_path, monkeypatch):
    doc = tmp_path / "results.md"
    doc.write_text("no markers here\n")
    monkeypatch.setattr(report, "DOC", doc)
    monkeypatch.setattr(report, "README", tmp_path / "README.md")
    with pytest.raises(SystemExit, match="lacks the markers"):
        report.main([])
    assert doc.read_text() == "no markers here\n"


def test_combine_joins_seeds_from_separate_processes(tmp_path):
    from bench.studies import reproduce
    full = study()
    first = {**full, "seeds": [0, 1], "runs": {k: v[:2] for k, v in full["runs"].items()}}
    second = {**full, "seeds": [2], "wall_seconds": 300, "runs": {k: v[2:] for k, v in full["runs"].items()}}
    (tmp_path / "a.json").write_text(json.dumps(first))
    (tmp_path / "b.json").write_text(json.dumps(second))
    combined = reproduce.combine(tmp_path / "a.json", [tmp_path / "b.json"])
    assert combined["seeds"] == [0, 1, 2] and combined["wall_seconds"] == 900
    assert combined["runs"] == full["runs"]
    assert combined["paired_t_test"]["n_seeds"] == 3 and combined["paired_t_test"]["t2arec_vs"] == "backbone"
    with pytest.raises(SystemExit, match="already in another study"):               # the same seed twice
        reproduce.combine(tmp_path / "a.json", [tmp_path / "a.json"])
    (tmp_path / "c.json").write_text(json.dumps({**second, "max_epochs": 10}))
    with pytest.raises(SystemExit, match="max_epochs"):
        reproduce.combine(tmp_path / "b.json", [tmp_path / "c.json"])


def test_shift_table_groups_seeds_by_model_variant(tmp_path, monkeypatch):
    def shift(seed, overrides, base, step):
        row = lambda name, v: {"setting": name, "valid": {"ndcg@10": v},                      # noqa: E731
                               "test": {"ndcg@10": v, "ndcg@10_after_shift": v / 10}}
        return {"epochs": 20, "seed": seed, "overrides": overrides, "date": f"2026-11-27T1{seed}:00:00",
                "rows": [row("no test-time step", base), row("gated", step)]}
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    for seed, (base, step) in enumerate([(0.30, 0.31), (0.32, 0.34), (0.34, 0.37)]):
        (tmp_path / f"shift_study_seed{seed}.json").write_text(json.dumps(shift(seed, [], base, step)))
    other = {**shift(0, ["time_aware_dt=true"], 0.3, 0.3), "data": "synthetic:valid_after_shift=0.5",
             "chosen_on_valid": "gated"}
    (tmp_path / "shift_study_x_seed0.json").write_text(json.dumps(other))
    text = report.render_shift()
    assert ("| package defaults, default data | gated | 3 | 0.3400 ± 0.0300 | 0.3400 ± 0.0300 | 0.0340 ± 0.0030 | "
            "+0.0200, p = 0.07 | — |") in text
    assert "| time_aware_dt=true, valid_after_shift=0.5 | gated | 1 |" in text and "| 1 of 1 |" in text
    assert ("| time_aware_dt=true, valid_after_shift=0.5 | **the step validation chose, per seed** | 1 | 0.3000 ± "
            in text)
    assert "`python -m bench.studies.shift_study --epochs 20 --seed 2`" in text
    assert ("`python -m bench.studies.shift_study --epochs 20 --seed 0 --set time_aware_dt=true "
            "--valid-after-shift 0.5`") in text


def test_model_variants_are_paired_by_seed_with_the_defaults(tmp_path, monkeypatch):
    def shift(seed, overrides, test, data="synthetic"):
        row = {"setting": "no test-time step", "valid": {"ndcg@10": test + 0.1},
               "test": {"ndcg@10": test, "ndcg@10_after_shift": test / 10}}
        return {"epochs": 20, "seed": seed, "overrides": overrides, "date": "2026-11-27T10:00:00", "data": data,
                "rows": [row]}
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    for seed, (base, ours) in enumerate([(0.17, 0.18), (0.18, 0.18), (0.16, 0.18)]):
        (tmp_path / f"shift_study_seed{seed}.json").write_text(json.dumps(shift(seed, [], base)))
        (tmp_path / f"shift_study_rg_seed{seed}.json").write_text(
            json.dumps(shift(seed, ["readout=request_gap"], ours)))
    (tmp_path / "shift_study_other_data.json").write_text(
        json.dumps(shift(3, ["readout=request_gap"], 0.5, data="synthetic:valid_after_shift=0.5")))
    text = report.render_shift()
    assert ("| readout=request_gap | 3 | 0.2800 ± 0.0000 | 0.1800 ± 0.0000 | 0.0180 ± 0.0000 | +0.0100, p = 0.23 |"
            in text)
    assert "| readout=request_gap | 1 |" not in text         # other data, seed 3 has no default run: not paired


def test_shift_offsets_place_each_event_relative_to_its_users_shifts():
    from types import SimpleNamespace
    from bench.studies.shift_study import NO_SHIFT_NEAR, shift_offsets
    import numpy as np
    flags = np.zeros(14, bool)
    flags[[5, 6, 12]] = True                   # user 0: events 0..9, shifts at 5 and 6; user 1: 10..13, shift at 12
    ds = SimpleNamespace(extras={"after_shift": flags}, offsets=np.array([0, 10, 14]))
    n = NO_SHIFT_NEAR
    assert shift_offsets(ds).tolist() == [n, n, -3, -2, -1, 0, 0, 1, 2, 3] + [-2, -1, 0, 1]


def test_shift_curve_pools_valid_and_test_targets_weighted_by_count(tmp_path):
    row = lambda label, v, t: {"setting": label, "valid": {"ndcg@10_by_shift_offset": v},   # noqa: E731
                               "test": {"ndcg@10_by_shift_offset": t}}
    runs = [{"rows": [row("no test-time step", {"-1": [0.4, 3]}, {"0": [0.1, 1], "-1": [0.0, 1]})]},
            {"rows": [row("no test-time step", {}, {"0": [0.3, 3]})]}]
    curve = report.shift_curve(runs)
    assert curve["no test-time step"][-1] == pytest.approx((0.3, 4))
    assert curve["no test-time step"][0] == pytest.approx((0.25, 4))
    report.plot_shift_curve(curve, tmp_path / "curve.png", seeds=2)
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_before_after_compares_the_means_per_model_on_validation_and_test():
    before, after = study(), study()
    after["runs"]["sasrec"] = [run(0, 0.06), run(1, 0.07), run(2, 0.08)]
    for r in after["runs"]["sasrec"]:
        r["valid"] = {**r["valid"], "ndcg@10": 0.04}                  # validation down where test went up
    text = report.before_after(before, after)
    assert ("| sasrec | 0.0500 ± 0.0000 | 0.0400 ± 0.0000 | -0.0100 | 0.0500 ± 0.0000 | 0.0700 ± 0.0100 | +0.0200 |"
            in text)
    assert ("| backbone | 0.1100 ± 0.0100 | 0.1100 ± 0.0100 | +0.0000 | 0.1100 ± 0.0100 | 0.1100 ± 0.0100 | "
            "+0.0000 |") in text
    assert "| t2arec + test-time step | — | — | — | 0.1300 ± 0.0200 | 0.1300 ± 0.0200 | +0.0000 |" in text


def recbole_run():
    epochs = [{"epoch": i, "valid": {"ndcg@10": v, "recall@10": 2 * v, "mrr@10": v / 2}}
              for i, v in enumerate((0.01, 0.03, 0.02))]
    return {"dataset": "ml-100k", "recbole": "1.2.1", "config": {"seed": 2020}, "max_epochs": 3,
            "stopping_step": 10, "tie_order": "file", "overrides": {"learning_rate": "0.0005"}, "epochs": epochs,
            "epochs_run": 3, "best_epoch": 1, "best_valid": epochs[1]["valid"],
            "test": {"ndcg@10": 0.025, "recall@10": 0.05, "mrr@10": 0.0125}, "seconds_per_epoch": 12.0,
            "environment": {"cpu": "AMD EPYC", "cpus": 2, "torch": "2.x", "date": "2026-12-01"}}


def test_recbole_block_puts_its_run_beside_our_sasrec(tmp_path, monkeypatch):
    (tmp_path / "reproduce_ml-100k.json").write_text(json.dumps(study()))
    (tmp_path / "recbole_sasrec_ml-100k.json").write_text(json.dumps(recbole_run()))
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    text = report.render_recbole()
    assert ("`python -m bench.recbole_sasrec ml-100k --seed 2020 --epochs 3 --set learning_rate=0.0005`"
            in text)
    # RecBole counts epochs from 0: its best (index 1) is the second of three
    assert "| RecBole 1.2.1 SASRec | 2020 | 0.0300 (2 of 3) | 0.0250 | 0.0500 | 0.0125 | 12 |" in text
    assert ("| ours, SASRec: `python -m bench.studies.reproduce ml-100k --seeds 0 1 2 --epochs 60 --set "
            "batch_size=64` | 0 1 2 | 0.0500 ± 0.0000 (5, 5, 5) | 0.0500 ± 0.0000 |") in text
    assert "after each epoch (epoch 1 first): .0100 .0300 .0200." in text


def test_recbole_block_without_runs_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    assert "Not run yet" in report.render_recbole()


def test_recipe_block_pairs_each_model_with_its_defaults_run_by_seed(tmp_path, monkeypatch):
    base = study()
    recipe = study()
    recipe["overrides"] = {"batch_size": "64", "optimizer": "adamw"}
    recipe["runs"]["backbone"] = [run(0, 0.12), run(1, 0.14), run(2, 0.17)]       # +0.02, +0.03, +0.05
    (tmp_path / "reproduce_ml-100k.json").write_text(json.dumps(base))
    (tmp_path / "reproduce_ml-100k_tuned_beauty.json").write_text(json.dumps(recipe))
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    text = report.render_recipes()
    assert "#### ml-100k, recipe `tuned_beauty` — `python -m bench.studies.reproduce ml-100k" in text
    assert "--set batch_size=64 optimizer=adamw" in text
    t, p = paired_t([0.12, 0.14, 0.17], [0.10, 0.11, 0.12])
    row = (f"| backbone | 0.1100 ± 0.0100 | 0.1433 ± 0.0252 | +0.0333 (p = {p:.3f}) "
           f"| 0.1100 ± 0.0100 | 0.1433 ± 0.0252 | +0.0333 (p = {p:.3f}) |")
    assert row in text
    assert "| sasrec | 0.0500 ± 0.0000 | 0.0500 ± 0.0000 | +0.0000 |" in text      # no spread: no t-test
    (tmp_path / "reproduce_ml-100k.json").unlink()
    assert "against the recipe" not in report.render_recipes()                  # nothing to pair with


def test_recipe_block_without_studies_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    assert report.render_recipes() == "No recipe studied yet."


def test_same_budget_table_lists_finished_trials_best_first(tmp_path, monkeypatch):
    def trial(number, state, value=None, lr=1e-3):
        return {"number": number, "state": state, "value": value, "best_epoch": 20 if value else None,
                "epochs_run": 24, "params": {"lr": lr, "dropout": 0.4, "n_layers": 2, "weight_decay": 1.0}}
    summary = {"trials": {"complete": 2, "pruned": 0, "fail": 1},
               "all_trials": [trial(0, "fail"), trial(1, "complete", 0.041, 5e-4), trial(2, "complete", 0.0436)]}
    (tmp_path / "same_budget_amazon-beauty_backbone.json").write_text(json.dumps(summary))
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    text = report.render_same_budget()
    best = "| amazon-beauty | backbone | 2 | 0.001 | 0.4 | 2 | 1.0 | 0.0436 | 20 / 24 |"
    assert best in text and text.index(best) < text.index("| amazon-beauty | backbone | 1 | 0.0005 |")
    assert "amazon-beauty backbone: 2 complete, 0 pruned, 1 failed" in text
    (tmp_path / "same_budget_amazon-beauty_backbone.json").unlink()
    assert report.render_same_budget() == "No same-budget search stored yet."


def test_protocols_block_puts_both_protocols_and_the_masked_anchor_side_by_side(tmp_path, monkeypatch):
    beauty = dict(study(), dataset="amazon-beauty", code="abc1234")
    for runs in beauty["runs"].values():
        for r in runs:
            masked = {k: v + 0.01 for k, v in r["test"].items()}
            r["valid_masked"], r["test_masked"] = masked, {**masked, "repeat_targets": 0.0}
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    assert report.render_protocols() == "No study evaluated under both protocols yet."
    (tmp_path / "reproduce_amazon-beauty_tuned_beauty.json").write_text(json.dumps(beauty))
    text = report.render_protocols()
    assert "#### amazon-beauty, recipe `tuned_beauty`" in text
    # backbone: NDCG@10 0.10-0.12 on every split, +0.01 masked; HR@10 twice NDCG@10
    assert ("| backbone (3 seeds) | 0.1100 ± 0.0100 | 0.1200 ± 0.0100 | 0.1100 ± 0.0100 | 0.1200 ± 0.0100 | "
            "0.2200 ± 0.0200 | 0.2300 ± 0.0200 |") in text
    assert "| TiCoSeRec (published;" in text and "0.0418 | | 0.0740 |" in text
    assert "code abc1234" in text
    assert "Lowest seed, test NDCG@10 with seen items masked: backbone 0.1100" in text
    assert "paired by seed: mean difference +0.0200, t = 3.46, p = 0.07 over 3 seeds" in text   # 0.01, 0.02, 0.03
