"""Pre-training (docs/model.md §5): L = L_rec + μ1 L_time + μ2 L_state with Adam, early stopping on validation NDCG@10.

    model, history = fit(cfg)                        # or fit(cfg, dataset=ds, out_dir="runs/x", resume="runs/x")

* L_rec is the cross-entropy at every non-pad position in one pass (the models are causal); the auxiliary losses
  are off for the first `aux_warmup_epochs` epochs, and off altogether for `backbone` and `sasrec`.
* λ (L_time's margin) is estimated from the training data before training unless `time_margin` is set, and is
  stored in the model (so in every checkpoint).
* out_dir/best: the model at the best validation epoch (`load_model` reads it). out_dir/last: the latest model plus
  trainer.pt (optimizer, epoch, RNG states, early-stopping counters, best weights) for `resume`.
* Under torchrun (env WORLD_SIZE > 1): DistributedDataParallel, gloo on CPU / nccl on CUDA. `batch_size` is per
  rank: rank r reads global batches r, r+w, ... (`data.train_batches`), so one step sees w·batch_size rows, the
  same rows one process sees with batch size w·batch_size. Each loss is re-weighted by the rank's share of the
  step's count (positions for L_rec, pairs for L_time, users for L_state), so that DDP's gradient average equals
  the gradient of the one-process loss on those rows. Rank 0 validates, checkpoints and logs.
"""
from __future__ import annotations

import math
import os
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from .config import Config
from .data import load_dataset_from_config, make_split, train_batches
from .evaluate import evaluate, evaluate_splits
from .model import T2ARec, build_model, load_model
from .model.losses import estimate_time_margin, gap_sequence, time_pairs
from .progress import progress_bar, write_line

TRAINER_STATE = "trainer.pt"


# -- environment -----------------------------------------------------------------------------------------------------
@dataclass
class DistContext:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False        # we initialised the process group, so we destroy it

    @property
    def enabled(self) -> bool:
        """More than one process: DDP and collectives are on."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, which validates, checkpoints and logs."""
        return self.rank == 0


def init_distributed(device_type: str) -> DistContext:
    """Join the process group torchrun describes in the environment (no-op for a single process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def resolve_device(spec: str, ctx: DistContext) -> torch.device:
    """The device of config `device`: "auto" = CUDA when available; a bare "cuda" is this rank's local GPU.

    Raises:
        RuntimeError: a device string torch does not know.
    """
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ctx.local_rank if ctx.enabled else torch.cuda.current_device())
    return device


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; `deterministic` also switches torch to deterministic kernels for the rest of the
    process (CPU training is deterministic anyway; this matters on CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- loss --------------------------------------------------------------------------------------------------------------
class _LossModule(nn.Module):
    """`model.losses` as a forward, so that DistributedDataParallel (which hooks forward) can wrap it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, items, times, next_items, target_times, with_aux: bool, contrastive=None):
        """model.losses, plus "cl" (0 unless `contrastive`, the TrainConfig, is given: `model.contrastive_loss`)."""
        out = self.model.losses(items, times, next_items, target_times, with_aux=with_aux)
        out["cl"] = (self.model.contrastive_loss(items, times, contrastive) if contrastive is not None
                     else out["rec"].new_zeros(()))
        return out


def time_pair_count(items: torch.Tensor, times: torch.Tensor, target_times: torch.Tensor, model_cfg) -> torch.Tensor:
    """How many pairs L_time averages over in this batch (its denominator; data only, no parameters): a 0-dim
    int64 tensor. items, times: (batch, L) int64 LEFT-padded ids and unix seconds; target_times: (batch,) int64.
    The pairs are `model.losses.time_pairs`, the one definition the loss and λ's estimate use too."""
    gaps, valid = gap_sequence(times, items != 0, target_times)
    return time_pairs(gaps, valid, model_cfg.pair_block, model_cfg.gap_transform, model_cfg.count_tied_pairs)[1].sum()


