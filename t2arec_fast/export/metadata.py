"""What an exported graph says about itself (ONNX metadata_props, all strings), written by the exporter and read by
the runtime: who made it, from which weights (`model_version`), the model's sizes, and the shapes of the recurrent
state a step graph takes and returns. Its own module so that exporter.py and runtime.py both import it, not each
other. docs/onnx.md lists the keys."""
from __future__ import annotations

import json
from typing import List, Optional, Tuple

import torch

from t2arec_fast import json_io
from t2arec_fast.model.checkpoint import weights_fingerprint

STATE_SHAPES = "state_shapes"


def model_version(model) -> str:
    """The graphs' label for the weights they come from: the first 16 hex digits of
    `model.checkpoint.weights_fingerprint` (two graphs belong together iff their versions match)."""
    return weights_fingerprint(model)[:16]


def graph_metadata(model, opset: int, form: str) -> dict:
    """Written into every graph's metadata_props (as strings). model_version hashes the caller's model as given,
    so `model_version(model)` in PyTorch matches the graphs' label. `state_shapes` is taken from the model's own
    empty state (JSON: per block, the conv window's and the SSM state's shape without the batch axis), so that the
    runtime never re-derives it."""
    from t2arec_fast import __version__
    cfg = model.config
    shapes = [[list(st.conv.shape[1:]), list(st.ssm.shape[1:])] for st in model.empty_states(1)]
    return {"producer": "t2arec_fast", "package_version": __version__, "model_version": model_version(model),
            "model": cfg.model, "n_items": model.n_items, "d": cfg.d, "d_state": cfg.d_state,
            "n_layers": cfg.n_layers, "conv_kernel": cfg.conv_kernel, "opset": int(opset), "scan_form": form,
            "dtype": "float32", "torch_version": torch.__version__, STATE_SHAPES: json_io.dumps(shapes, indent=None)}


def state_shapes(meta: dict) -> Optional[List[Tuple[tuple, tuple]]]:
    """Per block, (conv window shape, SSM state shape) without the batch axis, from a graph's metadata; None when
    the graph predates this key (exported before 2026-11-30)."""
    if STATE_SHAPES not in meta:
        return None
    return [(tuple(conv), tuple(ssm)) for conv, ssm in json.loads(meta[STATE_SHAPES])]
