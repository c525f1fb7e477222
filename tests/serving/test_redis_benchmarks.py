"""The Redis benchmarks run end to end on a tiny pool (their numbers are not checked here: bench/ measures, tests
do not time): bench_redis_tail, whose set-ups start their own redis-server."""
import json

import pytest


@pytest.mark.usefixtures("redis_binary")
def test_bench_redis_tail_runs_a_set_up_with_a_sized_rewrite_threshold(tmp_path):
    from bench import bench_redis_tail
    assert bench_redis_tail.main(["--seconds", "0.5", "--aof", "disk", "--fsync", "everysec", "--rewrite", "on",
                                  "--rewrite-min-mb", "128", "--runtime", "torch", "--users", "128", "--prefill", "1",
                                  "--out", str(tmp_path)]) == 0
    (row,) = json.loads((tmp_path / "bench_redis_tail.json").read_text())["setups"]
    assert row["rewrite_min_mb"] == 128 and row["auto_rewrite"] == "on" and row["runtime"] == "torch"
    assert row["calls"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert row["redis_us_per_call_by_command"]["exec"] > 0       # the commits went through Redis
