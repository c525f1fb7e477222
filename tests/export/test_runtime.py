"""export/runtime.py: OnnxEncoder equals PyTorch (encode, step, step_topk, step_scores; mixed lengths), and bad
files and bad inputs give clear errors."""
import shutil

import onnx
import pytest
import torch

from t2arec_fast.errors import InputError
from t2arec_fast.export import OnnxEncoder, OnnxModelError, export_onnx

from .helpers import N_ITEMS, assert_rel_close, assert_states_close, copy_export, mixed_batch, small_model


@pytest.mark.parametrize("batch", [1, 7, 64])
@pytest.mark.parametrize("length", [1, 5, 50, 200])
def test_encode_matches_pytorch(model, encoder, batch, length):
    ids = mixed_batch(batch, length, seed=length * 100 + batch)
    o_ort, states_ort = encoder.encode(ids)
    with torch.no_grad():
        o_pt, states_pt = model.encode(ids)
    assert o_ort.shape == (batch, model.config.d)
    assert_rel_close(o_ort, o_pt)
    assert_states_close(states_ort, states_pt)


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_step_matches_pytorch(model, encoder, batch):
    _, states = encoder.encode(mixed_batch(batch, 30, seed=batch))
    items = torch.randint(1, N_ITEMS + 1, (batch,))
    o_ort, next_ort = encoder.step(items, states)
    with torch.no_grad():
        o_pt, next_pt = model.step(items, states)
    assert_rel_close(o_ort, o_pt)
    assert_states_close(next_ort, next_pt)


def test_step_n_times_equals_encode(encoder):
    ids = mixed_batch(7, 20, seed=3).clamp(min=1)          # no padding: every user steps through every column
    states = encoder.empty_states(7)
    for col in range(ids.shape[1]):
        o, states = encoder.step(ids[:, col], states)
    o_enc, states_enc = encoder.encode(ids)
    assert_rel_close(o, o_enc)
    assert_states_close(states, states_enc)


def test_encode_a_prefix_then_step_equals_encode(encoder):
    ids = mixed_batch(7, 30, seed=4)
    ids[:, :10] = 0                                          # every row's items start at column ≥ 10 ...
    ids[:, 10:] = ids[:, 10:].clamp(min=1)                   # ... and fill the rest, so the prefix [:, :11] is valid
    _, states = encoder.encode(ids[:, :11])
    for col in range(11, ids.shape[1]):
        o, states = encoder.step(ids[:, col], states)
    o_enc, states_enc = encoder.encode(ids)
    assert_rel_close(o, o_enc)
    assert_states_close(states, states_enc)


@pytest.mark.parametrize("k", [1, 10, N_ITEMS])
def test_step_topk_matches_pytorch(model, encoder, k):
    _, states = encoder.encode(mixed_batch(7, 12, seed=k))
    items = torch.randint(1, N_ITEMS + 1, (7,))
    o, next_states, top_scores, top_items = encoder.step_topk(items, states, k=k)
    with torch.no_grad():
        o_pt, _ = model.step(items, states)
        want_scores, _ = torch.topk(model.score_from(o_pt), k)
    assert top_items.shape == (7, k) and top_items.dtype == torch.int64
    assert (top_items >= 1).all()                            # the padding column (−inf) is never recommended
    assert_rel_close(top_scores, want_scores)
    picked = torch.gather(model.score_from(o_pt), 1, top_items)  # ties may reorder items, not change scores
    assert_rel_close(picked.detach(), want_scores)
    o_step, _ = encoder.step(items, states)
    assert_rel_close(o, o_step, rtol=1e-6)


def test_step_scores_has_minus_inf_padding_column(model, encoder):
    _, states = encoder.encode(mixed_batch(3, 8))
    _, _, scores = encoder.step_scores(torch.tensor([1, 2, 3]), states)
    assert scores.shape == (3, N_ITEMS + 1)
    assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()


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
    with pytest.raises(InputError, match="k must be"):                      # a bool is not a count (as recommend())
        encoder.step_topk(torch.tensor([1, 2]), states, k=True)
