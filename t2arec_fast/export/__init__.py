"""ONNX export of T2ARec and inference with ONNX Runtime (docs/onnx.md).

    export_onnx(model, out_dir, kinds=("encode", "step", "step_topk"), opset=17) → summary dict
    OnnxEncoder(out_dir).encode(item_ids) / .step(item_ids_t, states) / .step_topk(item_ids_t, states, k)

Modules: graphs.py (what is traced, I/O names), exporter.py (trace → check → validate → write), metadata.py (what a
graph says about itself: sizes, state shapes, model_version), runtime.py (OnnxEncoder; OnnxStepModel, the serving
model on ONNX Runtime); the scan's loop-free graph form lives in t2arec_fast/ops/export_scan.py.
"""
from .exporter import DEFAULT_OPSET, ExportValidationError, export_onnx
from .graphs import GRAPH_KINDS
from .metadata import model_version
from .runtime import OnnxEncoder, OnnxModelError

__all__ = ["export_onnx", "OnnxEncoder", "OnnxModelError", "ExportValidationError", "model_version",
           "GRAPH_KINDS", "DEFAULT_OPSET"]