def shard_weights(batch, ctx: DistContext, model_cfg, real: bool = True) -> dict:
    """{"rec", "time", "state"}: this rank's share of the step's data × world size, per loss.

    Each loss is a mean over its rank's batch (L_rec over positions, L_time over pairs, L_state over users); DDP
    averages gradients over ranks. Weighting a rank's mean by n_local·world_size / n_global turns that average
    into the mean over all the step's data, exactly as one process would compute it (a filler batch, `real`
    False, has weight 0).
    """
    if not ctx.enabled:
        return {"rec": 1.0, "time": 1.0, "state": 1.0}
    pairs = time_pair_count(batch.items, batch.times, batch.target_times, model_cfg) \
        if model_cfg.model == "t2arec" else torch.zeros(())
    local = torch.stack([(batch.next_items != 0).sum(), pairs.to(batch.items.device),
                         torch.tensor(batch.items.shape[0], device=batch.items.device)]).double() * float(real)
    total = local.clone()
    dist.all_reduce(total)
    return dict(zip(("rec", "time", "state"), (local * ctx.world_size / total.clamp_min(1)).tolist()))


def objective(out: dict, mu_time: float, mu_state: float, weights: Optional[dict] = None,
              cl_weight: float = 0.0) -> torch.Tensor:
    """L = L_rec + μ1 L_time + μ2 L_state (+ cl_weight · L_cl when cl_weight ≠ 0), each term scaled by its shard
    weight under DDP (`shard_weights`; L_cl, a mean over the rank's users, takes L_state's)."""
    w = weights or {"rec": 1.0, "time": 1.0, "state": 1.0}
    loss = w["rec"] * out["rec"] + mu_time * w["time"] * out["time"] + mu_state * w["state"] * out["state"]
    return loss + cl_weight * w["state"] * out["cl"] if cl_weight else loss


# -- training state ----------------------------------------------------------------------------------------------------
@dataclass
class TrainState:
    """Early-stopping and resume state of `fit`, saved in out_dir/last/trainer.pt."""
    epoch: int = 0                                  # next epoch to run
    best_score: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    epochs: list = field(default_factory=list)      # one record per finished epoch
    best_state: Optional[dict] = None               # CPU copy of the best model's state_dict


def _uses_alignment(model, cfg: Config) -> bool:
    return model.uses_alignment and (cfg.train.mu_time != 0 or cfg.train.mu_state != 0)


def _estimate_margin(split, cfg: Config, max_len: int) -> float:
    """λ = median |g(T_i) − g(T_j)| over the pairs L_time sees in the training batches (docs/model.md §3)."""
    def gaps():
        for b in train_batches(split, max_len, max(cfg.train.batch_size, 1024), shuffle=False):
            items, times = torch.from_numpy(b.items), torch.from_numpy(b.times)
            yield gap_sequence(times, items != 0, torch.from_numpy(b.target_times))
    return estimate_time_margin(gaps(), block=cfg.model.pair_block, gap_transform=cfg.model.gap_transform)


def _load_dataset(cfg: Config, dataset):
    if dataset is None or isinstance(dataset, (str, Path)):
        return load_dataset_from_config(str(dataset or cfg.data.dataset), cfg.data,
                                        verbose=cfg.train.progress and os.environ.get("RANK", "0") == "0")
    return dataset


def _make_split(ds, cfg: Config):
    return make_split(ds, cfg.data.split)


# -- checkpoints -------------------------------------------------------------------------------------------------------
def _checkpoint_extra(cfg: Config, max_len: int, state: TrainState, valid: Optional[dict] = None) -> dict:
    return {"train_config": cfg.to_dict(), "max_len": max_len, "best_epoch": state.best_epoch + 1,
            "epochs_run": state.epoch, "valid": valid}


