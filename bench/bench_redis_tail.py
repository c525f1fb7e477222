"""The tail of a serving call through Redis under sustained load: what the p99 of `observe_and_recommend` at batch
64 is made of — the AOF's fsync, Redis' AOF rewrites (a forked child copying the whole data set) and the script.

    python -m bench.bench_redis_tail [--seconds 30] [--aof disk tmpfs] [--fsync always everysec]
                                     [--rewrite on off] [--rewrite-min-mb 64] [--runtime torch onnx]
                                     [--gc-freeze] [--markdown]
                                     [--out DIR]
                                     # writes DIR/bench_redis_tail.json

Same model, pool and call as bench_shared_state (`redis+local fused`: one compare-and-set round trip per call,
the local tier holding the users' states), but each set-up runs alone on a fresh redis-server for `--seconds` of
back-to-back calls (bench_shared_state interleaves short repetitions of six configurations on one server, so one
configuration's write volume triggers rewrites during another's calls). Set-ups: where the AOF lives (`disk`: a
temporary folder on this machine's disk; `tmpfs`: /dev/shm, an fsync costs nothing there), `appendfsync`
(`always`: what docs/serving.md's durability guarantee needs; `everysec`), and Redis' automatic AOF rewrite on
(auto-aof-rewrite-percentage 100, Redis' default, and auto-aof-rewrite-min-size `--rewrite-min-mb`: Redis' default
64 MB, or sized to the write volume as docs/serving.md advises) or off (percentage 0), and the model's step and
encode in PyTorch or in ONNX Runtime (`runtime="onnx"`, one intra-op thread). Reported per set-up:
calls, p50 / p90 / p99 / max ms, AOF rewrites during the run and the CPU seconds of their child processes, and
Redis' own µs per call by command (`INFO commandstats` over the run: EXEC is the whole commit; EVAL its script,
including the commands the script calls, which are listed too), and Python's garbage collections during the
calls (per generation, the longest pause, the share of calls at or above the p99 that contained one).
"""
from __future__ import annotations

import argparse
import gc
import itertools
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.bench_shared_state import (ServerCpu, Workload, _redis_client, export_graphs, prefill, recommender,
                                      redis_server_class)
from bench.harness import add_out_argument, environment, write_json

CONFIG = "redis+local fused"


class CollectorTimer:
    """Python's garbage collections during a run (gc.callbacks): per generation, how many and the longest pause,
    and which calls (given as start/end perf_counter pairs) contained one — is the collector in the tail?"""

    def __init__(self):
        self.pauses, self._started = [], {}

    def __enter__(self):
        gc.callbacks.append(self._note)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self._note)

    def _note(self, phase, info):
        now = time.perf_counter()
        if phase == "start":
            self._started[info["generation"]] = now
        elif info["generation"] in self._started:
            began = self._started.pop(info["generation"])
            self.pauses.append((info["generation"], began, now))

    def summary(self, starts: np.ndarray, ends: np.ndarray, slow: np.ndarray) -> dict:
        """starts, ends (n,) of the calls; slow (n,) bool (e.g. at or above the p99)."""
        hit = np.zeros(len(starts), bool)
        for _, began, _ in self.pauses:
            i = np.searchsorted(starts, began) - 1
            if i >= 0 and began <= ends[i]:
                hit[i] = True
        by_gen = {g: [(e - b) * 1e3 for gen, b, e in self.pauses if gen == g] for g in (0, 1, 2)}
        return {"collections": {g: len(v) for g, v in by_gen.items()},
                "max_pause_ms": {g: round(max(v), 3) for g, v in by_gen.items() if v},
                "calls_with_a_collection": int(hit.sum()),
                "slow_calls_with_a_collection": float(hit[slow].mean()) if slow.any() else 0.0}


