"""Bad files and bad inputs give clear errors; a failed export writes nothing."""
import shutil

import onnx
import pytest
import torch

from t2arec_fast.errors import InputError
from t2arec_fast.export import ExportValidationError, OnnxEncoder, OnnxModelError, export_onnx
from t2arec_fast.export.exporter import validate_graph
from t2arec_fast.ops import export_scan

from .helpers import N_ITEMS, mixed_batch, small_model


def copy_export(exported, tmp_path):
    out = tmp_path / "onnx"
    shutil.copytree(exported[0], out)
    return out


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupted_file(exported, tmp_path, damage):
    out = copy_export(exported, tmp_path)
    path = out / "encode.onnx"
    data = path.read_bytes()
    path.write_bytes({"garbage": b"not an onnx model at all" * 10, "truncated": data[: len(data) // 2],
                      "empty": b""}[damage])
    with pytest.raises(OnnxModelError, match="encode.onnx: ONNX Runtime .* cannot load it") as info:
        OnnxEncoder(out)
    assert "re-export" in str(info.value)


def test_graphs_from_different_models(exported, tmp_path):
    out = copy_export(exported, tmp_path)
    other = tmp_path / "other"
    export_onnx(small_model(seed=5), other, kinds=("step",))
    shutil.copy(other / "step.onnx", out / "step.onnx")
    with pytest.raises(OnnxModelError, match="different models"):
        OnnxEncoder(out)


def test_graphs_without_state_shapes_ask_for_a_reexport(exported, tmp_path):
    """The runtime reads the state shapes from the graphs' metadata (never re-derives them); older graphs lack it."""
    out = copy_export(exported, tmp_path)
    for kind in ("encode", "step", "step_topk"):
        path = out / f"{kind}.onnx"
        if path.exists():
            proto = onnx.load(str(path))
            keep = [p for p in proto.metadata_props if p.key != "state_shapes"]
            del proto.metadata_props[:]
            proto.metadata_props.extend(keep)
            onnx.save(proto, str(path))
    with pytest.raises(OnnxModelError, match="lacks the state shapes.*re-export"):
        OnnxEncoder(out)


def test_graph_under_the_wrong_name(exported, tmp_path):
    out = copy_export(exported, tmp_path)
    shutil.copy(out / "step.onnx", out / "encode.onnx")
    with pytest.raises(OnnxModelError, match="holds a 'step' graph, not 'encode'"):
        OnnxEncoder(out)


def test_foreign_onnx_file(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), tmp_path / "encode.onnx")
    with pytest.raises(OnnxModelError, match="not a t2arec_fast export"):
        OnnxEncoder(tmp_path)


def test_missing_directory_or_graphs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such export directory"):
        OnnxEncoder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no exported graph"):
        OnnxEncoder(tmp_path)


def test_bad_inputs(encoder):
    with pytest.raises(InputError, match="outside"):
        encoder.encode(torch.tensor([[1, N_ITEMS + 1]]))
    with pytest.raises(InputError, match="LEFT-padded"):
        encoder.encode(torch.tensor([[1, 0, 2]]))
    with pytest.raises(InputError, match="all padding"):
        encoder.encode(torch.tensor([[1, 2], [0, 0]]))
    with pytest.raises(InputError, match="integer"):
        encoder.encode(torch.ones(2, 3))
    _, states = encoder.encode(mixed_batch(2, 4))
    with pytest.raises(InputError, match=r"outside \[1,"):
        encoder.step(torch.tensor([0, 1]), states)
    with pytest.raises(InputError, match="expected shape"):
        encoder.step(torch.tensor([1, 2, 3]), states)
    with pytest.raises(InputError, match="block state"):
        encoder.step(torch.tensor([1, 2]), states + states)
    with pytest.raises(InputError, match="k must be"):
        encoder.step_topk(torch.tensor([1, 2]), states, k=N_ITEMS + 1)


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
