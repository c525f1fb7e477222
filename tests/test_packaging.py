"""The package installs and runs on what pyproject.toml declares (issue 13, items 1-4).

Two kinds of fault are checked as a whole: the code importing a package that a plain `pip install t2arec_fast`
does not bring (run for real, with every undeclared module made unimportable), and a third-party import that no
requirement or extra declares at all (read from the source).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np

from declared_deps import ROOT, PACKAGE, core_import_names, import_names, pyproject, run_with_core_dependencies

SOURCE_DIRS = (ROOT / PACKAGE, ROOT / "triton_kernels")


def _events_csv(path: Path, n_users: int = 40, per_user: int = 8, n_items: int = 25) -> Path:
    rng = np.random.default_rng(0)
    rows = ["user_id,item_id,timestamp"]
    for user in range(n_users):
        for k in range(per_user):
            rows.append(f"u{user},{int(rng.integers(1, n_items + 1))},{1_700_000_000 + 3600 * (user + 7 * k)}")
    path.write_text("\n".join(rows) + "\n")
    return path


CORE_WORKFLOW = """
import t2arec_fast
from t2arec_fast.cli import main
from t2arec_fast.optional import MissingExtraError
ds = t2arec_fast.load_dataset("events.csv", min_count=1)
print("loaded", len(ds.user_ids), "users")
for argv in (["data", "stats", "events.csv", "--min-count", "1"],
             ["train", "events.csv", "--out", "run", "--epochs=1", "--min_count=1", "--progress=false"],
             ["evaluate", "run", "events.csv", "--progress=false"],
             ["export", "run", "--out", "onnx"],
             ["serve-replay", "run", "events.csv", "--quiet"]):
    assert main(argv) == 0, argv
    print("ok:", argv[0])
import contextlib, io
err = io.StringIO()
with contextlib.redirect_stderr(err):
    code = main(["tune", "events.csv", "--space", "space.yaml", "--trials", "1"])
print("tune:", code, err.getvalue().strip())
model = t2arec_fast.T2ARec.load("run/best")
try:
    t2arec_fast.export_onnx(model, "onnx-dynamo", exporter="dynamo")
except MissingExtraError as exc:
    print("dynamo export:", exc)
"""


def test_core_workflow_runs_on_declared_dependencies_only(tmp_path):
    """Every CLI command on a CSV file, with only the core dependencies importable (pyarrow is one: it parses
    the CSV); an exporter that needs an extra says which one instead of failing on a bare import."""
    _events_csv(tmp_path / "events.csv")
    done = run_with_core_dependencies(CORE_WORKFLOW, tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for command in ("data", "train", "evaluate", "export", "serve-replay"):
        assert f"ok: {command}" in done.stdout
    assert "loaded 40 users" in done.stdout
    assert ('tune: 2 t2arec tune: error: t2arec tune (hyperparameter search) needs the package \'optuna\', which is '
            'not installed: pip install "t2arec_fast[tune]"') in done.stdout
    assert (tmp_path / "onnx" / "encode.onnx").is_file()
    if "onnxscript" in core_import_names():  # pragma: no cover - a torch that brings onnxscript itself
        return
    assert 'dynamo export: The torch.export-based ONNX exporter needs the package \'onnxscript\', which is not ' \
           'installed: pip install "t2arec_fast[export]"' in done.stdout


def _imports(path: Path):
    """(top-level module, line, at module level?) for each absolute import in a source file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module_level = {id(node) for node in tree.body}
    module_level |= {id(child) for node in tree.body if isinstance(node, (ast.If, ast.Try))
                     for child in ast.walk(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            yield name.partition(".")[0], node.lineno, id(node) in module_level


def _third_party_imports():
    for folder in SOURCE_DIRS:
        for path in sorted(folder.rglob("*.py")):
            for top, line, module_level in _imports(path):
                if top not in sys.stdlib_module_names and top != PACKAGE:
                    yield top, f"{path.relative_to(ROOT)}:{line}", module_level


def test_every_third_party_import_is_declared():
    project = pyproject()["project"]
    declared = core_import_names() | import_names([r for extra in project["optional-dependencies"].values()
                                                   for r in extra])
    undeclared = sorted(f"{where}: {top}" for top, where, _ in _third_party_imports() if top not in declared)
    assert not undeclared, ("imported but declared neither as a dependency nor in an extra of pyproject.toml: "
                            + "; ".join(undeclared))


def test_extras_are_imported_only_where_a_feature_needs_them():
    """A module-level import of an extra-only package would break `import` of that module on a core install;
    such imports belong inside the feature, through t2arec_fast.optional.require (which names the extra)."""
    core = core_import_names()
    at_top = sorted(f"{where}: {top}" for top, where, module_level in _third_party_imports()
                    if module_level and top not in core)
    assert not at_top, "module-level imports of packages that only an extra installs: " + "; ".join(at_top)


def test_pybind11_is_a_build_requirement_only():
    build = pyproject()["build-system"]["requires"]
    runtime = pyproject()["project"]["dependencies"]
    assert any(r.startswith("pybind11") for r in build)
    assert not any(r.startswith("pybind11") for r in runtime)
