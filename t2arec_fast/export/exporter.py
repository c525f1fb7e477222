"""`export_onnx`: trace the model's own code paths into ONNX graphs, label them, check them, and prove them.

Pipeline per graph kind (see graphs.py for what each graph computes):
    trace (TorchScript exporter; torch.export-based one as a fallback) → rewire TopK's k to an input →
    raise the opset when > 20 (the TorchScript exporter stops at 20) → metadata → onnx.checker →
    run in ONNX Runtime on random inputs and compare with PyTorch → move into place.
Files land in `out_dir` only when every requested graph passed, so a failed export never leaves a half-updated
directory that a server could pick up.
"""
from __future__ import annotations

import copy
import io
import os
import warnings
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import onnx
import torch

from t2arec_fast.errors import InputError
from t2arec_fast.model import T2ARec
from t2arec_fast.optional import require
from t2arec_fast.ops.export_scan import SCAN_FORMS

from . import graphs
from .metadata import graph_metadata
from .runtime import open_session

DEFAULT_OPSET = 17          # loadable by ONNX Runtime ≥ 1.17 (incl. onnxruntime-gpu, which refuses opset 27)
MIN_OPSET = 17              # LayerNormalization is a single op from 17 on
MAX_OPSET = 28
TORCHSCRIPT_MAX_OPSET = 20  # the TorchScript exporter's ceiling; higher opsets are reached by relabelling
LINEAR_ATTENTION_OPSET = 27
EXPORTERS = ("auto", "torchscript", "dynamo")
_TRACE_K = 1                # placeholder k while tracing; replaced by the input `k`


class ExportValidationError(RuntimeError):
    """The exported graph disagrees with PyTorch (or cannot be run); the message has the measured errors."""


def export_onnx(model, out_dir, kinds: Iterable[str] = graphs.GRAPH_KINDS, opset: int = DEFAULT_OPSET,
                scan_form: Optional[str] = None, exporter: str = "auto", validate: bool = True,
                rtol: float = 1e-4) -> dict:
    """Export `model` (a T2ARec) to `out_dir/{kind}.onnx` for each kind in "encode" | "step" | "step_topk".

    opset: 17 (default) loads in any ONNX Runtime ≥ 1.17. scan_form: "matrix" (default, any opset) or
    "linear_attention" (one `LinearAttention` node per block; needs opset ≥ 27). validate: run each graph once
    in ONNX Runtime and fail with ExportValidationError if any output's max |ORT − PyTorch| / max |PyTorch|
    exceeds rtol.
    Graphs of other kinds left in `out_dir` by an earlier export are removed: the directory always holds one
    model's graphs. Returns a summary: files, metadata, per-output validation errors. The graphs are float32
    whatever the model's dtype; their inputs and outputs: graphs.py and docs/onnx.md.

    Raises:
        InputError: not a T2ARec, a readout that does not export, unknown kinds, an opset outside [17, 28], an
            unknown scan form or exporter, or a combination that cannot work (linear_attention below opset 27 or
            with the dynamo exporter).
        ExportValidationError: a graph fails onnx.checker, contains a loop, or disagrees with PyTorch beyond rtol;
            nothing is written then.
        MissingExtraError: exporter "dynamo" (or the fallback of "auto") without onnxscript.
    """
    kinds = _check_kinds(kinds)
    form = _check_options(opset, scan_form, exporter)
    reference = _cpu_copy(model, "reference")
    exportable = _cpu_copy(model, "export", export_form=form)
    meta = graph_metadata(model, opset, form)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staged, summary = {}, {"files": {}, "metadata": meta, "validation": {}}
    try:
        for kind in kinds:
            proto, used = _build_graph(kind, exportable, opset, exporter)
            meta["opset"] = _default_opset(proto)  # the dynamo fallback may have had to go above `opset`
            _label(proto, {**meta, "kind": kind, "exporter": used})
            _check_proto(proto, kind)
            tmp = out_dir / f".{kind}.onnx.tmp"
            onnx.save(proto, str(tmp))
            staged[kind] = tmp
            if validate:
                summary["validation"][kind] = validate_graph(tmp, kind, reference, rtol)
        for kind, tmp in staged.items():
            final = out_dir / f"{kind}.onnx"
            os.replace(tmp, final)
            summary["files"][kind] = str(final)
        for kind in set(graphs.GRAPH_KINDS) - set(kinds):   # a stale sibling would belong to another model
            (out_dir / f"{kind}.onnx").unlink(missing_ok=True)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
    return summary


# -- options ------------------------------------------------------------------------------------------------------
def _check_kinds(kinds) -> tuple:
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    bad = [k for k in kinds if k not in graphs.GRAPH_KINDS]
    if bad or not kinds:
        raise InputError(f"export kinds must be a non-empty subset of {graphs.GRAPH_KINDS}, got {kinds}")
    return kinds


