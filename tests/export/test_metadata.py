"""export/metadata.py: what a graph says about itself (sizes, state shapes, the weights' model_version)."""
import json

import onnx

from .helpers import N_ITEMS, small_model


def test_metadata(model, exported):
    out, summary = exported
    props = {p.key: p.value for p in onnx.load(str(out / "encode.onnx")).metadata_props}
    for key in ("model_version", "d", "d_state", "n_items", "opset", "package_version", "kind"):
        assert key in props
    assert props["n_items"] == str(N_ITEMS) and props["opset"] == "17" and props["d"] == "16"
    shapes = [[list(st.conv.shape[1:]), list(st.ssm.shape[1:])] for st in model.empty_states(1)]
    assert json.loads(props["state_shapes"]) == shapes                     # the runtime's only source of them
    assert summary["validation"]["encode"]["o_n"] < 1e-4


def test_model_version_labels_the_pytorch_model(model, encoder):
    from t2arec_fast.export import model_version
    assert encoder.model_version == model_version(model)
    assert model_version(small_model(seed=3)) != model_version(model)
