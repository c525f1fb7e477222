"""serving/folder.py: a saved folder is replaced as a whole, or left as it was."""
import os

import pytest

from t2arec_fast.serving import folder
from t2arec_fast.serving.folder import write_folder


def _write(text):
    def write(tmp):
        (tmp / "a.txt").write_text(text)
    return write


def _names(parent):
    return sorted(p.name for p in parent.iterdir())


def test_writes_a_new_folder_and_replaces_an_old_one(tmp_path):
    write_folder(tmp_path / "out", _write("one"))
    write_folder(tmp_path / "out", _write("two"))
    assert (tmp_path / "out" / "a.txt").read_text() == "two"
    assert _names(tmp_path) == ["out"]                              # no temporary or old folders left behind


def test_a_failing_write_leaves_the_old_folder(tmp_path):
    write_folder(tmp_path / "out", _write("one"))

    def fail(tmp):
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        write_folder(tmp_path / "out", fail)
    assert (tmp_path / "out" / "a.txt").read_text() == "one" and _names(tmp_path) == ["out"]


def test_a_failing_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    write_folder(tmp_path / "out", _write("one"))
    real_replace = os.replace

    def replace(src, dst):                              # the old folder moves aside, then the new one cannot move in
        if str(src).startswith(str(tmp_path / ".out.")) and not str(src).endswith(f"old-{os.getpid()}") \
                and str(dst) == str(tmp_path / "out"):
            raise OSError("rename refused")
        return real_replace(src, dst)
    monkeypatch.setattr(folder.os, "replace", replace)
    with pytest.raises(OSError, match="rename refused"):
        write_folder(tmp_path / "out", _write("two"))
    assert (tmp_path / "out" / "a.txt").read_text() == "one" and _names(tmp_path) == ["out"]
