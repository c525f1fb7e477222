"""bench/studies/ttt_step.py and tie_order.py on a tiny model and the synthetic data: the numbers they report are
the ones the package computes (no hand-made values), and "no step" stays what validation falls back on."""
import dataclasses
import json

import numpy as np
import pytest

from bench.studies import tie_order, ttt_step
from t2arec_fast.data import leave_one_out
from t2arec_fast.data.synthetic import from_spec
from t2arec_fast.evaluate import evaluate

from helpers import SYNTHETIC, tiny_model


@pytest.fixture(scope="module")
def split():
    return leave_one_out(from_spec(SYNTHETIC))


def test_ttt_step_study_reports_sizes_changes_and_choice(split):
    model = tiny_model(n_items=split.dataset.n_items, max_len=20)
    out = ttt_step.study_seed(model, split, max_len=20)
    assert [(g["rule"], g["size"]) for g in out["grid"]] == ttt_step.GRID
    assert out["test"] == evaluate(model, split, "test", 20)["ndcg@10"]
    by_setting = {(g["rule"], g["size"]): g for g in out["grid"]}
    # the relative rule moves every reached tensor by ρ: the mean change grows with ρ and never exceeds it
    rel = [by_setting[("relative", r)]["relative_parameter_change"] for r in (0.001, 0.01, 0.1)]
    assert 0 < rel[0] < rel[1] < rel[2] <= 0.1 + 1e-9
    assert by_setting[ttt_step.PAPER]["relative_parameter_change"] < by_setting[("sgd", 50.0)]["relative_parameter_change"]
    best = max(out["grid"], key=lambda g: g["valid_ndcg@10"])
    if best["valid_ndcg@10"] > out["valid"]:
        assert out["chosen"] == {"rule": best["rule"], "size": best["size"]}
    else:
        assert out["chosen"] is None and out["test_chosen"] == out["test"]


