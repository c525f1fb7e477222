"""Where the time of a redis+local fused call at batch 64 goes (AOF on disk, appendfsync always) with the commit sent
before the answer is computed: packing + send, the answer (meanwhile), the wait for the reply; 1,500 calls.
Run from the repository root: PYTHONPATH=. python bench/results/issue16_tail/scripts/overlap_phases.py [torch|onnx]"""
import sys, time, tempfile, shutil
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
    store = rec.shared.store
    rows = []
    orig = store._transaction
    def timed(commands, meanwhile):
        t = {"s": time.perf_counter()}
        def mw():
            t["m0"] = time.perf_counter(); r = meanwhile(); t["m1"] = time.perf_counter(); return r
        out = orig(commands, mw if meanwhile else None)
        t["e"] = time.perf_counter()
        if meanwhile: rows.append(t)
        return out
    store._transaction = timed
    for _ in range(50): w.call(rec, 64, fused=True)
    rows.clear(); tot = []
    for _ in range(1500):
        a = time.perf_counter(); w.call(rec, 64, fused=True); tot.append(time.perf_counter() - a)
    g = lambda k1, k2: np.array([(r[k2] - r[k1]) * 1e3 for r in rows])
    for label, k1, k2 in (("pack+send", "s", "m0"), ("meanwhile", "m0", "m1"), ("read after meanwhile", "m1", "e"),
                          ("transaction", "s", "e")):
        x = g(k1, k2); print(f"{label:28s} p50 {np.percentile(x,50):.3f} p90 {np.percentile(x,90):.3f} p99 {np.percentile(x,99):.3f}")
    tot = np.array(tot) * 1e3
    print(f"whole call p50 {np.percentile(tot,50):.3f} p99 {np.percentile(tot,99):.3f}")
finally:
    server.stop(); shutil.rmtree(folder, ignore_errors=True)
