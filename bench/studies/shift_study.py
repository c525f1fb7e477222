"""What test-time alignment does around known interest shifts (the embedded synthetic data set).

Trains T2ARec with the package defaults on the synthetic set (or loads --checkpoint), then evaluates valid and test
with: no test-time step; the paper's step (per batch of 256, all parameters); and per-user steps on L_time only,
optionally gated to users whose request gap is long (`ttt_gate`). NDCG@10 is split by whether the target is the
first event after a true shift (ground truth from the generator). The setting with the best validation NDCG@10 is
reported as the one validation chooses.

    python -m bench.studies.shift_study --epochs 20 --seed 0                          # ≈ 3 min on a 2-core CPU
    python -m bench.studies.shift_study --epochs 20 --seed 0 --valid-after-shift 0.5  # valid. targets after shifts

The default data put a shift before the TEST target of half the users but before few validation targets (6.8 %),
so validation cannot see what a step does after a shift; --valid-after-shift gives validation the test's share.
Writes DIR/shift_study_seed<S>.json (--out DIR, --name); `python -m bench.studies.report` renders all of them into
docs/results.md.
"""
from __future__ import annotations

import argparse
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from t2arec_fast.config import Config
from t2arec_fast.data import leave_one_out, load_dataset
from t2arec_fast.evaluate import evaluate
from t2arec_fast.adapt import GATED_PER_USER_STEP
from t2arec_fast.metrics import metrics_from_ranks
from t2arec_fast.model import load_model
from t2arec_fast.train import fit

from bench.harness import RESULTS, code_version, write_json

CODE = code_version()          # the code this process runs, read once at start (edits during a run don't count)

# (label, ttt overrides or None)
SETTINGS = [
    ("no test-time step", None),
    ("paper: batch 256, all params, α 0.005, μ' 0.1", {}),
    ("per user, L_time only, ssm params, α 2", {"ttt_batch_size": 1, "ttt_params": "ssm", "ttt_lr": 2.0,
                                                  "ttt_mu_time": 1.0, "ttt_mu_state": 0.0}),
    ("  + gate: request gap ≥ 5× median gap", {"ttt_batch_size": 1, "ttt_params": "ssm", "ttt_lr": 2.0,
                                                "ttt_mu_time": 1.0, "ttt_mu_state": 0.0, "ttt_gate": 5.0}),
    ("per user, L_time only, ssm params, α 10, gate 20×", GATED_PER_USER_STEP),
]


BEFORE, AFTER_CAP, NO_SHIFT_NEAR = 3, 4, -99


def shift_offsets(ds) -> np.ndarray:
    """Per interaction, where it lies relative to its user's true shifts: k = 0 for the first event of a new
    interest; else −j if the next shift is j ≤ 3 events ahead; else k = events since the latest shift (k ≥ 4
    reported as 4), or NO_SHIFT_NEAR when the user has not shifted yet and will not within 3 events."""
    flags = ds.extras["after_shift"]
    out = np.full(len(flags), NO_SHIFT_NEAR, dtype=np.int64)
    for a, b in zip(ds.offsets[:-1], ds.offsets[1:]):
        shifts = np.flatnonzero(flags[a:b])
        if not len(shifts):
            continue
        pos = np.arange(b - a)
        prev = np.searchsorted(shifts, pos, side="right") - 1           # latest shift at or before pos
        since = np.where(prev >= 0, pos - shifts[np.maximum(prev, 0)], NO_SHIFT_NEAR)
        until = np.where(prev + 1 < len(shifts), shifts[np.minimum(prev + 1, len(shifts) - 1)] - pos, BEFORE + 1)
        after = np.where(prev >= 0, np.minimum(since, AFTER_CAP), NO_SHIFT_NEAR)
        out[a:b] = np.where((until <= BEFORE) & (since != 0), -until, after)   # a shift's own event stays 0
    return out


