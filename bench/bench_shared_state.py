"""Shared serving state: the in-process cache against the Redis tier (with and without the local tier), and 1, 2, 4
serving processes against one Redis.

    python -m bench.bench_shared_state [--quick] [--aof disk tmpfs] [--fsync always everysec] [--runtime onnx]
                                       [--rewrite-min-mb 64] [--markdown] [--out DIR]
                                       # writes DIR/bench_shared_state.json

Model: ml-100k-sized T2ARec (n_items 1682, d 64, d_state 32, 1 block), random weights, eval, float32, 1 torch
thread, as bench_serving (`--runtime onnx`: its encode and step in ONNX Runtime on one thread, in every
configuration, the in-process ones included). A pool of users is observed first (a few events each); one measured
call is observe(B distinct random users of the pool, one event each) + recommend(the same users, k=10), B = 1, 64,
1024.

Configurations, measured in one run with their repetitions interleaved (a busy machine slows all alike):
  in-process    OnlineRecommender(model): history store + cache in this process (no Redis)
  redis+local   OnlineRecommender(model, store=url): Redis holds the truth, this process's cache is the local tier
                (the users' current states are local here, so observe is one compare-and-set round trip and
                recommend one read that ships no state)
  redis-only    the same with capacity_bytes=0, on a prefix with snapshot_every=1 (the setting docs/serving.md
                recommends without a local tier): every state travels from Redis and back on every call
  redis+local every-commit   redis+local with snapshot_every=1: every commit stores every user's state (the key
                layout before 2026-12-02, side by side)
  in-process fused, redis+local fused   the same two set-ups serving each call as ONE observe_and_recommend
                (with the Redis tier one round trip, the commit, instead of two); their cost is taken against
                "in-process fused", the in-process recommender making the same call
and P = 1, 2, 4 serving processes of each configuration (batch 64) run at once for a fixed time, each serving its
own share of the pool (as a load balancer with user affinity routes them): events/s of all together, per-call
latency. (Contention on the same users, and its compare-and-set retries, is what
tests/serving/test_redis_concurrency.py exercises.)

The Redis server is started here (tests/redis_server.py: loopback, appendonly yes), one per (--aof, --fsync) pair,
with auto-aof-rewrite-min-size --rewrite-min-mb (Redis' default 64 MB unless given: the write-heavy configurations
then fork an AOF rewrite every ~20 s of the run, during every configuration's calls).
--aof picks where its append-only file lives: "disk" (a temporary folder on this machine's disk) and/or "tmpfs"
(/dev/shm: an fsync costs nothing there: what the round trips and scripts themselves cost). --fsync sets Redis'
appendfsync: "always" (every write is fsynced before Redis replies: what docs/serving.md's durability guarantee
needs) and/or "everysec" (fsynced once a second by a background thread: a crash of the machine can lose the last
second of acknowledged events; a crash of Redis alone loses nothing). Reported per configuration and batch:
events/s (median over runs), p50/p99 ms per call (over all calls), and CPU ms per call of the serving thread and of
the Redis server (read from /proc: steadier than wall time on a shared machine), with the ratios to in-process.
"""
from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.harness import ROOT, add_out_argument, environment, timed, write_json
from t2arec_fast.export import export_onnx
from t2arec_fast.model import T2ARec
from t2arec_fast.serving import OnlineRecommender
from t2arec_fast.serving.redis_store import RedisStateStore

N_ITEMS, D, D_STATE, HISTORY = 1682, 64, 32, 200
T0 = 1_700_000_000