def _id_maps(ds) -> dict:
    """Raw ids by contiguous id (item 0 = padding), saved with every checkpoint so that serving and export can map
    a data file's ids to the model's."""
    return {"item_ids": ds.item_ids, "user_ids": ds.user_ids}


def _save_last(model, optimizer, state: TrainState, directory: Path, cfg: Config, max_len: int, id_maps=None) -> None:
    model.save(directory, id_maps=id_maps, extra=_checkpoint_extra(cfg, max_len, state))
    payload = {"optimizer": optimizer.state_dict(), "state": state.__dict__, "rng": _rng_state()}
    tmp = directory / (TRAINER_STATE + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, directory / TRAINER_STATE)


def _resume(model, optimizer, resume) -> TrainState:
    """Restore weights, optimizer, counters and RNG states from out_dir/last (or a `last` directory itself)."""
    directory = Path(resume)
    if not (directory / TRAINER_STATE).is_file() and (directory / "last" / TRAINER_STATE).is_file():
        directory = directory / "last"
    if not (directory / TRAINER_STATE).is_file():
        raise FileNotFoundError(f"cannot resume: {directory / TRAINER_STATE} not found")
    saved = load_model(directory)
    model.load_state_dict(saved.state_dict())
    payload = torch.load(directory / TRAINER_STATE, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(payload["optimizer"])
    _set_rng_state(payload["rng"])
    return TrainState(**payload["state"])


# -- one epoch ---------------------------------------------------------------------------------------------------------
def _rank_batches(split, cfg: Config, max_len: int, epoch: int, ctx: DistContext) -> tuple:
    """(iterator of (batch, is_real), number of steps, mean targets per step): this rank's batches, the same count
    on every rank; the mean counts the targets of all ranks' batches of a step.

    Rank r takes global batches r, r+w, ... (`train_batches`); when the count does not divide evenly, the ranks that
    run out repeat a batch with weight 0 for the last round, so every rank joins every collective and the step's
    gradient is still the mean over the real batches only.
    """
    mine = train_batches(split, max_len, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed, epoch=epoch,
                         rank=ctx.rank, world_size=ctx.world_size, bucket=cfg.train.length_buckets,
                         samples=cfg.train.train_samples)
    rounds = -(-mine.n_global // ctx.world_size)

    def pairs():
        filler = None
        for batch in mine:
            filler = batch
            yield batch, True
        for _ in range(rounds - len(mine)):
            if filler is None:                # fewer global batches than ranks: borrow batch 0
                filler = next(iter(train_batches(split, max_len, cfg.train.batch_size, shuffle=False)))
            yield filler, False
    return pairs(), rounds, mine.n_targets / max(rounds, 1)


def target_weight(batch, ctx: DistContext, mean_step_targets: float, real: bool = True) -> float:
    """L_rec's weight under rec_weighting="target": n_local · world_size / (mean targets per step).

    The models return CE averaged over a batch's targets, which gives every batch the same say however many
    targets it holds: with length buckets a batch of short histories (≈ 2 targets per user) weighs as much as one
    of long histories (≈ 50 per user), so a target of a short history counts many times more. With this weight
    the step's loss is Σ CE / (mean targets per step) — every target counts the same, as in RecBole's batches of
    2048 targets — and under DDP the ranks' average is that same sum (no collective needed).
    """
    return float((batch.next_items != 0).sum()) * ctx.world_size / mean_step_targets if real else 0.0


def _train_epoch(loss_module, model, optimizer, split, cfg: Config, max_len: int, epoch: int, with_aux: bool,
                 device, ctx: DistContext) -> dict:
    loss_module.train()
    batches, n_steps_total, mean_step_targets = _rank_batches(split, cfg, max_len, epoch, ctx)
    bar = _progress(batches, cfg, ctx, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", total=n_steps_total)
    mu_time, mu_state = (cfg.train.mu_time, cfg.train.mu_state) if with_aux else (0.0, 0.0)
    amp = cfg.train.amp and device.type == "cuda"
    cl_weight = cfg.train.cl_weight
    contrastive = cfg.train if cl_weight > 0 else None   # off: no views drawn, so no random numbers used
    sums = {"loss": 0.0, "rec": 0.0, "time": 0.0, "state": 0.0, "cl": 0.0}
    n_steps = 0
    for step, (batch, real) in enumerate(bar):
        tb = batch.to_torch(device)
        weights = shard_weights(tb, ctx, model.config, real)
        if cfg.train.rec_weighting == "target":
            weights["rec"] = target_weight(tb, ctx, mean_step_targets, real)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            out = loss_module(tb.items, tb.times, tb.next_items, tb.target_times, with_aux, contrastive)
        loss = objective(out, mu_time, mu_state, weights, cl_weight)
        parts = torch.stack([objective(out, mu_time, mu_state, cl_weight=cl_weight), out["rec"], out["time"],
                             out["state"], out["cl"]])
        values = dict(zip(("loss", "rec", "time", "state", "cl"), parts.detach().float().tolist()))   # one sync
        if not all(math.isfinite(v) for v in values.values()):
            raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, step {step + 1}: {values}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if real:
            for k, v in values.items():
                sums[k] += v
            n_steps += 1
        if step % 10 == 0:
            bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
    return {k: v / max(n_steps, 1) for k, v in sums.items()} | {"steps": n_steps}


def _progress(iterable, cfg: Config, ctx: DistContext, desc: str, total: Optional[int] = None):
    return progress_bar(iterable, desc, total, enabled=cfg.train.progress and ctx.is_main)


def _log(cfg: Config, ctx: DistContext, message: str) -> None:
    if cfg.train.progress and ctx.is_main:
        write_line(message)


def _validate(model, split, cfg: Config, max_len: int, ctx: DistContext) -> tuple:
    """Rank 0 computes validation NDCG@10; every rank receives it, so all take the same early-stopping decision."""
    metrics = None
    score = torch.zeros(1, dtype=torch.float64)
    if ctx.is_main:
        metrics = evaluate(model, split, "valid", max_len=max_len, batch_size=cfg.train.eval_batch_size,
                           mask_history=cfg.data.mask_history, n_segments=cfg.data.n_segments,
                           compile_backend=cfg.train.compile_backend if cfg.train.compile else None)
        score[0] = metrics["ndcg@10"]
    if ctx.enabled:
        device = next(model.parameters()).device
        score = score.to(device) if dist.get_backend() == "nccl" else score
        dist.broadcast(score, src=0)
    return float(score[0]), metrics


# -- fit ---------------------------------------------------------------------------------------------------------------
def fit(cfg: Config, dataset=None, out_dir=None, resume=None, on_epoch: Optional[Callable[[dict], None]] = None):
    """Train the model `cfg.model.model` on `dataset` (a SequenceDataset, a path / "synthetic:..." spec, or None for
    `cfg.data.dataset`). Returns (model at its best validation epoch, history dict).

    on_epoch: called on rank 0 after every epoch with that epoch's record (epoch, losses, "valid_ndcg@10",
    seconds); an exception it raises stops training and propagates (`t2arec tune` prunes trials this way).
    The history holds every epoch's record, best_epoch (1-based), best_valid_ndcg@10, time_margin (λ, in units
    of g(T)), max_len and seconds_per_epoch (median). Source: docs/model.md §5.

    Raises:
        DataError: the data cannot be read, or the split gives no training or no validation example.
        FileNotFoundError: `resume` names no trainer state.
        FloatingPointError: a non-finite loss (naming the epoch and step).
    """
    want_cuda = cfg.train.device.startswith("cuda") or (cfg.train.device == "auto" and torch.cuda.is_available())
    ctx = init_distributed("cuda" if want_cuda else "cpu")
    try:
        return _fit(cfg, dataset, out_dir, resume, ctx, on_epoch)
    finally:
        if ctx.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def make_optimizer(model: torch.nn.Module, train) -> torch.optim.Optimizer:
    """The optimizer of `train.optimizer` (TrainConfig) over the model's parameters.

    "adam": torch.optim.Adam, `weight_decay` added to the gradient (L2; what the paper and RecBole's SASRec use).
    "adamw": torch.optim.AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019): θ shrinks
    by lr · weight_decay each step, apart from Adam's update — on matrices (embedding table, projections) only;
    biases, norm gains and the SSM's per-head A_log, dt_bias and D stay undecayed (the usual split: decaying a
    scale or an offset toward 0 changes what the layer computes, not how large its weights are).
    """
    if train.optimizer == "adamw":
        decay = [p for p in model.parameters() if p.ndim >= 2]
        rest = [p for p in model.parameters() if p.ndim < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": train.weight_decay},
                                  {"params": rest, "weight_decay": 0.0}], lr=train.lr)
    return torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)


def lr_at(train, epoch: int) -> float:
    """The learning rate of epoch `epoch` (0-based) under TrainConfig `train`: warm-up lr · (e + 1)/(W + 1) in the
    first W = warmup_epochs epochs, then lr ("constant") or cosine decay lr · ½(1 + cos(π (e − W)/(epochs − W)))
    ("cosine": SGDR without restarts, Loshchilov & Hutter, ICLR 2017). Set once per epoch, from the epoch number
    alone, so a resumed run continues the same schedule."""
    warm = train.warmup_epochs
    if epoch < warm:
        return train.lr * (epoch + 1) / (warm + 1)
    if train.lr_schedule == "constant":
        return train.lr
    return train.lr * 0.5 * (1 + math.cos(math.pi * (epoch - warm) / max(train.epochs - warm, 1)))


def _fit(cfg, dataset, out_dir, resume, ctx, on_epoch=None):
    device = resolve_device(cfg.train.device, ctx)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    ds = _load_dataset(cfg, dataset)
    split = _make_split(ds, cfg)
    split.require_targets(("train", "valid"))          # early stopping needs both; refuse before any epoch
    max_len = cfg.data.max_len or ds.default_max_len
    model = build_model(cfg.model, ds.n_items, max_len).to(device)
    margin = None
    if isinstance(model, T2ARec):                 # λ of L_time (estimated for the backbone too, and reported)
        margin = cfg.model.time_margin or _estimate_margin(split, cfg, max_len)
        model.set_time_margin(margin)
    optimizer = make_optimizer(model, cfg.train)
    state = _resume(model, optimizer, resume) if resume else TrainState()
    out_dir = Path(out_dir) if out_dir is not None else None
    if out_dir is not None and ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.save_yaml(out_dir / "config.yaml")

    aligned = _uses_alignment(model, cfg)
    loss_module = _LossModule(model)
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel
        # T2ARec's auxiliary-only parameters (q_proj) get no gradient in epochs without the auxiliary losses
        # (warm-up, μ = 0, backbone); DDP must then look for unused parameters.
        always_aux = aligned and cfg.train.aux_warmup_epochs == 0
        find_unused = isinstance(model, T2ARec) and not always_aux
        loss_module = DistributedDataParallel(loss_module, device_ids=[device.index] if device.type == "cuda" else None,
                                              find_unused_parameters=find_unused)
    if cfg.train.compile:
        from .compiled import compile_fn
        # DDP splits the graph at its gradient buckets on purpose, so a full graph is required on one process only
        loss_module = compile_fn(loss_module, cfg.train.compile_backend, fullgraph=not ctx.enabled)
    _log(cfg, ctx, f"training {cfg.model.model} on {ds.n_items} items, max_len {max_len}, device {device}"
         + (f", λ = {margin:.4g}" if margin is not None else "")
         + (f", {ctx.world_size} ranks" if ctx.enabled else ""))

    for epoch in range(state.epoch, cfg.train.epochs):
        if state.bad_epochs >= cfg.train.patience:          # checked first, so a resumed stopped run stays stopped
            _log(cfg, ctx, f"early stop: no improvement for {cfg.train.patience} epochs")
            break
        t0 = time.perf_counter()
        with_aux = aligned and epoch >= cfg.train.aux_warmup_epochs
        lr = lr_at(cfg.train, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        losses = _train_epoch(loss_module, model, optimizer, split, cfg, max_len, epoch, with_aux, device, ctx)
        train_seconds = time.perf_counter() - t0
        score, valid = _validate(model, split, cfg, max_len, ctx)
        improved = score > state.best_score
        if improved:
            state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
            state.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            state.bad_epochs += 1
        state.epoch = epoch + 1
        state.epochs.append({"epoch": epoch + 1, **losses, "aux": with_aux, "lr": lr, "valid_ndcg@10": score,
                             "seconds": train_seconds, "eval_seconds": time.perf_counter() - t0 - train_seconds})
        if ctx.is_main and out_dir is not None:
            if improved:
                model.save(out_dir / "best", id_maps=_id_maps(ds), extra=_checkpoint_extra(cfg, max_len, state, valid))
            _save_last(model, optimizer, state, out_dir / "last", cfg, max_len)
        _log(cfg, ctx, f"epoch {epoch + 1}: loss {losses['loss']:.4f} (rec {losses['rec']:.4f}, time "
             f"{losses['time']:.4g}, state {losses['state']:.4g}"
             + (f", cl {losses['cl']:.4g}" if cfg.train.cl_weight else "") + f")  valid NDCG@10 {score:.4f}"
             f"{' *' if improved else ''}  {train_seconds:.1f}s")
        if on_epoch is not None and ctx.is_main:
            on_epoch(state.epochs[-1])

    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    model.eval()
    return model, _history(state, cfg, margin, max_len)


def _history(state: TrainState, cfg: Config, margin, max_len: int) -> dict:
    seconds = [e["seconds"] for e in state.epochs]
    return {"epochs": state.epochs, "epochs_run": state.epoch, "best_epoch": state.best_epoch + 1,
            "best_valid_ndcg@10": state.best_score if state.best_epoch >= 0 else None,
            "stopped_early": state.bad_epochs >= cfg.train.patience, "time_margin": margin, "max_len": max_len,
            "seconds_per_epoch": statistics.median(seconds) if seconds else None}


# -- train, then evaluate at the best validation epoch -----------------------------------------------------------------
def train_and_evaluate(cfg: Config, dataset=None, out_dir=None, resume=None) -> tuple:
    """What `t2arec train` does: fit, then valid/test at the best epoch, and (t2arec with `ttt` on) with the
    test-time step too. → (model, results dict ready for JSON; empty on ranks other than 0).

    Raises:
        DataError: the split gives some of train, valid and test no example (before any training), or as `fit`.
        FileNotFoundError, FloatingPointError: as `fit`.
    """
    ds = _load_dataset(cfg, dataset)
    _make_split(ds, cfg).require_targets()              # all three, before training rather than after it
    model, history = fit(cfg, dataset=ds, out_dir=out_dir, resume=resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return model, {}
    ttt = cfg.ttt if (cfg.ttt.ttt and model.uses_alignment) else None
    results = evaluate_splits(model, _make_split(ds, cfg), history["max_len"], batch_size=cfg.train.eval_batch_size,
                              ttt=ttt, mask_history=cfg.data.mask_history, n_segments=cfg.data.n_segments)
    results.update(model=cfg.model.model, dataset=str(cfg.data.dataset), n_users=ds.n_users, n_items=ds.n_items,
                   epochs=history["epochs_run"], best_epoch=history["best_epoch"],
                   seconds_per_epoch=history["seconds_per_epoch"], time_margin=history["time_margin"],
                   history=history["epochs"], config=cfg.to_dict())
    return model, results
