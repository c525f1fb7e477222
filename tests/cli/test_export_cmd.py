"""`t2arec export CHECKPOINT --out DIR` end to end from a saved checkpoint."""
import json

import torch

from t2arec_fast.cli import main
from t2arec_fast.export import OnnxEncoder

from export.helpers import assert_rel_close, mixed_batch, small_model


def test_cli_export_end_to_end(tmp_path, capsys):
    model = small_model(seed=2)
    model.save(tmp_path / "ckpt")
    rc = main(["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "onnx"), "--json", str(tmp_path / "s.json")])
    assert rc == 0
    assert "encode.onnx" in capsys.readouterr().out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert set(summary["files"]) == {"encode", "step", "step_topk"}
    enc = OnnxEncoder(tmp_path / "onnx")
    ids = mixed_batch(5, 17)
    with torch.no_grad():
        assert_rel_close(enc.encode(ids)[0], model.encode(ids)[0])


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "missing: not a checkpoint (no config.json here or in" in capsys.readouterr().err
    small_model().save(tmp_path / "ckpt")
    assert main(["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "o"), "--opset", "9"]) == 2
    assert "opset must lie in" in capsys.readouterr().err