def redis_server_class():
    """tests/redis_server.py's RedisServer (the tests' launcher; loaded by path: tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("redis_server", ROOT / "tests" / "redis_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RedisServer


def model():
    torch.manual_seed(0)
    return T2ARec(N_ITEMS, d=D, d_state=D_STATE, n_layers=1).eval()


class Workload:
    """Random distinct users of the pool per call, one event each, times increasing (shared by all configs)."""

    def __init__(self, users: np.ndarray, seed: int):
        self.users, self.rng, self.t = users, np.random.default_rng(seed), T0 + 10 ** 6

    def call(self, rec, batch: int, fused: bool = False):
        """observe + recommend as two calls, or (fused) as one observe_and_recommend call."""
        u = self.rng.choice(self.users, batch, replace=False)
        self.t += 1
        items, times = self.rng.integers(1, N_ITEMS + 1, batch), np.full(batch, self.t, np.int64)
        if fused:
            return rec.observe_and_recommend(u, items, times, k=10)
        rec.observe(u, items, times)
        return rec.recommend(u, k=10)


def prefill(rec, users: np.ndarray, events: int) -> None:
    rng = np.random.default_rng(1)
    for j in range(events):
        for start in range(0, len(users), 1024):
            u = users[start:start + 1024]
            rec.observe(u, rng.integers(1, N_ITEMS + 1, len(u)), np.full(len(u), T0 + 60 * j, np.int64))


def summary(batch: int, per_run: list, cpu: list, redis_cpu: list) -> dict:
    """per_run: lists of seconds per call → events/s (median over runs), p50/p99 ms over all calls, the median CPU
    ms per call of the serving thread (cpu), and the Redis server's CPU ms per call (redis_cpu: per run, seconds
    per call; averaged, as /proc counts in 10 ms ticks)."""
    every = np.concatenate(per_run)
    return {"batch": batch, "events_per_s": batch / statistics.median([statistics.median(r) for r in per_run]),
            "p50_ms": float(np.percentile(every, 50) * 1e3), "p99_ms": float(np.percentile(every, 99) * 1e3),
            "cpu_ms": float(np.median(np.concatenate(cpu)) * 1e3),
            "redis_cpu_ms": float(np.mean(redis_cpu) * 1e3) if redis_cpu else 0.0,
            "calls": int(len(every))}


class ServerCpu:
    """CPU seconds (user + system) the redis-server process has used so far, from /proc (Linux); None elsewhere."""

    def __init__(self, pid: int):
        self.path = Path(f"/proc/{pid}/stat")
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __call__(self, children: bool = False) -> float:
        """children=True: the CPU of its finished children instead (the AOF rewrites Redis forks)."""
        try:
            fields = self.path.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        at = 13 if children else 11                                      # cutime, cstime / utime, stime
        return (int(fields[at]) + int(fields[at + 1])) / self.tick


def single_process(recs: dict, users, batches, runs: int, reps: dict, server_cpu) -> list:
    work = Workload(users, seed=2)
    times = {(name, b): [] for name in recs for b in batches}
    cpus = {(name, b): [] for name in recs for b in batches}
    redis_cpu = {(name, b): [] for name in recs for b in batches}
    for run in range(runs + 1):                                   # run 0 = warm-up
        for b in batches:
            for name, rec in recs.items():
                before = server_cpu()
                # two untimed calls after switching configurations: a deployment serves one configuration, and the
                # first call after a switch is the benchmark's own cost (measured: 5.8-7.2 ms against a median of
                # 4.0 for redis+local fused at batch 64; bench/results/issue16_tail/scripts/switch.py)
                t = timed(lambda: work.call(rec, b, fused=is_fused(name)), reps[b], warmup=2, clocks=("wall", "cpu"))
                if run:
                    times[name, b].append(t["wall"])
                    cpus[name, b].append(t["cpu"])
                    if not is_in_process(name):
                        redis_cpu[name, b].append((server_cpu() - before) / reps[b])
    return [{"config": name, **summary(b, times[name, b], cpus[name, b], redis_cpu[name, b]),
             **({"cas_retries": recs[name].stats().get("cas_retries", 0)} if not is_in_process(name) else {})}
            for name in recs for b in batches]


def recommender(config: str, url: str, prefix: str, onnx_dir=None):
    """One serving configuration of CONFIGS (this model, HISTORY events). onnx_dir: the model's graphs
    (`export_graphs`): serve with runtime "onnx" on one ONNX Runtime thread; None: the PyTorch model."""
    # onnx: one intra-op thread, so that no ORT worker competes with Redis for the cores
    runtime = {"runtime": "torch"} if onnx_dir is None else {"runtime": "onnx", "onnx_dir": onnx_dir, "onnx_threads": 1}
    if is_in_process(config):
        return OnlineRecommender(model(), capacity_bytes=1 << 30, history_len=HISTORY, **runtime)
    store = RedisStateStore(url, prefix=prefix.replace(" ", "_"), history_len=HISTORY,
                            snapshot_every=1 if config.endswith("every-commit") or config == "redis-only" else None)
    return OnlineRecommender(model(), store=store, capacity_bytes=0 if config == "redis-only" else 1 << 30,
                             history_len=HISTORY, **runtime)


def export_graphs(directory) -> str:
    """The benchmark model's encode and step graphs written to `directory` (for `recommender(onnx_dir=...)`)."""
    export_onnx(model(), directory, kinds=("encode", "step"))
    return str(directory)


