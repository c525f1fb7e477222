"""Test-time alignment (the paper's Algorithm 1, docs/model.md §5), implemented functionally.

For each test batch, independently ("episodic"): starting from the trained parameters θ, take M plain gradient updates
    θ ← θ − α ∇θ (μ1' L_time + μ2' L_state)                  (ttt_rule="sgd", the paper)
or, scale-free, a step of a chosen relative size ρ = ttt_lr along each parameter tensor's normalised gradient
    θ ← θ − ρ ‖θ‖ ∇θ / ‖∇θ‖                                   (ttt_rule="relative", an extension)
on the self-supervised alignment losses of that batch (no labels; model in eval mode), then score the batch with the
adapted parameters θ' (the scores use the adapted item embedding too). θ' lives only in a dict of tensors evaluated
with `torch.func.functional_call`: the model's own parameters are never written, so they are bit-identical
afterwards and nothing has to be copied or restored between batches.

The result depends on which users share a batch (the losses are batch means): callers record the batch size and
order with every result (see `evaluate.evaluate`).

Which parameters adapt (`TTTConfig.ttt_params`), by parameter-name filters (regular expressions, `re.search`):
    "all"    every parameter (the paper);
    "block"  the T2A-Mamba block(s): in_proj, conv, dt_bias, A_log, D, gated RMSNorm, out_proj, q_proj
             (not the item embedding, Add&Norm or FFN);
    "ssm"    the parameters that set the SSM's dynamics: A_log, dt_bias and in_proj (which produces Δ, B, C, x);
    "norms"  every normalisation layer's weights (and biases): embedding LayerNorm, Add&Norm, gated RMSNorm.
Parameters outside the chosen group, and those the losses do not reach (the FFN: L_time and L_state never see it,
since Δ̂_{n+1} is computed from o_n detached), keep their trained values.
"""
from __future__ import annotations

import functools
import re
from typing import Callable, Dict, NamedTuple, Optional

import torch
import torch.nn as nn
from torch.func import functional_call

PARAM_GROUPS = {
    "all": r".",
    "block": r"(^|\.)block\.",
    "ssm": r"(^|\.)block\.(A_log|dt_bias|in_proj\.weight)$",
    "norms": r"(^|\.)(emb_norm|norm\d?)\.",
}


# The extension measured in docs/results.md: per-user steps on L_time only (A, Δ's bias, in_proj), for users whose
# request gap is ≥ 20× their median gap. Validation did not choose it (it helps the few validation targets that
# follow a shift and costs the rest a little), so it is an option, not a default: TTT config overrides.
GATED_PER_USER_STEP = {"ttt_batch_size": 1, "ttt_params": "ssm", "ttt_lr": 10.0, "ttt_mu_time": 1.0,
                       "ttt_mu_state": 0.0, "ttt_gate": 20.0}


def adaptable_parameter_names(model: nn.Module, group: str) -> list:
    """Names of the trainable parameters in `group` (see PARAM_GROUPS)."""
    if group not in PARAM_GROUPS:
        raise ValueError(f"unknown ttt_params {group!r}; expected one of {sorted(PARAM_GROUPS)}")
    pattern = re.compile(PARAM_GROUPS[group])
    return [name for name, p in model.named_parameters() if p.requires_grad and pattern.search(name)]


def ttt_is_active(ttt_cfg) -> bool:
    """False when the step cannot change anything (no updates, α = 0, or μ1' = μ2' = 0)."""
    return ttt_cfg.ttt_updates > 0 and ttt_cfg.ttt_lr != 0 and (ttt_cfg.ttt_mu_time != 0 or ttt_cfg.ttt_mu_state != 0)


class _Bound(nn.Module):
    """Makes `method(model, *args)` the forward of a module, so that functional_call can evaluate any method of the
    model with substituted parameters (their names get the prefix "m.")."""

    def __init__(self, model: nn.Module, method: Callable):
        super().__init__()
        self.m = model
        self.method = method

    def forward(self, *args):
        return self.method(self.m, *args)


def call_with(model: nn.Module, params: Dict[str, torch.Tensor], method: Callable, *args):
    """`method(model, *args)` evaluated with `params` (name → tensor) in place of those parameters; method is a
    function of the model such as `T2ARec.aux_losses` (`type(model).aux_losses`)."""
    return functional_call(_Bound(model, method), {f"m.{k}": v for k, v in params.items()}, args)


