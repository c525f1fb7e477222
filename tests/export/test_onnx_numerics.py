"""ONNX Runtime vs PyTorch: encode and step graphs, mixed lengths, states, top-k, 2 blocks, opset 27."""
import copy
import json
from collections import Counter

import onnx
import pytest
import torch

from t2arec_fast.export import OnnxEncoder, export_onnx
from t2arec_fast.export.exporter import _build_graph, _cpu_copy

from .helpers import N_ITEMS, assert_rel_close, mixed_batch, small_model


def assert_states_close(got, want, rtol=1e-4):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_rel_close(g.conv, w.conv, rtol)
        assert_rel_close(g.ssm, w.ssm, rtol)


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


def test_metadata(model, exported):
    out, summary = exported
    props = {p.key: p.value for p in onnx.load(str(out / "encode.onnx")).metadata_props}
    for key in ("model_version", "d", "d_state", "n_items", "opset", "package_version", "kind"):
        assert key in props
    assert props["n_items"] == str(N_ITEMS) and props["opset"] == "17" and props["d"] == "16"
    shapes = [[list(st.conv.shape[1:]), list(st.ssm.shape[1:])] for st in model.empty_states(1)]
    assert json.loads(props["state_shapes"]) == shapes                     # the runtime's only source of them
    assert summary["validation"]["encode"]["o_n"] < 1e-4


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


def test_model_version_labels_the_pytorch_model(model, encoder):
    from t2arec_fast.export import model_version
    assert encoder.model_version == model_version(model)
    assert model_version(small_model(seed=3)) != model_version(model)


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