def _serving_process(config, url, users, batch, seconds, round_, start, results, onnx_dir=None):
    try:
        torch.set_num_threads(1)
        rec = recommender(config, url, prefix=f"procs-{config}", onnx_dir=onnx_dir)
        work = Workload(users, seed=round_)
        work.t += round_ * 10 ** 7            # a later round's events are later than any earlier round's
        work.call(rec, batch, fused=is_fused(config))     # warm-up (imports, scripts loaded, local tier filled)
        start.wait()
        calls, began = [], time.perf_counter()
        while time.perf_counter() - began < seconds:
            t0 = time.perf_counter()
            work.call(rec, batch, fused=is_fused(config))
            calls.append(time.perf_counter() - t0)
        results.put({"calls": calls, "seconds": time.perf_counter() - began,
                     "cas_retries": rec.stats().get("cas_retries", 0)})
    except Exception as exc:                  # reported to the parent instead of leaving it waiting
        results.put({"error": f"{type(exc).__name__}: {exc}"})


def processes(url, users, batch: int, counts, seconds: float, onnx_dir=None) -> list:
    """P processes of each configuration at once (one configuration at a time) against one Redis, for `seconds`
    each round; → events/s of all together, per-call latency, CAS retries."""
    ctx = mp.get_context("spawn")
    rows = []
    for P in counts:
        for config in CONFIGS:
            start, results = ctx.Event(), ctx.Queue()
            shares = np.array_split(users, P)   # each process its own users
            procs = [ctx.Process(target=_serving_process,
                                 args=(config, url, shares[i], batch, seconds, P, start, results, onnx_dir))
                     for i in range(P)]
            for p in procs:
                p.start()
            time.sleep(2.0 + 2.0 * P)             # let every process import torch and warm up before the clock
            start.set()
            got = [results.get(timeout=120 + 2 * seconds) for _ in procs]
            for p in procs:
                p.join()
            errors = [g["error"] for g in got if "error" in g]
            if errors:
                raise RuntimeError(f"a serving process failed: {errors[0]}")
            every = np.concatenate([g["calls"] for g in got])
            rows.append({"config": config, "processes": P, "batch": batch,
                         "events_per_s": batch * len(every) / max(g["seconds"] for g in got),
                         "p50_ms": float(np.percentile(every, 50) * 1e3),
                         "p99_ms": float(np.percentile(every, 99) * 1e3),
                         "calls": int(len(every)), "cas_retries": int(sum(g["cas_retries"] for g in got))})
    return rows


def command_profile(url: str, users: np.ndarray, prefill_events: int, calls: int = 300, onnx_dir=None) -> dict:
    """Redis' own time per batch-64 call of redis+local by command (`INFO commandstats` around `calls` calls on a
    fresh prefix): {command: µs per call}. EVAL / EXEC (the commit) and EVALSHA (the read) include the Redis
    commands their scripts run, which are listed too."""
    rec = recommender("redis+local", url, prefix="profile", onnx_dir=onnx_dir)
    prefill(rec, users, prefill_events)
    client = _redis_client(url)
    client.config_resetstat()
    work = Workload(users, seed=3)
    for _ in range(calls):
        work.call(rec, 64)
    stats = client.info("commandstats")
    return {name.replace("cmdstat_", ""): round(v["usec"] / calls, 1) for name, v in stats.items()
            if not name.startswith("cmdstat_config")}


CONFIGS = ("in-process", "redis+local", "redis-only", "redis+local every-commit", "in-process fused",
           "redis+local fused")
# redis+local: the store's default (a state stored every 16 events, readers step through the rest); redis-only and
# "every-commit": snapshot_every=1, every commit stores every user's state (as the layout before 2026-12-02 did);
# "fused": the same set-up serving each call as one observe_and_recommend (one round trip instead of two), its
# cost taken against the in-process recommender making the same call


def is_fused(config: str) -> bool:
    return config.endswith(" fused")


def is_in_process(config: str) -> bool:
    return config.startswith("in-process")


def baseline(config: str) -> str:
    """The in-process configuration a configuration's cost is taken against: the one making the same calls."""
    return "in-process fused" if is_fused(config) else "in-process"


