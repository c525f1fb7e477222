"""cProfile of the in-process fused call at batch 64 (the model's and the local tier's part of the Redis call): p50/p99 of
500 calls; with any argument also the profile. Run from the repository root: PYTHONPATH=. python bench/results/issue16_tail/scripts/prof_call.py"""
import cProfile, pstats, sys, time
import numpy as np, torch
from bench.bench_shared_state import recommender, prefill, Workload
torch.set_num_threads(1)
users = np.arange(4096)
rec = recommender("in-process fused", "", "x")
prefill(rec, users, 3)
w = Workload(users, 2)
for _ in range(50): w.call(rec, 64, fused=True)
ts = []
for _ in range(500):
    t0 = time.perf_counter(); w.call(rec, 64, fused=True); ts.append(time.perf_counter() - t0)
ts = np.array(ts) * 1e3
print(f"in-process fused: p50 {np.percentile(ts,50):.3f} p99 {np.percentile(ts,99):.3f} ms")
if len(sys.argv) > 1:
    pr = cProfile.Profile(); pr.enable()
    for _ in range(300): w.call(rec, 64, fused=True)
    pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(35)
