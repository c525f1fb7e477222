"""Are the first calls after switching configurations the slow ones? bench_shared_state's six configurations interleaved
in blocks of 60 batch-64 calls, per-call times kept by position in the block. Run from the repository root:
PYTHONPATH=. python bench/results/issue16_tail/scripts/switch.py"""
import tempfile, shutil, time
from pathlib import Path
import numpy as np, torch
from bench.bench_shared_state import recommender, prefill, Workload, redis_server_class, CONFIGS, is_fused
torch.set_num_threads(1)
folder = Path(tempfile.mkdtemp(prefix="t2arec-sw-"))
server = redis_server_class()(folder, appendfsync="always").start()
try:
    users = np.arange(4096, dtype=np.int64) * 7919 + 13
    recs = {c: recommender(c, server.url, prefix=c) for c in CONFIGS}
    for r in recs.values(): prefill(r, users, 5)
    work = Workload(users, seed=2)
    t = {c: [] for c in CONFIGS}
    for run in range(4):
        for c, r in recs.items():
            block = []
            for _ in range(60):
                a = time.perf_counter(); work.call(r, 64, fused=is_fused(c)); block.append(time.perf_counter() - a)
            if run: t[c].append(block)
    for c in ("in-process fused", "redis+local fused"):
        x = np.array(t[c]) * 1e3     # (runs, 60)
        print(c, "first 3 calls of each block:", np.round(x[:, :3], 2).tolist(), "median of the rest", round(float(np.median(x[:, 3:])), 2),
              "p99 all", round(float(np.percentile(x, 99)), 2), "p99 without first 2", round(float(np.percentile(x[:, 2:], 99)), 2))
finally:
    server.stop(); shutil.rmtree(folder, ignore_errors=True)