def adapt_parameters(model: nn.Module, items: torch.Tensor, times: torch.Tensor, target_times: torch.Tensor,
                     ttt_cfg) -> Dict[str, torch.Tensor]:
    """θ' for one batch: M updates (`ttt_rule`, size `ttt_lr`) on μ1' L_time + μ2' L_state over the `ttt_params` group.

    items, times: (batch, L) int64 LEFT-padded; target_times: (batch,) int64 = t_{n+1}.
    → {name: adapted tensor} for the adapted group only (others keep the model's values). No gradient history.
    With `ttt_compile` each step runs as one compiled graph (t2arec_fast/compiled.py).
    """
    names = adaptable_parameter_names(model, ttt_cfg.ttt_params)
    own = dict(model.named_parameters())
    fast = {name: own[name].detach() for name in names}
    step = _compiled(alignment_update, ttt_cfg) if ttt_cfg.ttt_compile else alignment_update
    objective = _Bound(model, type(model).aux_losses)   # built here: a module built inside a graph would break it
    for _ in range(ttt_cfg.ttt_updates):
        fast = step(objective, fast, items, times, target_times, ttt_cfg.ttt_mu_time, ttt_cfg.ttt_mu_state,
                    ttt_cfg.ttt_lr, ttt_cfg.ttt_rule)
    return fast


def alignment_objective(fast: Dict[str, torch.Tensor], aux_losses: nn.Module, items, times, target_times,
                        mu_time: float, mu_state: float) -> torch.Tensor:
    """μ1' L_time + μ2' L_state of the batch, with `fast` in place of those parameters (the step's objective);
    aux_losses: `_Bound(model, type(model).aux_losses)`."""
    aux = functional_call(aux_losses, {f"m.{k}": v for k, v in fast.items()}, (items, times, target_times))
    return mu_time * aux["time"] + mu_state * aux["state"]


def alignment_gradients(fast: Dict[str, torch.Tensor], aux_losses: nn.Module, items, times, target_times,
                        mu_time: float, mu_state: float) -> Dict[str, torch.Tensor]:
    """∇ of `alignment_objective` for every tensor in `fast` (zeros where the losses do not reach it: all of them
    for SASRec, whose alignment losses are constant zeros). Under torch.compile through the functional
    torch.func.grad, so that forward, backward and update are one graph; eagerly through torch.autograd.grad, which
    is ~25 % faster and lighter there (bench_train's test-time step row: 0.44 s per batch of 256 × 200 with autograd
    against 0.50 s with torch.func.grad, docs/benchmarks.md)."""
    if torch.compiler.is_compiling():
        return torch.func.grad(alignment_objective)(fast, aux_losses, items, times, target_times, mu_time, mu_state)
    leaves = {name: t.detach().requires_grad_(True) for name, t in fast.items()}
    with torch.enable_grad():
        loss = alignment_objective(leaves, aux_losses, items, times, target_times, mu_time, mu_state)
    if not loss.requires_grad:
        return {name: torch.zeros_like(t) for name, t in fast.items()}
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return {name: torch.zeros_like(t) if g is None else g for (name, t), g in zip(fast.items(), grads)}


def alignment_update(aux_losses: nn.Module, fast: Dict[str, torch.Tensor], items, times, target_times, mu_time: float,
             mu_state: float, lr: float, rule: str = "sgd") -> Dict[str, torch.Tensor]:
    """One test-time update of the parameters in `fast` (name → tensor) on μ1' L_time + μ2' L_state
    (`alignment_gradients`; `update` says how). Parameters the losses do not reach keep their values."""
    grads = alignment_gradients(fast, aux_losses, items, times, target_times, mu_time, mu_state)
    return {name: update(t, grads[name], lr, rule).detach() for name, t in fast.items()}


def update(param: torch.Tensor, grad: torch.Tensor, lr: float, rule: str, batch_dims: int = 0) -> torch.Tensor:
    """θ' from θ = param and its gradient — the one definition of the test-time update.

    rule "sgd": θ − lr ∇ (the paper's α). rule "relative": θ − lr ‖θ‖ ∇/‖∇‖, norms per tensor, so that lr is the
    relative size of the change whatever the losses' scale (LARS-style trust ratio, You et al. 2017); a zero
    gradient, or a tensor that is all zeros, is left unchanged. batch_dims: leading dimensions that index separate
    episodes (per-user steps: 1), each normalised on its own.
    """
    if rule == "sgd":
        return param - lr * grad
    if rule != "relative":
        raise ValueError(f"unknown ttt_rule {rule!r}; expected 'sgd' or 'relative'")
    dims = tuple(range(batch_dims, param.dim()))
    param_norm = torch.linalg.vector_norm(param, dim=dims, keepdim=True)
    grad_norm = torch.linalg.vector_norm(grad, dim=dims, keepdim=True)
    scale = torch.where(grad_norm > 0, lr * param_norm / grad_norm.clamp_min(torch.finfo(grad.dtype).tiny), 0.0)
    return param - scale * grad


@functools.lru_cache(maxsize=None)
def _compiled_fn(fn, backend: str):
    from .compiled import compile_fn
    return compile_fn(fn, backend)


