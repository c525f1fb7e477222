"""The README's Python example runs end to end (it is examples/quickstart.py, kept in one place)."""
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


def test_quickstart_example_runs(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLE)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test NDCG@10" in done.stdout
    assert (tmp_path / "runs" / "quickstart" / "onnx" / "encode.onnx").is_file()
