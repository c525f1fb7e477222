"""`t2arec demo`: the whole pipeline on built-in synthetic data, no files needed. DESCRIPTION lists the steps (it is
what `t2arec demo --help` prints); one function per step below.
"""
from __future__ import annotations

import argparse

from .common import write_json


DESCRIPTION = (
    "Run the whole pipeline on built-in synthetic data (no files needed): "
    "(1) build the synthetic interest-shift data set and show its statistics, split sizes and how much a time-blind "
    "baseline loses to a gap-aware one; "
    "(2) pre-train the backbone, T2ARec and T2ARec with the request-gap readout (an extension), --epochs each; "
    "(3) evaluate them on test with full ranking, without and with test-time alignment (the paper's step and the "
    "gated per-user extension), NDCG@10 split by whether the target follows a true interest shift; "
    "(4) export T2ARec to ONNX under --out, each graph checked against PyTorch; "
    "(5) serve test users event by event through the O(1) online recommender and compare its top-1 with the full "
    "encoder. Checkpoints and graphs go to --out; --data-only stops after step 1.")


def register(subparsers) -> None:
    demo = subparsers.add_parser(
        "demo", help="run the whole pipeline (data, training, evaluation, ONNX, serving) on built-in synthetic data",
        description=DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    demo.add_argument("--users", type=int, default=2000, help="synthetic users")
    demo.add_argument("--items", type=int, default=1000, help="synthetic items")
    demo.add_argument("--seed", type=int, default=0, help="generator seed")
    demo.add_argument("--epochs", type=int, default=10, help="pre-training epochs per model")
    demo.add_argument("--out", metavar="DIR", default="runs/demo", help="checkpoints and ONNX graphs go here")
    demo.add_argument("--data-only", action="store_true", help="stop after the data step")
    demo.add_argument("--json", metavar="PATH", help="also write the numbers as JSON to PATH")
    demo.set_defaults(func=run_demo)


def run_demo(args) -> int:
    report = {"data": demo_data(args)}
    if not args.data_only:
        models, report["evaluation"] = demo_train_and_evaluate(args)
        report["export"] = demo_export(models["t2arec"], args)
        report["serving"] = demo_serving(models["t2arec"], args)
    write_json(args.json, report)
    return 0


def demo_data(args) -> dict:
    """Step 1: build the data set; print statistics, split sizes and the baseline check."""
    from t2arec_fast.data import format_stats, leave_one_out, load_dataset
    from t2arec_fast.data.synthetic import baseline_check, format_baseline_check
    print(f"== data: {_spec(args)}")
    ds = load_dataset(_spec(args), verbose=False)
    stats = ds.stats()
    print(format_stats(stats))
    sizes = leave_one_out(ds).sizes()
    print("== leave-one-out split\n" + "\n".join(f"  {k.replace('_', ' '):<14} {v:,}" if isinstance(v, int)
                                                 else f"  {k:<14} {v}" for k, v in sizes.items()))
    check = baseline_check(ds)
    print("== baseline check (a time-blind predictor vs one that looks at the gap before the request)")
    print(format_baseline_check(check))
    return {"stats": stats, "split": sizes, "baseline_check": check}


def _spec(args) -> str:
    return f"synthetic:n_users={args.users},n_items={args.items},seed={args.seed}"


def _dataset(args):
    from t2arec_fast.data import leave_one_out, load_dataset
    ds = load_dataset(_spec(args), verbose=False)
    return ds, leave_one_out(ds)


REQUEST_GAP_LABEL = "t2arec, request-gap readout (ext.)"


def demo_train_and_evaluate(args):
    """Steps 2 and 3: pre-train the backbone, T2ARec (package defaults) and T2ARec scoring at the request time
    (readout "request_gap", an extension); evaluate on test without the step, with the paper's step, and with the
    gated per-user extension (what test-time alignment can do around known shifts)."""
    import numpy as np
    from t2arec_fast.adapt import GATED_PER_USER_STEP
    from t2arec_fast.config import Config
    from t2arec_fast.evaluate import evaluate
    from t2arec_fast.metrics import metrics_from_ranks
    from t2arec_fast.train import fit
    ds, split = _dataset(args)
    after_shift = ds.extras["after_shift"][split.part("test").stops]
    rows, models = {}, {}
    variants = {"backbone": {"model": "backbone"}, "t2arec": {"model": "t2arec"},
                REQUEST_GAP_LABEL: {"model": "t2arec", "readout": "request_gap"}}
    for name, overrides in variants.items():
        print(f"== pre-training {name} ({args.epochs} epochs)")
        cfg = Config.from_sources(overrides={**overrides, "epochs": args.epochs, "seed": args.seed, "min_count": 1})
        model, history = fit(cfg, dataset=ds, out_dir=f"{args.out}/{overrides.get('readout', name)}")
        models[name] = model
        runs = [(name, None)]
        if name == "t2arec":
            runs += [(f"{name} + test-time step (paper)", cfg.ttt),
                     (f"{name} + gated per-user step (ext.)", Config.from_sources(overrides=GATED_PER_USER_STEP).ttt)]
        for label, ttt in runs:
            res = evaluate(model, split, "test", history["max_len"], ttt=ttt, return_ranks=True)
            ranks = res.pop("ranks")
            res["ndcg@10_after_shift"] = metrics_from_ranks(ranks[after_shift], [10])["ndcg@10"]
            res["ndcg@10_no_shift"] = metrics_from_ranks(ranks[~after_shift], [10])["ndcg@10"]
            res["seconds_per_epoch"] = history["seconds_per_epoch"]
            rows[label] = res
    print("== test, full ranking over all items (NDCG@10 split by whether the target follows a true shift)")
    print(f"  {'model':<40}{'Recall@10':>10}{'MRR@10':>9}{'NDCG@10':>9}{'after shift':>12}{'no shift':>10}")
    for label, r in rows.items():
        print(f"  {label:<40}{r['recall@10']:>10.4f}{r['mrr@10']:>9.4f}{r['ndcg@10']:>9.4f}"
              f"{r['ndcg@10_after_shift']:>12.4f}{r['ndcg@10_no_shift']:>10.4f}")
    print(f"  test users {len(after_shift):,}, of which right after a shift {np.mean(after_shift):.1%}. Paper's step: "
          + ", ".join(f"{k}={v}" for k, v in vars(Config().ttt).items() if k not in ("ttt", "ttt_gate"))
          + "; extension: " + ", ".join(f"{k}={v}" for k, v in GATED_PER_USER_STEP.items()))
    return models, rows


def demo_export(model, args) -> dict:
    """Step 4: export the encoder and the one-step graphs; the exporter checks them against PyTorch."""
    from t2arec_fast.export import export_onnx
    print("== ONNX export")
    summary = export_onnx(model, f"{args.out}/onnx")
    print(f"  wrote {args.out}/onnx (each graph run in ONNX Runtime and compared with PyTorch at export time)")
    return summary


def demo_serving(model, args, n_users: int = 200) -> dict:
    """Step 5: feed test users' histories event by event to the O(1) recommender; compare with the full encoder."""
    import time
    import numpy as np
    import torch
    from t2arec_fast.serving import OnlineRecommender
    ds, split = _dataset(args)
    part = split.part("test")
    users, stops = part.users[:n_users], part.stops[:n_users]
    n_users = len(users)
    starts = np.maximum(ds.offsets[users], stops - 50)
    rec = OnlineRecommender(model, capacity_bytes=64 << 20, history_len=50)
    longest = int((stops - starts).max())
    t0 = time.perf_counter()
    for k in range(longest):                                  # event k of every user that has one
        has = starts + k < stops
        pos = (starts + k)[has]
        rec.observe(users[has], ds.items[pos], ds.timestamps[pos])
    seconds = time.perf_counter() - t0
    served, _ = rec.recommend(users, k=10)
    items = np.zeros((n_users, longest), dtype=np.int64)
    times = np.zeros((n_users, longest), dtype=np.int64)
    for row, (a, b) in enumerate(zip(starts, stops)):
        items[row, longest - (b - a):] = ds.items[a:b]
        times[row, longest - (b - a):] = ds.timestamps[a:b]
    with torch.no_grad():
        full = model.scores(torch.from_numpy(items), torch.from_numpy(times)).topk(10).indices.numpy()
    agree = float(np.mean(served[:, 0] == full[:, 0]))
    events = int((stops - starts).sum())
    print(f"== online serving: {events:,} events for {n_users} users in {seconds:.2f}s "
          f"({events / seconds:,.0f} events/s, batched by event rank); top-1 equal to the full encoder for "
          f"{agree:.1%} of users")
    return {"users": n_users, "events": events, "seconds": seconds, "top1_agreement": agree}
