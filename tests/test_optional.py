"""optional.py: require() imports an extra's package, or raises an error that names the extra to install."""
import pytest

from t2arec_fast.optional import MissingExtraError, require


def test_require_names_the_extra():
    assert require("json", "dev", "Nothing").dumps([1]) == "[1]"
    with pytest.raises(MissingExtraError, match=r'pip install "t2arec_fast\[tune\]"'):
        require("no_such_module_t2arec", "tune", "Hyper-parameter search")


def test_an_installed_module_whose_own_import_fails_is_not_called_missing(tmp_path, monkeypatch):
    (tmp_path / "t2arec_broken_feature.py").write_text("import t2arec_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="t2arec_no_such_dependency") as info:
        require("t2arec_broken_feature", "tune", "A feature")
    assert not isinstance(info.value, MissingExtraError)
