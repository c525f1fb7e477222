"""A redis+local fused call at batch 64 (AOF on disk, appendfsync always), taken apart. Run from the repository root:

    PYTHONPATH=. python bench/results/issue16_tail/scripts/redis_call.py phases [torch|onnx]
        where the time goes with the commit sent before the answer is computed (1,500 calls): packing + send, the
        answer (computed while Redis works), the wait for the reply after it, the whole call
    PYTHONPATH=. python bench/results/issue16_tail/scripts/redis_call.py profile [torch|onnx] [tottime|cumulative]
        cProfile of 500 calls
    PYTHONPATH=. python bench/results/issue16_tail/scripts/redis_call.py pieces [torch|onnx]
        p50 / p90 / p99 of the call's pieces, each timed by a wrapper (1,500 calls; nested pieces overlap: the
        transaction is inside the commit, the answer and the local write inside the transaction)
    PYTHONPATH=. python bench/results/issue16_tail/scripts/redis_call.py script [torch|onnx]
        the commit script's phases inside Redis (a profiling copy of it with TIME checkpoints; 600 calls)
"""
import cProfile
import functools
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.bench_shared_state import Workload, export_graphs, prefill, recommender, redis_server_class


def phases(rec, work):
    store, rows, transaction = rec.shared.store, [], rec.shared.store._transaction

    def timed(commands, meanwhile):
        t = {"send": time.perf_counter()}

        def answer():
            t["answer"] = time.perf_counter()
            result = meanwhile()
            t["answered"] = time.perf_counter()
            return result

        out = transaction(commands, answer if meanwhile else None)
        t["reply"] = time.perf_counter()
        if meanwhile:
            rows.append(t)
        return out

    store._transaction = timed
    calls = []
    for _ in range(1500):
        start = time.perf_counter()
        work.call(rec, 64, fused=True)
        calls.append(time.perf_counter() - start)
    for label, a, b in (("pack + send", "send", "answer"), ("answer", "answer", "answered"),
                        ("reply after the answer", "answered", "reply"), ("transaction", "send", "reply")):
        x = np.array([(r[b] - r[a]) * 1e3 for r in rows])
        print(f"{label:24s} p50 {np.percentile(x, 50):.3f} p90 {np.percentile(x, 90):.3f} "
              f"p99 {np.percentile(x, 99):.3f} ms")
    x = np.array(calls) * 1e3
    print(f"{'whole call':24s} p50 {np.percentile(x, 50):.3f} p99 {np.percentile(x, 99):.3f} ms")


def profile(rec, work, sort):
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(500):
        work.call(rec, 64, fused=True)
    profiler.disable()
    pstats.Stats(profiler).sort_stats(sort).print_stats(40)


def pieces(rec, work):
    times = {}

    def timed(owner, name, label):
        method = getattr(owner, name)

        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                times.setdefault(label, []).append(time.perf_counter() - start)
        setattr(owner, name, wrapper)

    shared, store = rec.shared, rec.shared.store
    for owner, name, label in ((shared, "_bases", "local read (bases)"), (rec, "_advance", "model step (advance)"),
                               (store, "commit", "commit"), (store, "_transaction", "transaction"),
                               (shared, "_put_local", "local write"), (rec, "_answer_from_states", "answer")):
        timed(owner, name, label)
    times["whole call"] = []
    for _ in range(1500):
        start = time.perf_counter()
        work.call(rec, 64, fused=True)
        times["whole call"].append(time.perf_counter() - start)
    for label, values in times.items():
        x = np.array(values) * 1e3
        print(f"{label:22s} p50 {np.percentile(x, 50):.3f} p90 {np.percentile(x, 90):.3f} "
              f"p99 {np.percentile(x, 99):.3f} ms")


_MARKS = [("parse the arguments", "local function field(i, j)"), ("(definitions)", "if redis.call('EXISTS', KEYS[2])"),
          ("done-marker check", "local lost, old, oldn, behind"), ("stamp check (HMGET per user)", "if #lost > 0 then"),
          ("key types (TYPE per user)", "local ttl, keep, from = "), ("writes", "-- popularity: read every item"),
          ("popularity", "redis.call('SET', KEYS[2], '1', 'PX',"), ("done-marker", "return behind\n")]


def script(rec, work):
    """The commit script with redis TIME checkpoints pushed to a list (a profiling copy; the store's own is left)."""
    import redis
    from t2arec_fast.serving import redis_store
    now = "local _t = redis.call('TIME'); _prof[#_prof+1] = _t[1] * 1000000 + _t[2]\n"
    code = redis_store._COMMIT
    start = "local version, stamp, H, rings"
    code = code.replace(start, "local _prof = {}\n" + now + start)
    for _, anchor in _MARKS:
        assert code.count(anchor) == 1, anchor
        code = code.replace(anchor, now + anchor)
    code = code.replace("return behind\n", "redis.call('RPUSH', 'prof', unpack(_prof))\nreturn behind\n")
    raw = redis.Redis.from_url(rec.shared.store.url)
    rec.shared.store._scripts["commit"] = raw.register_script(code)
    for _ in range(30):
        work.call(rec, 64, fused=True)
    raw.delete("prof")
    raw.config_resetstat()
    n = 600
    for _ in range(n):
        work.call(rec, 64, fused=True)
    marks = np.array([int(v) for v in raw.lrange("prof", 0, -1)]).reshape(n, -1)
    for (label, _), column in zip(_MARKS, np.diff(marks, axis=1).T):
        print(f"{label:30s} median {np.median(column):6.1f} µs")
    print(f"{'inside the script':30s} median {np.median(marks[:, -1] - marks[:, 0]):6.1f} µs; EVAL "
          f"{raw.info('commandstats')['cmdstat_eval']['usec_per_call']:.0f} µs per call (commandstats)")


def main():
    mode, runtime = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "torch")
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="t2arec-call-"))
    server = redis_server_class()(folder, appendfsync="always").start()
    onnx_dir = Path(tempfile.mkdtemp()) if runtime == "onnx" else None
    try:
        if onnx_dir:
            export_graphs(onnx_dir)
        rec = recommender("redis+local fused", server.url, prefix="call", onnx_dir=onnx_dir)
        users = np.arange(4096)
        prefill(rec, users, 3)
        work = Workload(users, seed=2)
        for _ in range(50):
            work.call(rec, 64, fused=True)
        if mode == "profile":
            profile(rec, work, sys.argv[3] if len(sys.argv) > 3 else "tottime")
        else:
            {"phases": phases, "pieces": pieces, "script": script}[mode](rec, work)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
        if onnx_dir:
            shutil.rmtree(onnx_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