def one_server(aof: str, fsync: str, args, users, batches, reps, onnx_dir=None) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="t2arec-bench-redis-", dir="/dev/shm" if aof == "tmpfs" else None))
    server = redis_server_class()(folder, appendfsync=fsync).start()
    try:
        _redis_client(server.url).config_set("auto-aof-rewrite-min-size", str(int(args.rewrite_min_mb) << 20))
        recs = {config: recommender(config, server.url, prefix=config, onnx_dir=onnx_dir) for config in CONFIGS}
        for rec in recs.values():                 # each its own users' data (prefixes), so no one's copy goes stale
            prefill(rec, users, args.prefill)
        server_cpu = ServerCpu(server.process.pid)
        rows = single_process(recs, users, batches, args.runs, reps, server_cpu)
        multi = processes(server.url, users, 64, (1, 2, 4), args.seconds, onnx_dir)
        # read before command_profile: its CONFIG RESETSTAT zeroes aof_rewrites (runs before 2026-12-02 said 0)
        aof_info = _redis_client(server.url).info("persistence")
        profile = command_profile(server.url, users, args.prefill, calls=30 if args.quick else 300,
                                  onnx_dir=onnx_dir)
        return {"aof": aof, "appendfsync": fsync, "rewrite_min_mb": int(args.rewrite_min_mb),
                "aof_folder": str(folder), "single_process": rows,
                "processes": multi, "redis_us_per_call_by_command": profile,
                "aof_rewrites": int(aof_info.get("aof_rewrites", 0)),
                "aof_rewrite_cpu_s": server_cpu(children=True)}
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _redis_client(url: str):
    import redis
    return redis.Redis.from_url(url)


def print_table(result: dict) -> None:
    for part in result["servers"]:
        print(f"\nRedis AOF on {part['aof']}, appendfsync {part['appendfsync']} ({part['aof_rewrites']} AOF rewrites "
              f"during the run at auto-aof-rewrite-min-size {part.get('rewrite_min_mb', 64)} MB, "
              f"{part['aof_rewrite_cpu_s']:.1f} s of CPU in their child processes)")
        base = {(r["config"], r["batch"]): r for r in part["single_process"] if is_in_process(r["config"])}
        print(f"{'config':<24} {'batch':>5} {'events/s':>10} {'cost':>6} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'CPU ms':>7} {'Redis CPU':>9} {'CPU cost':>8}")
        for r in part["single_process"]:
            b = base[baseline(r["config"]), r["batch"]]
            print(f"{r['config']:<24} {r['batch']:>5} {r['events_per_s']:>10,.0f} "
                  f"{b['events_per_s'] / r['events_per_s']:>5.2f}x {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                  f"{r['cpu_ms']:>7.2f} {r['redis_cpu_ms']:>9.2f} "
                  f"{(r['cpu_ms'] + r['redis_cpu_ms']) / b['cpu_ms']:>7.2f}x")
        for r in part["processes"]:
            print(f"{r['config']:<24} {r['processes']} process(es), batch {r['batch']}: {r['events_per_s']:,.0f} "
                  f"events/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, CAS retries {r['cas_retries']}")
        top = sorted(part["redis_us_per_call_by_command"].items(), key=lambda kv: -kv[1])
        print("Redis µs per batch-64 call of redis+local, by command: " + ", ".join(f"{k} {v}" for k, v in top))