def split_ndcg(model, split, which, max_len, ttt, after_shift, offsets):
    res = evaluate(model, split, which, max_len, ttt=ttt, return_ranks=True)
    ranks = res.pop("ranks")
    stops = split.part(which).stops
    flags, where = after_shift[stops], offsets[stops]
    by_offset = {int(k): [round(metrics_from_ranks(ranks[where == k], [10])["ndcg@10"], 5), int((where == k).sum())]
                 for k in range(-BEFORE, AFTER_CAP + 1) if (where == k).any()}
    return {"ndcg@10": round(res["ndcg@10"], 5), "recall@10": round(res["recall@10"], 5),
            "ndcg@10_after_shift": round(metrics_from_ranks(ranks[flags], [10])["ndcg@10"], 5),
            "ndcg@10_no_shift": round(metrics_from_ranks(ranks[~flags], [10])["ndcg@10"], 5),
            "share_after_shift": round(float(flags.mean()), 4),
            "ndcg@10_by_shift_offset": by_offset}                        # offset → [NDCG@10, targets]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", default=None, help="evaluate this model instead of training one (trained on "
                    "the synthetic set with min_count=1, as here)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides for the model trained here, e.g. readout=request_gap")
    ap.add_argument("--valid-after-shift", type=float, default=0.0,
                    help="share of users whose validation target is forced right after a shift (generator option)")
    ap.add_argument("--out", type=Path, default=RESULTS, metavar="DIR", help="folder for the JSON")
    ap.add_argument("--name", default=None, help="file name (default shift_study_seed<S>.json)")
    args = ap.parse_args()
    spec = f"synthetic:valid_after_shift={args.valid_after_shift}" if args.valid_after_shift else "synthetic"
    ds = load_dataset(spec, min_count=1, verbose=False)
    split = leave_one_out(ds)
    if args.checkpoint:
        model = load_model(args.checkpoint)
        if model.n_items != ds.n_items:
            raise SystemExit(f"{args.checkpoint}: the model knows {model.n_items} items, the synthetic set here has "
                             f"{ds.n_items} (train it with --min_count=1, or use --set instead of --checkpoint)")
    else:
        cfg = Config.from_sources(overrides={"epochs": args.epochs, "seed": args.seed, "min_count": 1,
                                             "progress": False}, args=[f"--{kv}" for kv in args.set])
        model, _ = fit(cfg, dataset=ds)
    after_shift, offsets = ds.extras["after_shift"], shift_offsets(ds)
    rows = []
    for label, over in SETTINGS:
        ttt = None if over is None else Config.from_sources(overrides=over).ttt
        t0 = time.perf_counter()
        row = {"setting": label, "ttt": over}
        for which in ("valid", "test"):
            row[which] = split_ndcg(model, split, which, ds.default_max_len, ttt, after_shift, offsets)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        v, t = row["valid"], row["test"]
        print(f"{label:<52} valid {v['ndcg@10']:.4f} ({v['ndcg@10_after_shift']:.4f} / {v['ndcg@10_no_shift']:.4f})"
              f"   test {t['ndcg@10']:.4f} ({t['ndcg@10_after_shift']:.4f} / {t['ndcg@10_no_shift']:.4f})", flush=True)
    chosen = max(rows, key=lambda r: r["valid"]["ndcg@10"])           # first of equals: the simpler setting
    print(f"chosen on validation: {chosen['setting'].strip()} → test NDCG@10 {chosen['test']['ndcg@10']:.4f}")
    report = {"what": "NDCG@10 overall (after shift / no shift)", "epochs": args.epochs, "seed": args.seed,
              "overrides": args.set, "checkpoint": args.checkpoint, "data": spec,
              "chosen_on_valid": chosen["setting"],
              "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads", "torch": torch.__version__,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "code": CODE, "rows": rows}
    print(f"wrote {write_json(args.out, args.name or f'shift_study_seed{args.seed}.json', report)}")


if __name__ == "__main__":
    main()
