"""bench/harness.py: the one timer, the one output convention and the one environment-and-commit record."""
import json
import subprocess
import sys

import pytest

from bench import harness


def test_timed_runs_warmup_untimed_then_reps_on_each_clock():
    calls = []
    times = harness.timed(lambda: calls.append(1), 4, warmup=2, clocks=("wall", "cpu"))
    assert len(calls) == 6                                     # 2 untimed + 4 timed
    assert set(times) == {"wall", "cpu"} and all(len(v) == 4 for v in times.values())
    assert all(t >= 0 for v in times.values() for t in v)


def test_timed_stops_when_the_budget_is_spent_but_keeps_min_reps():
    import time
    times = harness.timed(lambda: time.sleep(0.02), 1000, budget_s=0.05, min_reps=3)["wall"]
    assert 3 <= len(times) < 20
    assert min(times) >= 0.015


def test_timed_refuses_an_unknown_clock():
    with pytest.raises(ValueError, match="unknown clock"):
        harness.timed(lambda: None, 1, clocks=("gpu",))


def test_write_json_creates_the_folder_and_leaves_no_temporary_file(tmp_path):
    path = harness.write_json(tmp_path / "a" / "b", "r.json", {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]


def test_out_argument_defaults_to_OUT_then_bench_results(monkeypatch):
    import argparse
    monkeypatch.delenv("OUT", raising=False)
    p = argparse.ArgumentParser()
    harness.add_out_argument(p)
    assert p.parse_args([]).out == harness.RESULTS
    monkeypatch.setenv("OUT", "/tmp/somewhere")
    p = argparse.ArgumentParser()
    harness.add_out_argument(p)
    assert str(p.parse_args([]).out) == "/tmp/somewhere" and str(p.parse_args(["--out", "d"]).out) == "d"


def test_environment_records_the_commit_and_versions():
    env = harness.environment(extra_field=3)
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=harness.ROOT, capture_output=True,
                          text=True)
    if head.returncode == 0:
        assert env["code"].startswith(head.stdout.strip())
    for key in ("date", "cpu", "cpus", "python", "torch", "t2arec_fast", "load_average"):
        assert key in env
    assert env["extra_field"] == 3


def test_child_command_runs_a_benchmark_module_with_this_interpreter():
    argv = harness.child_command("bench.bench_train", "--worker", "t2arec")
    assert argv[0] == sys.executable and argv[-4:] == ["-m", "bench.bench_train", "--worker", "t2arec"]


def test_bench_train_puts_a_recipe_row_beside_its_default_with_the_cost_ratio():
    """bench_train --recipe: '<model>+<recipe>' rows report their s/epoch over the default row's."""
    from bench import bench_train
    row = dict(device="cpu", steps_per_epoch=5, eval_seconds=0.1, peak_mem_mib=100.0, rss_before_training_mib=50.0,
               valid_ndcg10=0.05)
    rows = [dict(row, model="backbone", seconds_per_epoch=2.0),
            dict(row, model="backbone+tuned_beauty", seconds_per_epoch=3.0)]
    lines = bench_train.format_table(rows, {}).splitlines()
    assert "vs default" in lines[0]
    assert "1.50x" in lines[2] and "x" not in lines[1]                  # the default row has no ratio
    opts = bench_train.parse_args(["--recipe", "t2arec_fast/configs/tuned_beauty.yaml", "--models", "sasrec"])
    assert opts.recipe.endswith("tuned_beauty.yaml") and "--recipe" in opts.passthrough
