"""`t2arec demo`: the data-only report and the whole pipeline (train, evaluate, export, serve) on a tiny set."""
import json

from t2arec_fast.cli import main


def test_demo(tmp_path, capsys):
    assert main(["demo", "--users", "300", "--items", "300", "--data-only", "--json", str(tmp_path / "demo.json")]) == 0
    out = capsys.readouterr().out
    assert "leave-one-out" in out and "gap_aware" in out
    report = json.loads((tmp_path / "demo.json").read_text())
    assert report["data"]["split"]["test_users"] == report["data"]["stats"]["users"]


def test_demo_runs_the_whole_pipeline_on_a_tiny_set(tmp_path, capsys):
    argv = ["demo", "--users", "120", "--items", "120", "--epochs", "1", "--out", str(tmp_path / "runs"),
            "--json", str(tmp_path / "demo.json")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "t2arec + test-time step (paper)" in out and "online serving" in out
    report = json.loads((tmp_path / "demo.json").read_text())
    assert set(report["evaluation"]) == {"backbone", "t2arec", "t2arec + test-time step (paper)",
                                         "t2arec + gated per-user step (ext.)", "t2arec, request-gap readout (ext.)"}
    assert report["serving"]["top1_agreement"] > 0.95
    assert (tmp_path / "runs" / "onnx" / "encode.onnx").is_file()
