"""tests/declared_deps.py: the blocker makes an undeclared module look absent, to imports and to probes alike.

torch._dynamo probes optional libraries with importlib.util.find_spec (trace_rules.THIRDPARTY_SKIPLIST: hypothesis,
pandas, ...); a probe must get None for a blocked module, as it would on a user's machine, and only a real import
of one may fail.
"""
from __future__ import annotations

import textwrap

from declared_deps import ROOT, core_import_names, run_with_core_dependencies

BLOCKED = "pytest"       # installed in every test venv, never a core dependency


def _run(code: str):
    assert BLOCKED not in core_import_names()
    return run_with_core_dependencies(textwrap.dedent(code), cwd=ROOT, timeout=120)


def test_a_probe_of_a_blocked_module_gets_none():
    result = _run(f"""
        import importlib.util
        print("probe", importlib.util.find_spec({BLOCKED!r}))
        print("core", importlib.util.find_spec("numpy") is not None)
        """)
    assert result.returncode == 0, result.stderr
    assert "probe None" in result.stdout and "core True" in result.stdout


def test_an_import_of_a_blocked_module_fails_as_if_it_were_absent():
    """test_packaging's checks can fail: a module outside the declared dependencies is not importable."""
    result = _run(f"""
        try:
            import {BLOCKED}
        except ModuleNotFoundError as exc:
            print("missing", exc.name)
        """)
    assert result.returncode == 0, result.stderr
    assert f"missing {BLOCKED}" in result.stdout


def test_core_dependencies_and_the_package_still_import():
    result = _run("""
        import numpy, yaml, t2arec_fast.cli, t2arec_fast.serving
        print("ok")
        """)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
