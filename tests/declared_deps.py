"""Run Python code in a subprocess that can import only what pyproject.toml declares as the core dependencies.

A plain `pip install t2arec_fast` brings the core dependencies and everything they depend on; the developer venv
has the extras too (pytest, matplotlib, onnxscript, ...), so a test run there cannot notice the package importing an
extra. Here the meta-path finders are wrapped so that every other third-party module is not found, exactly as if it
were not installed (an import raises ModuleNotFoundError, a find_spec probe gets None), so the code sees what a
user's machine would. The standard library and anything not installed by a distribution (the checkout itself) are
untouched.
"""
from __future__ import annotations

import json
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "t2arec_fast"

# Prepended to the code under test: installs the blocker before anything but the interpreter's start-up has run.
# It wraps every meta-path finder rather than raising from one of its own: a raising finder also breaks probes
# (importlib.util.find_spec, which torch._dynamo calls for optional libraries such as hypothesis), whereas a module
# that no finder finds is absent for imports and probes alike.
_BLOCKER = '''
import sys as _sys
_BLOCKED = frozenset(__BLOCKED__)
class _DeclaredOnly:
    """One meta-path finder that does not find modules installed here by a distribution that the core does not
    depend on: `import` raises ModuleNotFoundError and find_spec returns None, as if that distribution were absent."""
    def __init__(self, finder):
        self._finder = finder
    def find_spec(self, name, path=None, target=None):
        find = getattr(self._finder, "find_spec", None)
        if find is None or name.partition(".")[0] in _BLOCKED:
            return None
        return find(name, path, target)
    def __getattr__(self, attribute):          # invalidate_caches, find_distributions, ...
        return getattr(self._finder, attribute)
_sys.meta_path[:] = [_DeclaredOnly(finder) for finder in _sys.meta_path]
'''


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _applies(requirement: Requirement) -> bool:
    """True when the requirement is installed on this machine without asking for an extra."""
    return requirement.marker is None or requirement.marker.evaluate({"extra": ""})


def _closure(requirements) -> set:
    """Canonical names of the distributions pip installs for `requirements` (recursively), where installed here."""
    seen, todo = set(), [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen or not _applies(requirement):
            continue
        try:
            todo += [Requirement(r) for r in metadata.requires(name) or ()]
        except metadata.PackageNotFoundError:
            continue      # not installed here (e.g. a platform-specific one): nothing of it can be imported anyway
        seen.add(name)
    return seen


@lru_cache(maxsize=None)
def _modules_by_distribution() -> dict:
    """Canonical distribution name → the top-level modules it installs."""
    by_dist: dict = {}
    for module, dists in metadata.packages_distributions().items():
        for dist in dists:
            by_dist.setdefault(canonicalize_name(dist), set()).add(module)
    return by_dist


def import_names(requirements) -> set:
    """Top-level module names that installing `requirements` makes importable (with their dependencies)."""
    by_dist = _modules_by_distribution()
    return {module for dist in _closure(requirements) for module in by_dist.get(dist, ())}


def core_import_names() -> set:
    return import_names(pyproject()["project"]["dependencies"]) | {PACKAGE}


def run_with_core_dependencies(code: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter that can import only the stdlib, the package and its core dependencies."""
    blocked = set(metadata.packages_distributions()) - core_import_names()
    source = _BLOCKER.replace("__BLOCKED__", json.dumps(sorted(blocked))) + code
    return subprocess.run([sys.executable, "-c", source], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
