"""The README's Python example is examples/quickstart.py, runs on the core dependencies alone, and its comments name
the files it writes."""
import re

from declared_deps import ROOT, run_with_core_dependencies

EXAMPLE = ROOT / "examples" / "quickstart.py"
README = ROOT / "README.md"


def readme_python_block() -> str:
    text = README.read_text()
    return text.split("## Python\n\n```python\n", 1)[1].split("```\n", 1)[0]


def test_readme_python_block_is_the_quickstart_file():
    """The block is the file minus its one-line docstring, character for character: they cannot drift apart."""
    docstring, code = EXAMPLE.read_text().split("\n", 1)
    assert docstring.startswith('"""') and docstring.endswith('"""')
    assert readme_python_block() == code


def _files_named_in_comment(call: str) -> set:
    line = next(line for line in readme_python_block().splitlines() if line.startswith(call))
    return set(re.findall(r"[\w.]+\.(?:onnx|safetensors|json|npz)\b", line.split("#", 1)[1]))


def test_quickstart_example_runs_and_writes_what_it_says(tmp_path):
    done = run_with_core_dependencies(f"import runpy; runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')",
                                      tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test NDCG@10" in done.stdout
    saved = tmp_path / "runs" / "quickstart"
    assert {p.name for p in saved.iterdir() if p.is_file()} == _files_named_in_comment("model.save(")
    assert {p.name for p in (saved / "onnx").iterdir()} == _files_named_in_comment("t2a.export_onnx(")
