"""bench/run.py: every bench/bench_<name>.py is listed and runnable at a small size through one runner."""
import json
import subprocess
import sys

from bench import run
from bench.harness import ROOT


def test_every_benchmark_file_has_a_small_size_and_no_stale_entries():
    names = set(run.benchmarks())
    assert {"train", "serving", "scan", "ttt"} <= names
    assert names == set(run.SMALL), "add the new benchmark's small-size arguments to bench/run.py SMALL"


def test_list_names_each_benchmark_with_its_docstring():
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--list"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    listed = dict(line.split(None, 1) for line in proc.stdout.splitlines())
    assert set(listed) == set(run.benchmarks())
    assert listed["train"].startswith("Training speed")


def test_an_unknown_name_is_a_clear_error_not_a_traceback(capsys):
    assert run.main(["--only", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark(s) nonsense" in err and "Traceback" not in err


def test_only_runs_one_benchmark_at_its_small_size_into_out(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--only", "cache", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "bench_cache.json").read_text())
    assert result["config"]["quick"] is True and result["environment"]["code"]
