"""`t2arec export`: a saved T2ARec checkpoint → ONNX graphs for ONNX Runtime (docs/onnx.md).

    t2arec export CHECKPOINT --out DIR [--opset N] [--kinds encode,step,step_topk] [--scan-form F] [--json P]
"""
from __future__ import annotations

from pathlib import Path

from .common import UserError, checkpoint_dir, write_json


def register(subparsers) -> None:
    from t2arec_fast.export import DEFAULT_OPSET, GRAPH_KINDS
    p = subparsers.add_parser("export", help="export a checkpoint to ONNX (encode, step, step_topk graphs)",
                              description="Export a T2ARec checkpoint to ONNX graphs, check them with onnx.checker, "
                              "run each once in ONNX Runtime and compare with PyTorch before writing them.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint folder (or a train --out folder: uses best/)")
    p.add_argument("--out", metavar="DIR", required=True, help="output folder for the .onnx files")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset (default {DEFAULT_OPSET}: loads in ONNX Runtime ≥ 1.17; 27+ allows "
                   "--scan-form linear_attention)")
    p.add_argument("--kinds", default=",".join(GRAPH_KINDS), help="comma-separated graphs to export "
                   f"(default {','.join(GRAPH_KINDS)})")
    p.add_argument("--scan-form", choices=("matrix", "linear_attention"), default=None,
                   help="graph form of the scan (default matrix; linear_attention needs --opset 27)")
    p.add_argument("--json", metavar="P", default=None, help="write the export summary JSON here")
    p.set_defaults(func=_export)


def _export(args) -> int:
    from t2arec_fast.export import ExportValidationError, export_onnx
    model = _load_t2arec(checkpoint_dir(args.checkpoint))
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    try:
        summary = export_onnx(model, args.out, kinds=kinds, opset=args.opset, scan_form=args.scan_form)
    except ExportValidationError as exc:
        raise UserError(f"export failed validation, nothing written: {exc}") from None
    for kind, path in summary["files"].items():
        worst = max(summary["validation"].get(kind, {0: 0.0}).values())
        print(f"{kind:10s} {path}  ({Path(path).stat().st_size / 1e6:.2f} MB, max rel. error vs PyTorch {worst:.1e})")
    write_json(args.json, summary)
    return 0


def _load_t2arec(path: Path):
    from t2arec_fast.model import T2ARec, load_model
    model = load_model(path)
    if not isinstance(model, T2ARec):
        raise UserError(f"{path} holds a {type(model).__name__} model; only T2ARec exports to ONNX")
    return model
