"""cProfile of 500 redis+local fused calls at batch 64 (AOF on disk, appendfsync always). Run from the repository
root: PYTHONPATH=. python bench/results/issue16_tail/scripts/prof_redis_call.py [torch|onnx] [tottime|cumulative]"""
import sys, time, tempfile, shutil, cProfile, pstats
from pathlib import Path
import numpy as np, torch
from bench.bench_shared_state import recommender, prefill, Workload, redis_server_class, export_graphs
torch.set_num_threads(1)
runtime = sys.argv[1] if len(sys.argv) > 1 else "torch"
folder = Path(tempfile.mkdtemp(prefix="t2arec-ph-"))
server = redis_server_class()(folder, appendfsync="always").start()
onnx_dir = None
if runtime == "onnx":
    onnx_dir = Path(tempfile.mkdtemp()); export_graphs(onnx_dir)
try:
    rec = recommender("redis+local fused", server.url, prefix="ph", onnx_dir=onnx_dir)
    users = np.arange(4096); prefill(rec, users, 3)
    w = Workload(users, seed=2)
    for _ in range(50): w.call(rec, 64, fused=True)
    pr = cProfile.Profile(); pr.enable()
    for _ in range(500): w.call(rec, 64, fused=True)
    pr.disable()
    st = pstats.Stats(pr); st.sort_stats(sys.argv[2] if len(sys.argv) > 2 else "tottime").print_stats(40)
finally:
    server.stop(); shutil.rmtree(folder, ignore_errors=True)