def markdown_tables(result: dict) -> str:
    """The tables docs/benchmarks.md shows, per Redis set-up: single process (events/s with the cost against
    in-process, p50/p99, CPU ms of the serving thread + Redis with the CPU cost) and 1/2/4 processes."""
    lines = []
    header = " | ".join(f"B = {b}: events/s (cost) | p50 / p99 ms | CPU ms: client + Redis (cost)"
                        for b in (1, 64, 1024))
    for part in result["servers"]:
        lines += ["", f"AOF on {part['aof']}, `appendfsync {part['appendfsync']}` ({part['aof_rewrites']} AOF "
                      f"rewrites at auto-aof-rewrite-min-size {part.get('rewrite_min_mb', 64)} MB, "
                      f"{part['aof_rewrite_cpu_s']:.1f} s of CPU in their child processes):", "",
                  f"| config | {header} |", "|---" * 10 + "|"]
        base = {(r["config"], r["batch"]): r for r in part["single_process"] if is_in_process(r["config"])}
        for config in CONFIGS:
            cells = []
            for r in (r for r in part["single_process"] if r["config"] == config):
                cells += _markdown_cells(r, base[baseline(config), r["batch"]], is_in_process(config))
            lines.append(f"| {config} | " + " | ".join(cells) + " |")
        lines += ["", "| config, batch 64 | 1 process | 2 processes | 4 processes |", "|---|---|---|---|"]
        for config in CONFIGS:
            cells = [f"{r['events_per_s']:,.0f} ev/s, p50 {r['p50_ms']:.1f} / p99 {r['p99_ms']:.0f} ms"
                     for r in part["processes"] if r["config"] == config]
            lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _markdown_cells(r: dict, base: dict, in_process: bool) -> list:
    """events/s (cost), p50 / p99, CPU ms (client + Redis, CPU cost) of one configuration and batch."""
    if in_process:
        return [f"{r['events_per_s']:,.0f}", f"{r['p50_ms']:.2f} / {r['p99_ms']:.1f}", f"{r['cpu_ms']:.2f}"]
    cpu_cost = (r["cpu_ms"] + r["redis_cpu_ms"]) / base["cpu_ms"]
    return [f"{r['events_per_s']:,.0f} ({base['events_per_s'] / r['events_per_s']:.2f}×)",
            f"{r['p50_ms']:.2f} / {r['p99_ms']:.1f}",
            f"{r['cpu_ms']:.2f} + {r['redis_cpu_ms']:.2f} ({cpu_cost:.2f}×)"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small pool, few calls (a smoke test, not numbers to quote)")
    ap.add_argument("--aof", nargs="+", choices=("disk", "tmpfs"), default=None,
                    help="where Redis' append-only file lives (default: disk; --quick: tmpfs)")
    ap.add_argument("--fsync", nargs="+", choices=("always", "everysec"), default=None,
                    help="Redis' appendfsync policy (default: always and everysec; --quick: always)")
    ap.add_argument("--users", type=int, default=None, help="users in the pool (default 4096; --quick 1024)")
    ap.add_argument("--prefill", type=int, default=None, help="events per user before timing (default 20; quick 2)")
    ap.add_argument("--runs", type=int, default=None, help="timed runs per configuration (default 3; quick 1)")
    ap.add_argument("--seconds", type=float, default=None, help="per multi-process round (default 5; quick 1)")
    ap.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                    help="every configuration's model step in PyTorch (default) or ONNX Runtime (one thread)")
    ap.add_argument("--rewrite-min-mb", type=int, default=64,
                    help="Redis' auto-aof-rewrite-min-size in MB (default 64: Redis' own default; docs/serving.md "
                         "advises sizing it to the write volume)")
    ap.add_argument("--markdown", action="store_true", help="also print the tables as docs/benchmarks.md has them")
    add_out_argument(ap)
    args = ap.parse_args(argv)
    q = args.quick
    args.users = args.users or (1024 if q else 4096)
    args.prefill = args.prefill or (2 if q else 20)
    args.runs = args.runs or (1 if q else 3)
    args.seconds = args.seconds or (1.0 if q else 5.0)
    aofs = args.aof or (["tmpfs"] if q else ["disk"])
    fsyncs = args.fsync or (["always"] if q else ["always", "everysec"])
    torch.set_num_threads(1)
    batches = (1, 64, 1024)
    reps = {1: 40, 64: 10, 1024: 2} if q else {1: 300, 64: 200, 1024: 8}     # batch 64: 600 calls for the p99
    users = np.arange(args.users, dtype=np.int64) * 7919 + 13
    env = environment(redis_server=_redis_version(), redis_py=_redis_py_version())
    result = {"environment": env, "config": {"quick": q, "users": args.users, "prefill_events": args.prefill,
                                             "runs": args.runs, "reps": reps, "seconds_per_round": args.seconds,
                                             "runtime": args.runtime, "rewrite_min_mb": args.rewrite_min_mb,
                                             "model": {"n_items": N_ITEMS, "d": D, "d_state": D_STATE, "blocks": 1}}}
    with tempfile.TemporaryDirectory(prefix="t2arec-bench-onnx-") as graphs:
        onnx_dir = export_graphs(graphs) if args.runtime == "onnx" else None
        result["servers"] = [one_server(aof, fsync, args, users, batches, reps, onnx_dir)
                             for aof in aofs for fsync in fsyncs]
    result["environment"]["load_average_end"] = list(os.getloadavg())
    print_table(result)
    if args.markdown:
        print(markdown_tables(result))
    write_json(args.out, "bench_shared_state.json", result)
    return 0


def _redis_py_version() -> str:
    """redis-py's version, and whether hiredis (its optional C parser and command packer) is in use."""
    import redis
    from redis.utils import HIREDIS_AVAILABLE
    return f"{redis.__version__} ({'with' if HIREDIS_AVAILABLE else 'without'} hiredis)"


def _redis_version() -> str:
    import shutil as sh
    import subprocess
    binary = sh.which("redis-server")
    if binary is None:
        return "not installed"
    return subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    raise SystemExit(main())
