"""torch.compile of the hot paths (options `compile` and `compile_backend`; docs/benchmarks.md has the measurements).

What is compiled, each as one graph with no graph break inside the model (tests/test_compiled.py checks
fullgraph=True and compiled == eager in float64):
  * the training step: `model.losses` forward, and its backward through AOTAutograd (train.py);
  * scoring: `model.scores` without its input checks (`compiled_scores`; the checks' data-dependent branches run
    eagerly first, in evaluation and in the test-time step);
  * the test-time step: one SGD step θ ← θ − α ∇θ(μ1' L_time + μ2' L_state) with its functional gradient
    (torch.func.grad, adapt.py).
The selective scan is a registered custom op with fake implementations (triton_kernels/selective_scan.py), so the
compiler sees it as one opaque op; the CPU reference scan and everything around it are ordinary PyTorch.

`compile_backend`: any torch.compile backend; "inductor" (the default) generates code, "aot_eager" only traces
(fast to compile, no speed-up: what the tests use to check the graphs).
"""
from __future__ import annotations

from typing import Callable

import torch

COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")


def compile_fn(fn: Callable, backend: str = "inductor", *, fullgraph: bool = True) -> Callable:
    """`torch.compile(fn)`; fullgraph=True makes any graph break an error instead of a silent slow-down.

    Shapes are specialised on first use and turn dynamic on the first change (a smaller last batch), so a run
    compiles at most twice per distinct graph.

    Raises:
        ValueError: unknown backend (one of COMPILE_BACKENDS).
    """
    if backend not in COMPILE_BACKENDS:
        raise ValueError(f"unknown compile backend {backend!r}; expected one of {COMPILE_BACKENDS}")
    return torch.compile(fn, backend=backend, fullgraph=fullgraph)


def compiled_scores(model, backend: str = "inductor") -> Callable:
    """`model.scores` with its input checks run eagerly and the rest compiled as one graph.

    → scores(item_ids (batch, L) int64, timestamps (batch, L) int64 unix seconds or None, request_times (batch,)
    int64 or None) -> (batch, n_items + 1) float scores, column 0 = −inf: the same contract as T2ARec.scores.
    Other models (SASRec) get their eager `scores`.

    Raises:
        ValueError: unknown backend.
        InputError: (from the returned function) inputs that T2ARec.scores refuses.
    """
    from t2arec_fast.model import T2ARec
    if not isinstance(model, T2ARec):
        return model.scores
    run = compile_fn(T2ARec.scores_unchecked, backend)

    def scores(item_ids, timestamps=None, request_times=None):
        model.check_inputs(item_ids, timestamps)
        model.check_request_times(timestamps, request_times)
        return run(model, item_ids, timestamps, request_times)
    return scores
