"""Training speed: seconds per epoch and peak memory of sasrec, backbone and t2arec (μ > 0) on ml-100k, and the
test-time step's throughput on this machine.

ml-100k (../shared/datasets/ml-100k), 10-core, max length 200, leave-one-out, batch 256, default model sizes. Each
model trains --epochs epochs through `t2arec_fast.train.fit` (the product path; the per-epoch time excludes the
validation pass) in its own subprocess, so that its peak resident memory (CPU: ru_maxrss; CUDA: max allocated) is
its own. Reported: median seconds per epoch after the first (the first also compiles / warms up; for the
`t2arec_compiled` row, torch.compile with inductor, compile s = first epoch − that median and "vs eager" = the
t2arec row's s/epoch over this row's), peak memory, and the RSS before training (data + torch) for reference.
With --recipe YAML (e.g. t2arec_fast/configs/tuned_beauty.yaml) every model also trains under that recipe, in the
same run beside its default row ("<model>+<recipe>"; "vs default" = this row's s/epoch over the default row's).
Then the test-time step (bench_ttt.py's unit: forward, L_time/L_state, backward, adapted forward, full ranking) in
batches/s at --ttt-batch × 200 on ml-100k's item count (random sequences: ml-100k has only 943 users).

Target (issue 3): one t2arec epoch on ml-100k in under 5 s on this 2-core CPU.
Prints a table and writes bench_train.json into --out DIR (default $OUT, else bench/results).
Run from the repository root: python -m bench.bench_train
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from t2arec_fast import json_io
from bench.harness import ROOT, add_out_argument, child_command, environment, write_json

DATA = ROOT.parent / "shared" / "datasets" / "ml-100k"
MODELS = ("sasrec", "backbone", "t2arec")
# rows beyond the study's three models (not run by default): name → config overrides
EXTRA_MODELS = {"t2arec_request_gap": {"model": "t2arec", "readout": "request_gap"},
                "t2arec_compiled": {"model": "t2arec", "compile": True}}     # torch.compile (inductor)


def _peak_memory_mib(device: str) -> float:
    import torch
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024      # Linux: KiB


def train_worker(opts) -> dict:
    """One model: fit for --epochs epochs; seconds per epoch and peak memory."""
    import torch
    from t2arec_fast.config import Config
    from t2arec_fast.data import load_dataset
    from t2arec_fast.train import fit
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ds = load_dataset(opts.data, min_count=opts.min_count, verbose=False)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base, _, recipe = opts.worker.partition("+")           # "<model>" or "<model>+<recipe>"
    model = EXTRA_MODELS.get(base, {"model": base})
    aligned = model["model"] == "t2arec"
    cfg = Config.from_sources(yaml_path=opts.recipe if recipe else None, overrides=dict(
        **model, max_len=opts.max_len, min_count=opts.min_count, epochs=opts.epochs,
        batch_size=opts.batch_size, patience=opts.epochs + 1, progress=False, device=device,
        mu_time=opts.mu_time if aligned else 0.0, mu_state=opts.mu_state if aligned else 0.0,
        aux_warmup_epochs=0))                   # time every epoch with the alignment losses on
    t0 = time.perf_counter()
    _, history = fit(cfg, dataset=ds)
    seconds = [e["seconds"] for e in history["epochs"]]
    # steady state: epochs after the first (the first also compiles / warms up); compile_s = first − steady
    steady = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    return dict(model=opts.worker, device=device, n_users=ds.n_users, n_items=ds.n_items, epochs=len(seconds),
                seconds_per_epoch=steady, epoch_seconds=seconds, first_epoch_s=seconds[0],
                compile_s=seconds[0] - steady if model.get("compile") else None,
                eval_seconds=statistics.median(e["eval_seconds"] for e in history["epochs"]),
                steps_per_epoch=history["epochs"][0]["steps"], wall_s=time.perf_counter() - t0,
                valid_ndcg10=history["epochs"][-1]["valid_ndcg@10"],
                mu_time=cfg.train.mu_time, mu_state=cfg.train.mu_state,
                peak_mem_mib=_peak_memory_mib(device), rss_before_training_mib=rss_before)


def ttt_worker(opts) -> dict:
    """Test-time step throughput at --ttt-batch × max_len on ml-100k's item count."""
    import torch
    from bench.bench_ttt import run_case
    from t2arec_fast.data import load_dataset
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n_items = load_dataset(opts.data, min_count=opts.min_count, verbose=False).n_items
    case_opts = argparse.Namespace(reps=opts.ttt_reps, warmup=opts.ttt_warmup, budget=opts.ttt_budget)
    row = run_case("ttt", device, "auto", opts.ttt_batch, opts.max_len, n_items, case_opts)
    row["peak_mem_mib"] = _peak_memory_mib(device)
    return row


