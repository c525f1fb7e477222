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
raw_ids = {"item_ids": ds.item_ids, "user_ids": ds.user_ids}          # the data file's ids of items and users
model.save("runs/quickstart", id_maps=raw_ids)          # model.safetensors, config.json (config, λ), id_maps.npz
t2a.export_onnx(model, "runs/quickstart/onnx")         # encode.onnx, step.onnx, step_topk.onnx, each checked vs PyTorch
rec = t2a.OnlineRecommender(t2a.T2ARec.load("runs/quickstart"), capacity_bytes=64 << 20)
# raw ids as in the data file: items through the saved id map, users any ids (a new user starts cold)
rec.observe_raw(["ann", "ann", "bob"], ds.item_ids[[3, 5, 9]], [1_700_000_000, 1_700_000_060, 1_700_000_100])
items, scores = rec.recommend_raw(["ann", "bob"], k=5)                 # O(1) per event, top-5 raw item ids per user
print(items)                       # rec.observe / rec.recommend take int64 user keys and model item ids 1..n_items