def test_tie_orders_keep_users_and_items_and_change_targets(split):
    from t2arec_fast.data.ties import reorder_ties
    ds = dataclasses.replace(split.dataset, timestamps=split.dataset.timestamps // 86_400 * 86_400)  # day resolution
    by_day = leave_one_out(ds)
    for label, order, seed in tie_order.ORDERS:
        other = leave_one_out(reorder_ties(ds, order, seed=seed))
        assert np.array_equal(other.part("test").users, by_day.part("test").users)
        changed = tie_order.target_changed(other, by_day, "test")
        assert (changed == 0.0) if label == "file" else (0.0 < changed < 1.0)


def test_ttt_step_seeds_run_apart_combine_into_one_study(split):
    """Seeds run in two processes join into the study one process would have written (same paired test); runs of
    another model or a seed found twice are refused. The markdown table shows every seed and both t-tests."""
    import json
    model = tiny_model(n_items=split.dataset.n_items, max_len=20)
    seed0 = ttt_step.study_seed(model, split, max_len=20)
    seed1 = dict(seed0, test=seed0["test"] + 0.01, test_paper_step=seed0["test_paper_step"] + 0.02)
    as_json = lambda seeds: json.loads(json.dumps({"dataset": "synthetic", "model": "t2arec",   # noqa: E731
                                                   "grid": [list(g) for g in ttt_step.GRID], "seeds": seeds}))
    joined = ttt_step.combine([as_json({0: seed0}), as_json({1: seed1})], ["a.json", "b.json"])
    assert list(joined["seeds"]) == ["0", "1"]
    assert joined["paired"] == ttt_step.paired_summary({0: seed0, 1: seed1})
    table = ttt_step.table_markdown(joined)
    assert "\n| 0 |" in table and "\n| 1 |" in table and "validation's choice vs no step" in table
    with pytest.raises(SystemExit, match="seed 0 is in two"):
        ttt_step.combine([as_json({0: seed0}), as_json({0: seed1})], ["a.json", "b.json"])
    other = dict(as_json({1: seed1}), model="backbone")
    with pytest.raises(SystemExit, match="model"):
        ttt_step.combine([as_json({0: seed0}), other], ["a.json", "b.json"])


def test_report_renders_the_step_and_tie_studies_from_their_json(tmp_path, monkeypatch):
    """report.py's blocks come from the JSONs in the results folder, nothing typed by hand."""
    import json
    from bench.studies import report
    grid = [list(g) for g in ttt_step.GRID]
    row = {"valid_ndcg@10": 0.05, "valid_vs_no_step": 0.0, "share_of_ranks_moved": 0.0,
           "relative_parameter_change": 1e-5}
    seed = {"valid": 0.05, "test": 0.04, "grid": [dict(row, rule=r, size=s) for r, s in grid], "chosen": None,
            "test_paper_step": 0.04, "test_chosen": 0.04}
    study = {"dataset": "ml-100k", "model": "t2arec", "grid": grid, "seeds": {"0": seed, "1": seed},
             "paired": ttt_step.paired_summary({0: seed, 1: seed}), "code": "abc", "environment": {"cpu": "X"}}
    ties = {"dataset": "ml-100k", "orders": [list(o) for o in tie_order.ORDERS], "code": "abc", "environment": {},
            "targets_changed": {o[0]: {"valid": 0.0, "test": 0.25} for o in tie_order.ORDERS},
            "ndcg@10": {"sasrec": {o[0]: {"0": {"valid": 0.1, "test": 0.2}} for o in tie_order.ORDERS}}}
    (tmp_path / "ttt_step_ml-100k_t2arec.json").write_text(json.dumps(study))
    (tmp_path / "tie_order_ml-100k.json").write_text(json.dumps(ties))
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    ttt = report.render_ttt_step()
    assert "--keep DIR --model t2arec --seeds 0 1" in ttt and "| 0 | no step | 0.0400 | 0.0400 | 0.0400 |" in ttt
    assert "code abc" in ttt and "recipe" not in ttt
    (tmp_path / "ttt_step_ml-100k_t2arec_tuned_beauty.json").write_text(json.dumps(study))
    assert "#### ml-100k, t2arec, trained with the recipe `tuned_beauty`, 256 users" in report.render_ttt_step()
    rendered = report.render_ties()
    assert "--models sasrec --seeds 0" in rendered and "| random 2 | 25.0 % | 0.2000 |" in rendered


def test_direction_controls_move_the_same_tensors_by_the_same_size_elsewhere(split):
    """The study's controls: 'opposite' is the alignment step reflected (θ' − θ exactly negated), 'random' moves the
    same reached tensors by the same relative size along another direction; adapt is restored afterwards."""
    from t2arec_fast.data import eval_batches
    model = tiny_model(n_items=split.dataset.n_items, max_len=20).eval()
    batch = next(iter(eval_batches(split, "valid", 20, 64))).to_torch("cpu")
    own = {k: v.detach() for k, v in model.named_parameters()}
    for cfg in (ttt_step.setting("relative", 0.1), ttt_step.setting("sgd", 50.0)):
        check_controls(model, batch, cfg, own)


def check_controls(model, batch, cfg, own):
    import torch
    from t2arec_fast import adapt
    moves = {}
    for kind in (None, "opposite", "random"):
        if kind is None:
            fast = adapt.adapt_parameters(model, batch.items, batch.times, batch.target_times, cfg)
        else:
            with ttt_step.direction(kind):
                fast = adapt.adapt_parameters(model, batch.items, batch.times, batch.target_times, cfg)
        moves[kind] = {k: fast[k] - own[k] for k in fast}
    assert adapt.alignment_update is not None and adapt.alignment_update.__name__ == "alignment_update"
    for k, step in moves[None].items():
        torch.testing.assert_close(moves["opposite"][k], -step)
        size = float(step.norm())
        assert float(moves["random"][k].norm()) == pytest.approx(size, rel=1e-4, abs=1e-12)
        if size > 0 and step.numel() > 8:              # a one-number tensor has only two directions
            assert float(torch.nn.functional.cosine_similarity(moves["random"][k].flatten(), step.flatten(),
                                                               dim=0).abs()) < 0.9



def test_ttt_episodes_facts_by_brute_force(split):
    """The share of targets found in another member's history, counted member by member, and the spans."""
    from bench.studies import ttt_episodes
    from t2arec_fast.evaluate import EPISODE_ORDERS, episode_order
    ds, examples = split.dataset, split.part("test")
    for order in EPISODE_ORDERS:
        facts = ttt_episodes.order_facts(split, "test", order, episode=8)
        index = episode_order(split, "test", order)
        hits, spans = 0, []
        for b in range(0, len(index), 8):
            members = list(index[b:b + 8])
            for m in members:
                target = ds.items[examples.stops[m]]
                hits += any(target in ds.items[ds.offsets[examples.users[o]]:examples.stops[o]]
                            for o in members if o != m)
            times = ds.timestamps[examples.stops[members]]
            spans.append((times.max() - times.min()) / 86_400)
        assert facts["target_in_another_members_history"] == pytest.approx(hits / len(index))
        assert facts["median_span_days"] == pytest.approx(float(np.median(spans)))


def test_ttt_episodes_study_rows_and_paired_tests(split):
    """Every order is evaluated on both parts beside no step; seeds join into paired tests over seeds."""
    from bench.studies import ttt_episodes
    from t2arec_fast.config import TTTConfig
    from t2arec_fast.evaluate import EPISODE_ORDERS
    model = tiny_model(n_items=split.dataset.n_items, max_len=20)
    ttt = TTTConfig(ttt_rule="relative", ttt_lr=0.1, ttt_batch_size=8)
    out = ttt_episodes.study_seed(model, split, max_len=20, ttt=ttt)
    assert set(out) == {"valid", "test"} and set(out["test"]) == {"no step", *EPISODE_ORDERS}
    assert out["test"]["stored"] == evaluate(model, split, "test", 20,
                                             ttt=dataclasses.replace(ttt, ttt_order="stored"))["ndcg@10"]
    shifted = {"valid": dict(out["valid"]), "test": {k: v + 0.01 * (k == "time") for k, v in out["test"].items()}}
    paired = ttt_episodes.paired_summary({0: out, 1: shifted, 2: out})
    assert paired["test: time − no step"]["mean_diff"] == pytest.approx(
        out["test"]["time"] - out["test"]["no step"] + 0.01 / 3)


def test_ttt_episodes_report_block_shows_every_order_and_its_command(split, tmp_path, monkeypatch):
    """docs/results.md's block is rendered from the JSON: one row per order with what its episodes share, and the
    command that made it; studies without an order were batched in the stored order."""
    from bench.studies import report as report_mod, ttt_episodes
    from t2arec_fast.config import TTTConfig
    model = tiny_model(n_items=split.dataset.n_items, max_len=20)
    ttt = TTTConfig(ttt_rule="relative", ttt_lr=0.1, ttt_batch_size=8)
    seeds = {"0": ttt_episodes.study_seed(model, split, 20, ttt), "1": ttt_episodes.study_seed(model, split, 20, ttt)}
    facts = {o: ttt_episodes.order_facts(split, "test", o, 8) for o in ("time", "random", "stored")}
    study = {"dataset": "synthetic", "model": "t2arec", "ttt": dataclasses.asdict(ttt), "facts": facts,
             "seeds": seeds, "paired": ttt_episodes.paired_summary(seeds)}
    (tmp_path / ttt_episodes.file_name(study)).write_text(json.dumps(study))
    monkeypatch.setattr(report_mod, "RESULTS", tmp_path)
    text = report_mod.render_ttt_episodes()
    assert ("`python -m bench.studies.ttt_episodes synthetic --keep DIR --model t2arec --seeds 0 1 --ttt_rule "
            "relative --ttt_lr 0.1 --episode 8`") in text
    stored = facts["stored"]["target_in_another_members_history"]
    assert f"| stored | {stored:.1%} |" in text and "| no step | — | — |" in text
    assert "test: stored − time" in text


def test_ttt_step_per_user_study_names_its_episodes_and_skips_the_direction_controls(split):
    """--episode 1: each user's own step (what serving runs); the direction controls, which swap the shared
    episode's update, are not run, and the file and table say so."""
    model = tiny_model(n_items=split.dataset.n_items, max_len=20)
    out = ttt_step.study_seed(model, split, max_len=20, episode=1)
    by_setting = {(g["rule"], g["size"]): g for g in out["grid"]}
    one = ttt_step.setting("relative", 0.1, episode=1)
    assert by_setting[("relative", 0.1)]["valid_ndcg@10"] == evaluate(model, split, "valid", 20, ttt=one)["ndcg@10"]
    if out["chosen"] is not None:
        assert set(out["controls"]) == {"L_time only", "L_state only"}
    assert ttt_step.file_name({"dataset": "d", "model": "t2arec", "episode": 1}) == "ttt_step_d_t2arec_per_user.json"
    assert ttt_step.file_name({"dataset": "d", "model": "t2arec", "episode_order": "time"}) == "ttt_step_d_t2arec.json"
    # studies from before ttt_order batched users in the stored order
    assert ttt_step.file_name({"dataset": "d", "model": "t2arec"}) == "ttt_step_d_t2arec_stored.json"


def test_ttt_step_parameter_change_is_measured_on_the_first_evaluated_episode(split):
    """‖θ'−θ‖/‖θ‖ comes from the first episode as evaluation forms it: by request time, adapted causally."""
    from t2arec_fast.adapt import adapt_parameters, history_until
    from t2arec_fast.data import eval_batches
    from t2arec_fast.evaluate import episode_order
    model = tiny_model(n_items=split.dataset.n_items, max_len=20)
    cfg = ttt_step.setting("sgd", 50.0, episode=16)
    first = next(iter(eval_batches(split, "valid", 20, 16, order=episode_order(split, "valid", "time")))).to_torch()
    fast = adapt_parameters(model, *history_until(first.items, first.times, first.target_times.min()), cfg)
    own = dict(model.named_parameters())
    expected = np.mean([float((fast[k] - own[k]).norm() / own[k].norm()) for k in fast if float(own[k].norm()) > 0])
    assert ttt_step.relative_change(model, split, 20, cfg) == pytest.approx(expected)


def test_ttt_step_combine_refuses_a_study_of_another_episode_order(split):
    old = {"dataset": "d", "model": "m", "grid": [], "seeds": {"0": {}}}                  # before ttt_order
    new = {**old, "episode": 256, "episode_order": "time", "seeds": {"1": {}}}
    with pytest.raises(SystemExit, match="episode"):
        ttt_step.combine([old, new], ["old.json", "new.json"])