def _compiled(fn, ttt_cfg):
    """fn compiled with the settings' backend, once per process (dynamo keeps one graph per model it meets)."""
    return _compiled_fn(fn, ttt_cfg.ttt_compile_backend)


def _unchecked_scores(scores: nn.Module, fast, items, times, target_times):
    return functional_call(scores, {f"m.{k}": v for k, v in fast.items()}, (items, times, target_times))


def _batch_scores(model, fast, items, times, target_times, ttt_cfg) -> torch.Tensor:
    """Scores with the adapted parameters; compiled, the checks run eagerly first (their data-dependent branches
    would break the graph)."""
    if not ttt_cfg.ttt_compile:
        return call_with(model, fast, type(model).scores, items, times, target_times)
    model.check_inputs(items, times)
    model.check_request_times(times, target_times)
    return _compiled(_unchecked_scores, ttt_cfg)(_Bound(model, type(model).scores_unchecked), fast, items, times,
                                                 target_times)


class Adapted(NamedTuple):
    scores: torch.Tensor      # (batch, n_items + 1), column 0 = −inf
    adapted: torch.Tensor     # (batch,) bool: the rows scored after a test-time step


def adapted_scores(model: nn.Module, items: torch.Tensor, times: torch.Tensor, target_times: torch.Tensor, ttt_cfg,
                   *, per_user: Optional[bool] = None, plain_scores: Optional[torch.Tensor] = None,
                   causal: bool = False) -> Adapted:
    """Scores after the test-time step — the one route through it, for evaluation and serving alike.

    items, times: (batch, L) int64 LEFT-padded; target_times: (batch,) int64 = t_{n+1}, the request time.
    Which rows adapt: all of them, or with `ttt_gate` > 0 those whose request follows a long pause (`shift_gate`);
    none when the settings cannot change anything (`ttt_is_active`).
    Episodes: one per row (`per_user`, vectorised with torch.func.vmap) or one for the adapted rows together;
    per_user=None follows the settings (ttt_batch_size == 1), as evaluation does; serving passes True (a request
    batch is not a meaningful episode).
    plain_scores: the rows' scores without the step when the caller has them (serving: from the cached states);
    rows that do not adapt keep them, and adapted rows are written into it. Otherwise they come from model.scores.
    causal: a shared episode adapts on the events up to its earliest request time only (`history_until`), as a
    server batching requests can; each row is still scored on its whole history. Per-user episodes are causal as
    they are (a row holds only events before its own request).

    The model is put in eval mode for the call (dropout off, as in the paper) and returned to its previous mode; its
    parameters are not modified. Source: the paper's Algorithm 1 (docs/model.md, "Test-time alignment").

    Raises:
        InputError: the batch is not valid model input (model.check_inputs).
    """
    per_user = ttt_cfg.ttt_batch_size == 1 if per_user is None else per_user
    was_training = model.training
    model.eval()
    try:
        chosen = _rows_to_adapt(model, items, times, target_times, ttt_cfg)
        if bool(chosen.any()) and bool(chosen.all()):
            scores = _episodes(model, items, times, target_times, ttt_cfg, per_user, causal)
            return Adapted(scores if plain_scores is None else plain_scores.copy_(scores), chosen)
        if plain_scores is None:
            with torch.no_grad():
                plain_scores = model.scores(items, times, target_times)
        if bool(chosen.any()):
            items, times, target_times = items[chosen], times[chosen], target_times[chosen]
            keep = (items != 0).any(dim=0)               # drop columns that are padding for every adapted row
            adapted = _episodes(model, items[:, keep], times[:, keep], target_times, ttt_cfg, per_user, causal)
            plain_scores[chosen.to(plain_scores.device)] = adapted.to(plain_scores)
        return Adapted(plain_scores, chosen)
    finally:
        model.train(was_training)


def _rows_to_adapt(model, items, times, target_times, ttt_cfg) -> torch.Tensor:
    """(batch,) bool: every row, the gated rows (ttt_gate > 0), or none when the step cannot change anything."""
    if not ttt_is_active(ttt_cfg):
        return torch.zeros(items.shape[0], dtype=torch.bool, device=items.device)
    model.check_inputs(items, times)
    if ttt_cfg.ttt_gate > 0:
        return shift_gate(items, times, target_times, ttt_cfg.ttt_gate)
    return torch.ones(items.shape[0], dtype=torch.bool, device=items.device)


