"""OnlineRecommender(runtime="onnx"): the same answers as the PyTorch runtime, through ONNX Runtime."""
import tempfile

import numpy as np
import pytest
import torch

from t2arec_fast.errors import InputError
from t2arec_fast.model import T2ARec
from t2arec_fast.serving import OnlineRecommender


def _model():
    torch.manual_seed(0)
    return T2ARec(40, d=16, d_state=8, dropout=0.0).eval()


def test_onnx_runtime_matches_torch_runtime(tmp_path):
    model = _model()
    rng = np.random.default_rng(0)
    users = rng.integers(0, 6, 60)
    items = rng.integers(1, 41, 60)
    times = 1_700_000_000 + np.arange(60) * 60
    answers = []
    for runtime in ("torch", "onnx"):
        rec = OnlineRecommender(model, capacity_bytes=1 << 20, history_len=20, runtime=runtime)
        rec.observe(users, items, times)
        answers.append(rec.recommend(np.arange(6), k=5))
    assert np.array_equal(answers[0][0], answers[1][0])
    np.testing.assert_allclose(answers[0][1], answers[1][1], rtol=1e-4, atol=1e-5)
    assert type(rec.model).__name__ == "OnnxStepModel"
    rec.save(tmp_path / "serve")
    again = OnlineRecommender.load(tmp_path / "serve")
    assert again.runtime == "onnx"
    assert np.array_equal(again.recommend(np.arange(6), k=5)[0], answers[1][0])


def test_graphs_exported_for_the_onnx_runtime_leave_no_temporary_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))          # where temporary folders are made
    rec = OnlineRecommender(_model(), capacity_bytes=1 << 20, history_len=20, runtime="onnx")
    assert list(tmp_path.iterdir()) == []
    rec.observe(np.array([1, 2]), np.array([3, 4]), np.array([10, 11]))     # the sessions no longer need the files
    assert rec.recommend(np.array([1, 2]), k=3)[0].shape == (2, 3)


def test_unknown_runtime_is_refused():
    with pytest.raises(InputError, match="runtime must be one of"):
        OnlineRecommender(_model(), runtime="tensorrt")


def test_a_folder_saved_with_the_old_key_backend_loads(tmp_path):
    """Serving folders written before the engine was called `runtime` stored it as `backend`."""
    import json
    rec = OnlineRecommender(_model(), capacity_bytes=1 << 20, history_len=20)
    rec.save(tmp_path / "serve")
    meta_path = tmp_path / "serve" / "serving.json"
    meta = json.loads(meta_path.read_text())
    meta["backend"] = meta.pop("runtime")
    meta_path.write_text(json.dumps(meta))
    assert OnlineRecommender.load(tmp_path / "serve").runtime == "torch"