def run_worker(name: str, opts) -> dict:
    """Run one worker in a fresh process (own peak memory); its last stdout line is JSON."""
    argv = child_command("bench.bench_train", "--worker", name, *opts.passthrough)
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        return dict(model=name, error=(proc.stderr or proc.stdout).strip().splitlines()[-1:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def format_table(rows: list, ttt: dict) -> str:
    lines = [f"{'model':<26} {'device':<6} {'s/epoch':>8} {'vs eager':>8} {'vs default':>10} {'compile s':>9} "
             f"{'steps':>6} {'eval s':>7} {'peak MiB':>9} {'RSS before':>10} {'valid NDCG@10':>13}"]
    eager = {r["model"]: r["seconds_per_epoch"] for r in rows if "error" not in r}
    for r in rows:
        if "error" in r:
            lines.append(f"{r['model']:<26} ERROR {r['error']}")
            continue
        base = eager.get(r["model"].removesuffix("_compiled"))
        ratio = f"{base / r['seconds_per_epoch']:.2f}x" if base and r["model"].endswith("_compiled") else ""
        default = eager.get(r["model"].partition("+")[0]) if "+" in r["model"] else None
        cost = f"{r['seconds_per_epoch'] / default:.2f}x" if default else ""
        compile_s = f"{r['compile_s']:.1f}" if r.get("compile_s") is not None else ""
        lines.append(f"{r['model']:<26} {r['device']:<6} {r['seconds_per_epoch']:>8.2f} {ratio:>8} {cost:>10} "
                     f"{compile_s:>9} "
                     f"{r['steps_per_epoch']:>6} {r['eval_seconds']:>7.2f} {r['peak_mem_mib']:>9.0f} "
                     f"{r['rss_before_training_mib']:>10.0f} {r['valid_ndcg10']:>13.4f}")
    if ttt:
        lines.append("")
        if "error" in ttt:
            lines.append(f"test-time step: ERROR {ttt['error']}")
        else:
            lines.append(f"test-time step (t2arec, {ttt['device']}, batch {ttt['batch']} x L {ttt['length']} x "
                         f"{ttt['n_items']} items): {ttt['batches_per_s']:.4f} batches/s "
                         f"({ttt['median_s']:.2f} s per batch, median of {ttt['reps']}), "
                         f"peak {ttt['peak_mem_mib']:.0f} MiB")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--min-count", type=int, default=10)
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--epochs", type=int, default=3, help="epochs per model (median reported)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--mu-time", type=float, default=0.1, help="μ1 of the t2arec row")
    p.add_argument("--mu-state", type=float, default=0.1, help="μ2 of the t2arec row")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=[*MODELS, *EXTRA_MODELS])
    p.add_argument("--recipe", default=None, metavar="YAML",
                   help="also train every model under this config file, beside its default row")
    p.add_argument("--ttt-batch", type=int, default=4096, help="test batch for the throughput row (0 = skip)")
    p.add_argument("--ttt-reps", type=int, default=2)
    p.add_argument("--ttt-warmup", type=int, default=1)
    p.add_argument("--ttt-budget", type=float, default=300.0)
    add_out_argument(p)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    raw = list(sys.argv[1:] if argv is None else argv)
    opts.passthrough = [a for i, a in enumerate(raw) if a != "--worker" and (i == 0 or raw[i - 1] != "--worker")]
    return opts


def main(argv=None) -> int:
    opts = parse_args(argv)
    if opts.worker:
        result = ttt_worker(opts) if opts.worker == "ttt" else train_worker(opts)
        print(json_io.dumps(result, indent=None))
        return 0
    rows = []
    stem = Path(opts.recipe).stem if opts.recipe else None
    for name in [n for m in opts.models for n in ([m, f"{m}+{stem}"] if stem else [m])]:
        rows.append(run_worker(name, opts))
        print(format_table(rows[-1:], {}).splitlines()[-1], flush=True)
    ttt = run_worker("ttt", opts) if opts.ttt_batch > 0 else {}
    result = dict(machine=environment(),
                  settings={k: str(v) if k == "out" else v for k, v in vars(opts).items()
                            if k not in ("worker", "passthrough")},
                  rows=rows, ttt=ttt)
    path = write_json(opts.out, "bench_train.json", result)
    print(f"\n{Path(opts.data).name}, {rows[0].get('n_users', '?')} users, {rows[0].get('n_items', '?')} items, "
          f"max_len "
          f"{opts.max_len}, batch {opts.batch_size}, {opts.epochs} epochs, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}")
    print(format_table(rows, ttt))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
