"""The README's Python example: data → pre-train → test-time alignment → evaluate → ONNX → online serving."""
import numpy as np
import t2arec_fast as t2a
from t2arec_fast.config import Config
from t2arec_fast.data import leave_one_out
from t2arec_fast.evaluate import evaluate
from t2arec_fast.train import fit

ds = t2a.load_dataset("synthetic:n_users=300,seed=1", min_count=1)   # or a path: "../shared/datasets/ml-100k"
cfg = Config.from_sources(overrides={"epochs": 2, "mu_time": 0.1, "mu_state": 0.1, "gap_transform": "log1p_hours",
                                    "state_norm": "relative", "progress": False})
model, history = fit(cfg, dataset=ds)                                 # early stopping on valid NDCG@10
split = leave_one_out(ds)
plain = evaluate(model, split, "test", max_len=50)                     # full ranking, no test-time step
aligned = evaluate(model, split, "test", max_len=50, ttt=cfg.ttt)     # with the test-time step (Algorithm 1)
print(f"test NDCG@10 {plain['ndcg@10']:.4f} -> with test-time alignment {aligned['ndcg@10']:.4f}")
model.save("runs/quickstart")                                          # model.safetensors, config.json (config, λ)
t2a.export_onnx(model, "runs/quickstart/onnx")         # encode.onnx, step.onnx, step_topk.onnx, each checked vs PyTorch
rec = t2a.OnlineRecommender(t2a.T2ARec.load("runs/quickstart"), capacity_bytes=64 << 20)
# user ids: any int64; item ids: the model's own 1..n_items (the raw id of item i is ds.item_ids[i])
rec.observe(np.array([7, 7, 8]), np.array([3, 5, 9]), np.array([1_700_000_000, 1_700_000_060, 1_700_000_100]))
items, scores = rec.recommend(np.array([7, 8]), k=5)                   # O(1) per event, top-5 model item ids per user
print(items)