def _check_options(opset: int, scan_form: Optional[str], exporter: str) -> str:
    """→ the scan form to trace with."""
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise InputError(f"opset must lie in [{MIN_OPSET}, {MAX_OPSET}], got {opset}")
    if exporter not in EXPORTERS:
        raise InputError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    form = scan_form or "matrix"        # faster than LinearAttention in ORT 1.32 on CPU (docs/onnx.md)
    if form not in SCAN_FORMS:
        raise InputError(f"scan_form must be one of {SCAN_FORMS}, got {form!r}")
    if form == "linear_attention" and opset < LINEAR_ATTENTION_OPSET:
        raise InputError(f"scan_form='linear_attention' needs opset ≥ {LINEAR_ATTENTION_OPSET}, got {opset}")
    if form == "linear_attention" and exporter == "dynamo":
        raise InputError("scan_form='linear_attention' needs the TorchScript exporter (exporter='torchscript')")
    return form


def _cpu_copy(model, backend: str, export_form: str = "matrix"):
    """A detached float32 CPU copy in eval mode (dropout off) with the given scan backend (and, for "export", the
    scan's graph form); `model` is untouched.

    Graphs are float32 whatever the model's dtype: ONNX Runtime's CPU provider has no float64 Conv, and float32
    is what serving runs."""
    if not isinstance(model, T2ARec):
        raise InputError(f"export_onnx needs a T2ARec model (the graphs are its encoder and one-step update), "
                         f"got {type(model).__name__}")
    if not model.readout.exports:
        raise InputError(f"export_onnx: this model scores one more step after o_n at the request time "
                         f"(readout={model.config.readout!r}); the ONNX graphs score o_n, so they cannot serve it — "
                         "export a model with readout='last'")
    clone = copy.deepcopy(model).cpu().float().eval()
    clone.set_backend(backend, export_form=export_form)
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


# -- metadata -----------------------------------------------------------------------------------------------------
def _label(proto: onnx.ModelProto, meta: dict) -> None:
    proto.producer_name = "t2arec_fast"
    proto.producer_version = str(meta["package_version"])
    onnx.helper.set_model_props(proto, {k: str(v) for k, v in meta.items()})


# -- tracing ------------------------------------------------------------------------------------------------------
def _build_graph(kind: str, model, opset: int, exporter: str, trace_length: int = 11):
    """→ (ModelProto at `opset` with the final input/output signature, name of the exporter used).

    model: a `_cpu_copy(..., "export", export_form)`; the scan's graph form is the one it carries.
    trace_length: length of the example sequence traced; the graph must not depend on it (tests check)."""
    module = graphs.EncodeGraph(model) if kind == "encode" else \
        graphs.StepGraph(model, top_k=_TRACE_K if kind == "step_topk" else 0)
    args = graphs.example_inputs(kind, model, length=trace_length)   # k is not traced: it becomes an input later
    inputs, outputs = graphs.io_names(kind, len(model.layers))
    traced_inputs = [n for n in inputs if n != graphs.TOP_K]
    proto, used = _trace(module, args, traced_inputs, outputs, graphs.dynamic_axes(kind, len(model.layers)),
                         opset, exporter)
    if kind == "step_topk":
        _make_k_an_input(proto)
    _set_opset(proto, opset)
    return proto, used


def _trace(module, args, input_names, output_names, axes, opset, exporter):
    if exporter in ("auto", "torchscript"):
        try:
            return _trace_torchscript(module, args, input_names, output_names, axes, opset), "torchscript"
        except Exception as exc:  # the TorchScript exporter is deprecated: fall back while it lingers or vanishes
            if exporter == "torchscript":
                raise
            warnings.warn(f"TorchScript ONNX exporter failed ({exc}); trying the torch.export-based one")
    return _trace_dynamo(module, args, input_names, output_names, axes, opset), "dynamo"


def _trace_torchscript(module, args, input_names, output_names, axes, opset) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # shape checks in the ops become trace-time constants (intended), and the exporter warns it is deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buffer, dynamo=False, opset_version=min(opset, TORCHSCRIPT_MAX_OPSET),
                          input_names=input_names, output_names=output_names, dynamic_axes=axes,
                          do_constant_folding=True)
    return onnx.load_from_string(buffer.getvalue())