def _episodes(model, items, times, target_times, ttt_cfg, per_user: bool, causal: bool = False) -> torch.Tensor:
    """Scores of every row after its episode: one per row (vmap) or one for the whole batch (on the events up to
    its earliest request time with `causal`)."""
    if per_user:
        return torch.cat([_per_user_chunk(model, items[i:i + PER_USER_CHUNK], times[i:i + PER_USER_CHUNK],
                                          target_times[i:i + PER_USER_CHUNK], ttt_cfg)
                          for i in range(0, items.shape[0], PER_USER_CHUNK)])
    fast = episode_parameters(model, items, times, target_times, ttt_cfg, causal)
    with torch.no_grad():
        return _batch_scores(model, fast, items, times, target_times, ttt_cfg)


def episode_parameters(model: nn.Module, items: torch.Tensor, times: torch.Tensor, target_times: torch.Tensor,
                       ttt_cfg, causal: bool = False) -> Dict[str, torch.Tensor]:
    """θ' of one shared episode (`adapt_parameters`), with `causal` on the events up to its earliest request time
    only (`history_until`); {} (no change) when no event is that early."""
    if causal:
        items, times, target_times = history_until(items, times, target_times.min())
        if not items.shape[0]:
            return {}
    return adapt_parameters(model, items, times, target_times, ttt_cfg)


def history_until(items: torch.Tensor, times: torch.Tensor, cut: torch.Tensor) -> tuple:
    """What a server knows at time `cut`: LEFT-padded (batch, L) histories without their events after `cut`, rows
    left empty dropped, and every row's request time set to `cut` → (items, times, target_times), width = the
    longest remaining row (at least 1). An event at `cut` itself is kept (it preceded the request)."""
    keep = (items != 0) & (times <= cut)
    rows = keep.any(dim=1)
    keep = keep[rows]
    # a stable sort of the keep flags moves each row's kept events, in order, to its right end
    order = torch.sort(keep.to(torch.int8), dim=1, stable=True).indices
    width = max(int(keep.sum(dim=1).max()), 1) if keep.shape[0] else 1
    packed_items = torch.gather(torch.where(keep, items[rows], 0), 1, order)[:, -width:]
    packed_times = torch.gather(torch.where(keep, times[rows], 0), 1, order)[:, -width:]
    return packed_items, packed_times, torch.full((int(rows.sum()),), int(cut), dtype=times.dtype,
                                                  device=times.device)


def shift_gate(items: torch.Tensor, times: torch.Tensor, target_times: torch.Tensor, factor: float) -> torch.Tensor:
    """(batch,) bool: the request gap T_{n+1} = t_{n+1} − t_n is at least `factor` × the user's median gap.

    A long pause before the request is the signal that the user's interest may have moved on — the situation
    test-time alignment is meant for. Users without a previous gap (one event) are never gated in, nor are
    requests at the time of the last event (day-resolution data: a median gap of 0 would otherwise let them in).
    """
    real = items != 0
    gaps = (times[:, 1:] - times[:, :-1]).double()
    valid = real[:, 1:] & real[:, :-1]
    median = torch.nanquantile(torch.where(valid, gaps, torch.nan), 0.5, dim=1)
    request_gap = (target_times - times[:, -1]).double()
    return torch.nan_to_num(request_gap >= factor * median, nan=False) & valid.any(dim=1) & (request_gap > 0)


# -- per-user episodes, vectorised -------------------------------------------------------------------------------------
PER_USER_CHUNK = 256     # users adapted at once: each holds its own copy of the adapted parameters


def _per_user_chunk(model, items, times, target_times, ttt_cfg) -> torch.Tensor:
    """Each row's own episode, for all rows at once: vmap over per-user gradients and per-user scores. The rows
    were checked (model.check_inputs) before: the checks' data-dependent branches cannot run under vmap."""
    from torch.func import grad, vmap
    names = adaptable_parameter_names(model, ttt_cfg.ttt_params)
    frozen = {name: p.detach() for name, p in model.named_parameters()}

    def user_objective(fast, item_row, time_row, target_time):
        aux = call_with(model, {**frozen, **fast}, type(model).aux_losses, item_row[None], time_row[None],
                        target_time[None])
        return ttt_cfg.ttt_mu_time * aux["time"] + ttt_cfg.ttt_mu_state * aux["state"]

    def user_scores(fast, item_row, time_row, target_time):
        return call_with(model, {**frozen, **fast}, type(model).scores_unchecked, item_row[None], time_row[None],
                         target_time[None])[0]

    fast = {name: frozen[name].expand(items.shape[0], *frozen[name].shape) for name in names}
    step = vmap(grad(user_objective), in_dims=(0, 0, 0, 0))
    with torch.enable_grad():
        for _ in range(ttt_cfg.ttt_updates):
            grads = step(fast, items, times, target_times)
            fast = {name: update(fast[name], grads[name], ttt_cfg.ttt_lr, ttt_cfg.ttt_rule, batch_dims=1).detach()
                    for name in names}
    with torch.no_grad():
        return vmap(user_scores, in_dims=(0, 0, 0, 0))(fast, items, times, target_times)
