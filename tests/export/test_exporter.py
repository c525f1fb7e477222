"""export/exporter.py (with graphs.py): export_onnx traces loop-free graphs whose size does not depend on the length,
validates them against PyTorch, writes a folder as a whole (nothing on failure), and refuses bad options."""
import copy
from collections import Counter

import onnx
import pytest
import torch

from t2arec_fast.errors import InputError
from t2arec_fast.export import ExportValidationError, OnnxEncoder, export_onnx
from t2arec_fast.export.exporter import _build_graph, _cpu_copy, validate_graph
from t2arec_fast.ops import export_scan

from .helpers import N_ITEMS, assert_rel_close, assert_states_close, copy_export, mixed_batch, small_model


def test_graph_does_not_depend_on_length(model):
    """No Loop/Scan, no unrolling: traced at two lengths, the graphs have the same nodes and the same size."""
    exportable = _cpu_copy(model, "export")
    short, _ = _build_graph("encode", exportable, 17, "torchscript", trace_length=7)
    long, _ = _build_graph("encode", exportable, 17, "torchscript", trace_length=60)
    ops = Counter(n.op_type for n in short.graph.node)
    assert ops == Counter(n.op_type for n in long.graph.node)
    assert not {"Loop", "Scan", "If"} & set(ops)
    assert abs(len(short.SerializeToString()) - len(long.SerializeToString())) < 64


def test_exported_model_is_left_untouched(model, exported):
    assert model.config.backend == "auto"
    assert all(layer.block.backend == "auto" for layer in model.layers)
    assert all(p.requires_grad for p in model.parameters())


def test_two_blocks(tmp_path):
    model = small_model(n_layers=2, seed=1)
    export_onnx(model, tmp_path, kinds=("encode", "step"))
    enc = OnnxEncoder(tmp_path, providers=["CPUExecutionProvider"])
    ids = mixed_batch(7, 50, seed=9)
    o, states = enc.encode(ids)
    with torch.no_grad():
        o_pt, states_pt = model.encode(ids)
        items = torch.randint(1, N_ITEMS + 1, (7,))
        o2_pt, next_pt = model.step(items, states_pt)
    assert_rel_close(o, o_pt)
    assert_states_close(states, states_pt)
    o2, next_states = enc.step(items, states)
    assert_rel_close(o2, o2_pt)
    assert_states_close(next_states, next_pt)


def test_opset27_linear_attention(model, tmp_path):
    summary = export_onnx(model, tmp_path, kinds=("encode",), opset=27, scan_form="linear_attention")
    proto = onnx.load(summary["files"]["encode"])
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["LinearAttention"] == 1 and not {"Loop", "Scan"} & set(ops)
    assert [e.version for e in proto.opset_import if e.domain == ""] == [27]
    assert {p.key: p.value for p in proto.metadata_props}["opset"] == "27"
    enc = OnnxEncoder(tmp_path, providers=["CPUExecutionProvider"])
    ids = mixed_batch(7, 50, seed=27)
    with torch.no_grad():
        o_pt, states_pt = model.encode(ids)
    o, states = enc.encode(ids)
    assert_rel_close(o, o_pt)
    assert_states_close(states, states_pt)


def test_float64_model_exports_float32_graphs(tmp_path):
    model = copy.deepcopy(small_model()).double()
    export_onnx(model, tmp_path, kinds=("encode",))
    enc = OnnxEncoder(tmp_path, providers=["CPUExecutionProvider"])
    ids = mixed_batch(3, 9)
    o, _ = enc.encode(ids)
    assert o.dtype == torch.float32
    with torch.no_grad():
        assert_rel_close(o, model.encode(ids)[0])


def test_torch_export_based_exporter(model, tmp_path):
    """The fallback for when the deprecated TorchScript exporter is gone: same graphs, same numbers."""
    summary = export_onnx(model, tmp_path, kinds=("step_topk",), exporter="dynamo")
    assert max(summary["validation"]["step_topk"].values()) < 1e-4
    assert summary["metadata"]["opset"] == 18                # torch.export's exporter starts at 18: never relabel down
    enc = OnnxEncoder(tmp_path, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        _, states = model.encode(mixed_batch(9, 13))
    items = torch.randint(1, N_ITEMS + 1, (9,))
    o, _, _, top_items = enc.step_topk(items, states, k=4)
    assert top_items.shape == (9, 4)
    with torch.no_grad():
        assert_rel_close(o, model.step(items, states)[0])


def test_validation_reports_the_error(model, exported):
    with pytest.raises(ExportValidationError, match=r"o_n \d"):
        validate_graph(exported[0] / "encode.onnx", "encode", small_model(seed=7))


def test_failed_export_writes_nothing(model, tmp_path, monkeypatch):
    original = export_scan._matrix_scan

    def off_by_one_percent(*args):      # (y would be hidden by the RMSNorm that follows: scale the state)
        y, h = original(*args)
        return y, h * 1.01

    monkeypatch.setattr(export_scan, "_matrix_scan", off_by_one_percent)
    with pytest.raises(ExportValidationError, match="disagrees with PyTorch"):
        export_onnx(model, tmp_path, kinds=("encode",))
    assert list(tmp_path.iterdir()) == []


def test_bad_options(model, tmp_path):
    with pytest.raises(InputError, match="opset"):
        export_onnx(model, tmp_path, opset=11)
    with pytest.raises(InputError, match="needs opset"):
        export_onnx(model, tmp_path, opset=17, scan_form="linear_attention")
    with pytest.raises(InputError, match="kinds"):
        export_onnx(model, tmp_path, kinds=("decode",))
    with pytest.raises(InputError, match="T2ARec"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path)


def test_reexport_replaces_the_whole_directory(exported, tmp_path):
    out = copy_export(exported, tmp_path)
    export_onnx(small_model(seed=6), out, kinds=("encode",))
    assert sorted(p.name for p in out.glob("*.onnx")) == ["encode.onnx"]
    assert OnnxEncoder(out).kinds == ("encode",)