def _trace_dynamo(module, args, input_names, output_names, axes, opset) -> onnx.ModelProto:
    # torch.onnx's dynamo path builds the graph with onnxscript, which torch does not install
    require("onnxscript", "export", "The torch.export-based ONNX exporter")
    # torch.export wants the dynamic axes in the forward signature's structure: (item_ids, (state, ...)) for step.
    specs = [{axis: torch.export.Dim.DYNAMIC for axis in axes[name]} for name in input_names]
    shapes = tuple(specs) if len(specs) == 1 else (specs[0], tuple(specs[1:]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, args, dynamo=True, opset_version=max(opset, 18),
                                    input_names=input_names, output_names=output_names, dynamic_shapes=shapes,
                                    verbose=False)
    return program.model_proto


def _make_k_an_input(proto: onnx.ModelProto) -> None:
    """Point the (single) TopK node's K at a new graph input `k` (int64, shape (1,)) instead of the traced constant."""
    topk = [node for node in proto.graph.node if node.op_type == "TopK"]
    if len(topk) != 1:
        raise ExportValidationError(f"expected one TopK node in the step_topk graph, found {len(topk)}")
    traced_k, topk[0].input[1] = topk[0].input[1], graphs.TOP_K
    proto.graph.input.append(onnx.helper.make_tensor_value_info(graphs.TOP_K, onnx.TensorProto.INT64, [1]))
    _drop_if_unused(proto.graph, traced_k)
    for output in proto.graph.output:           # the traced (batch, 1) shapes of the top-k outputs become (batch, k)
        if output.name in (graphs.TOP_SCORES, graphs.TOP_ITEMS):
            output.type.tensor_type.shape.dim[1].dim_param = graphs.TOP_K


def _drop_if_unused(graph, name: str) -> None:
    """Remove the initializer or Constant node that produces `name` once nothing reads it."""
    if any(name in node.input for node in graph.node):
        return
    for i, init in enumerate(graph.initializer):
        if init.name == name:
            del graph.initializer[i]
            return
    for i, node in enumerate(graph.node):
        if node.op_type == "Constant" and name in node.output:
            del graph.node[i]
            return


def _set_opset(proto: onnx.ModelProto, opset: int) -> None:
    """Raise the default-domain opset to `opset` by relabelling (ops used here keep their semantics from 17 to 28;
    the checker and the ORT-vs-PyTorch validation confirm it; never lowered), and the IR version to match."""
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = max(entry.version, opset)
    proto.ir_version = max(proto.ir_version, onnx.helper.find_min_ir_version_for(list(proto.opset_import)))


def _default_opset(proto: onnx.ModelProto) -> int:
    return next(e.version for e in proto.opset_import if e.domain in ("", "ai.onnx"))


# -- validation ---------------------------------------------------------------------------------------------------
def _check_proto(proto: onnx.ModelProto, kind: str) -> None:
    """onnx.checker with shape inference, plus the promise of this module: no loop over the sequence."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # onnx raises ValidationError / InferenceError
        raise ExportValidationError(f"exported {kind} graph fails onnx.checker: {exc}") from None
    loops = {node.op_type for node in proto.graph.node} & {"Loop", "Scan"}
    if loops:
        raise ExportValidationError(f"exported {kind} graph contains {sorted(loops)}: the scan must be loop-free")


def validate_graph(path, kind: str, reference, rtol: float = 1e-4, batch: int = 5, length: int = 23) -> dict:
    """Run the graph at `path` in ONNX Runtime (CPU) on fresh random inputs — at a batch and length other than the
    traced ones, so a frozen dynamic axis shows up — and compare with `reference` (a T2ARec in PyTorch).
    → {output name: relative error}.

    Raises:
        OnnxModelError: ONNX Runtime cannot load the file.
        ExportValidationError: ONNX Runtime cannot run it, or it names every output whose error is above rtol.
    """
    session = open_session(path, ["CPUExecutionProvider"])
    k = min(5, reference.n_items)
    args = graphs.example_inputs(kind, reference, batch=batch, length=length, seed=1)
    inputs, outputs = graphs.io_names(kind, len(reference.layers))
    feeds = {name: t.numpy() for name, t in zip(inputs, args)}
    if kind == "step_topk":
        feeds[graphs.TOP_K] = np.array([k], dtype=np.int64)
    try:
        got = dict(zip(outputs, session.run(outputs, feeds)))
    except Exception as exc:
        raise ExportValidationError(f"{path}: ONNX Runtime could not run the exported {kind} graph: {exc}") from None
    with torch.no_grad():
        module = graphs.EncodeGraph(reference) if kind == "encode" else \
            graphs.StepGraph(reference, top_k=k if kind == "step_topk" else 0)
        want = dict(zip(outputs, (t.numpy() for t in module(*args))))
    errors = {name: _relative_error(got[name], want[name]) for name in outputs if name != graphs.TOP_ITEMS}
    if graphs.TOP_ITEMS in got:  # ties may order items differently: compare the reference scores of the picks
        picked = np.take_along_axis(want[graphs.SCORES], got[graphs.TOP_ITEMS], axis=-1)
        errors[graphs.TOP_ITEMS] = _relative_error(picked, want[graphs.TOP_SCORES])
    bad = {name: err for name, err in errors.items() if not err <= rtol}
    if bad:
        detail = ", ".join(f"{name} {err:.3g}" for name, err in bad.items())
        raise ExportValidationError(f"exported {kind} graph disagrees with PyTorch beyond rtol {rtol:g}: {detail} "
                                    "(max |ORT − PyTorch| / max |PyTorch|)")
    return errors


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got − want| / max |want| over finite entries; inf if shapes or the non-finite pattern differ."""
    if got.shape != want.shape:
        return float("inf")
    finite = np.isfinite(want)
    if not np.array_equal(finite, np.isfinite(got)) or not np.array_equal(got[~finite], want[~finite]):
        return float("inf")
    if not finite.any():
        return 0.0
    diff = np.abs(got[finite].astype(np.float64) - want[finite])
    scale = max(float(np.abs(want[finite]).max()), np.finfo(np.float32).tiny)
    return float(diff.max() / scale)
