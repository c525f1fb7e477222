"""A redis+local fused call at batch 64 (AOF on disk, appendfsync always), taken apart. Run from the repository root:

    PYTHONPATH=. python bench/results/issue16_tail/scripts/redis_call.py phases [torch|onnx]
        where the time goes with the commit sent before the answer is computed (1,500 calls): packing + send, the
        answer (computed while Redis works), the wait for the reply after it, the whole call
    PYTHONPATH=. python bench/results/issue16_tail/scripts/redis_call.py profile [torch|onnx] [tottime|cumulative]
        cProfile of 500 calls
"""
import cProfile
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
        phases(rec, work) if mode == "phases" else profile(rec, work, sys.argv[3] if len(sys.argv) > 3 else "tottime")
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
        if onnx_dir:
            shutil.rmtree(onnx_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