def one_setup(aof: str, fsync: str, rewrite: str, seconds: float, users: np.ndarray, prefill_events: int,
              freeze: bool = False, runtime: str = "torch", onnx_dir=None, rewrite_min_mb: int = 64) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="t2arec-tail-redis-", dir="/dev/shm" if aof == "tmpfs" else None))
    server = redis_server_class()(folder, appendfsync=fsync).start()
    try:
        client = _redis_client(server.url)
        client.config_set("auto-aof-rewrite-percentage", "100" if rewrite == "on" else "0")
        client.config_set("auto-aof-rewrite-min-size", str(int(rewrite_min_mb) << 20))
        rec = recommender(CONFIG, server.url, prefix="tail", onnx_dir=onnx_dir if runtime == "onnx" else None)
        prefill(rec, users, prefill_events)
        work = Workload(users, seed=2)
        for _ in range(50):                                    # warm-up: scripts loaded, local tier filled
            work.call(rec, 64, fused=True)
        if freeze:                                             # what a deployment could do after start-up
            gc.collect()
            gc.freeze()
        client.config_resetstat()                              # (zeroes aof_rewrites too: read after the run)
        server_cpu = ServerCpu(server.process.pid)
        children_before = server_cpu(children=True)
        starts, ends, began = [], [], time.perf_counter()
        with CollectorTimer() as collector:
            while time.perf_counter() - began < seconds:
                starts.append(time.perf_counter())
                work.call(rec, 64, fused=True)
                ends.append(time.perf_counter())
        starts, ends = np.array(starts), np.array(ends)
        ms = (ends - starts) * 1e3
        persistence, stats = client.info("persistence"), client.info("commandstats")
        n = len(ms)
        return {"aof": aof, "appendfsync": fsync, "auto_rewrite": rewrite, "rewrite_min_mb": int(rewrite_min_mb),
                "runtime": runtime, "calls": n,
                "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
                "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()),
                "gc_frozen": freeze, "gc": collector.summary(starts, ends, ms >= np.percentile(ms, 99)),
                "aof_rewrites": int(persistence["aof_rewrites"]),
                "rewrite_child_cpu_s": server_cpu(children=True) - children_before,
                "aof_mb_at_end": persistence["aof_current_size"] / 1e6,
                "redis_us_per_call_by_command": {k.replace("cmdstat_", ""): round(v["usec"] / n, 1)
                                                 for k, v in stats.items() if not k.startswith("cmdstat_config")}}
    finally:
        if freeze:
            gc.unfreeze()
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def markdown(rows: list) -> str:
    lines = ["| AOF | appendfsync | auto rewrite | runtime | calls | p50 / p90 / p99 / max ms | rewrites (child CPU s) "
             "| Redis µs per call: EXEC, script's commands |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        by = r["redis_us_per_call_by_command"]
        inner = sum(v for k, v in by.items() if k not in ("exec", "eval", "evalsha", "multi", "msetnx"))
        lines.append(f"| {r['aof']} | {r['appendfsync']} | {r['auto_rewrite']} | {r.get('runtime', 'torch')} | "
                     f"{r['calls']:,} | {r['p50_ms']:.2f} / "
                     f"{r['p90_ms']:.2f} / {r['p99_ms']:.2f} / {r['max_ms']:.1f} | {r['aof_rewrites']} "
                     f"({r['rewrite_child_cpu_s']:.1f}) | {by.get('exec', 0):.0f}, {inner:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="back-to-back calls per set-up (default 30)")
    ap.add_argument("--aof", nargs="+", choices=("disk", "tmpfs"), default=["disk", "tmpfs"])
    ap.add_argument("--fsync", nargs="+", choices=("always", "everysec"), default=["always", "everysec"])
    ap.add_argument("--rewrite", nargs="+", choices=("on", "off"), default=["on", "off"])
    ap.add_argument("--rewrite-min-mb", type=int, default=64,
                    help="auto-aof-rewrite-min-size in MB for --rewrite on (default 64: Redis' own default)")
    ap.add_argument("--users", type=int, default=4096, help="users in the pool (default 4096)")
    ap.add_argument("--prefill", type=int, default=3, help="events per user before the clock (default 3)")
    ap.add_argument("--runtime", nargs="+", choices=("torch", "onnx"), default=["torch", "onnx"],
                    help="the model's step in PyTorch and/or ONNX Runtime (one thread; graphs exported at start)")
    ap.add_argument("--gc-freeze", action="store_true",
                    help="gc.freeze() after the warm-up: the start-up objects leave the collector's generations")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    add_out_argument(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    users = np.arange(args.users)
    rows = []
    with tempfile.TemporaryDirectory(prefix="t2arec-tail-onnx-") as onnx_dir:
        if "onnx" in args.runtime:
            export_graphs(onnx_dir)
        for aof, fsync, rewrite, runtime in itertools.product(args.aof, args.fsync, args.rewrite, args.runtime):
            rows.append(one_setup(aof, fsync, rewrite, args.seconds, users, args.prefill, freeze=args.gc_freeze,
                                  runtime=runtime, onnx_dir=onnx_dir, rewrite_min_mb=args.rewrite_min_mb))
            report_row(rows[-1])
    if args.markdown:
        print(markdown(rows))
    write_json(args.out, "bench_redis_tail.json", {"environment": environment(), "config": vars(args) | {"out": None},
                                                   "setups": rows})
    return 0


def report_row(row: dict) -> None:
    print(f"AOF {row['aof']}, appendfsync {row['appendfsync']}, auto rewrite {row['auto_rewrite']} (min "
          f"{row['rewrite_min_mb']} MB), runtime "
          f"{row['runtime']}: {row['calls']} calls, p50 {row['p50_ms']:.2f} "
          f"p90 {row['p90_ms']:.2f} p99 {row['p99_ms']:.2f} max {row['max_ms']:.1f} ms; "
          f"{row['aof_rewrites']} rewrites ({row['rewrite_child_cpu_s']:.1f} s child CPU); garbage "
          f"collections {row['gc']['collections']}, longest {row['gc']['max_pause_ms']} ms, in "
          f"{row['gc']['slow_calls_with_a_collection']:.0%} of the calls ≥ p99", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
