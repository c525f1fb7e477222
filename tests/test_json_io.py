"""Issue 13, item 7: every JSON file the package, the CLI and bench/ write is strict JSON (no NaN/Infinity)."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from t2arec_fast import json_io

ROOT = Path(__file__).resolve().parents[1]


def _strict_loads(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_become_null_everywhere_in_the_tree():
    obj = {"a": float("nan"), "b": [np.float32("inf"), -np.inf, 1.5], "c": {"d": (np.float64("nan"), np.int64(3))},
           np.int64(7): np.array([np.nan, 2.0]), "p": Path("x/y")}
    assert _strict_loads(json_io.dumps(obj)) == {"a": None, "b": [None, None, 1.5], "c": {"d": [None, 3]},
                                                 "7": [None, 2.0], "p": "x/y"}


def test_write_json_is_atomic_and_refuses_unknown_types(tmp_path):
    path = json_io.write_json(tmp_path / "sub" / "r.json", {"x": float("-inf")})
    assert _strict_loads(path.read_text()) == {"x": None} and not list(tmp_path.glob("sub/*.tmp"))
    with pytest.raises(TypeError, match="cannot write a tuple key as JSON"):
        json_io.dumps({(1, 2): 3})
    with pytest.raises(TypeError, match="cannot write a object as JSON"):
        json_io.write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()


def test_write_json_leaves_no_temporary_file_when_the_rename_fails(tmp_path):
    (tmp_path / "taken").mkdir()                       # a folder where the file should go: the rename fails
    with pytest.raises(OSError):
        json_io.write_json(tmp_path / "taken", {"x": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_cli_json_of_an_empty_segment_is_null_not_nan(tmp_path, capsys):
    """NDCG@10 of an empty test-time segment is undefined: `null` in the file (was a bare NaN)."""
    from t2arec_fast.cli import main
    rows = "".join(f"{u}\t{i}\t3\t{1_600_000_000 + 60 * k}\n" for u in range(3) for k, i in enumerate([1, 2, 3, 4]))
    (tmp_path / "u.data").write_text(rows)
    rc = main(["train", str(tmp_path / "u.data"), "--out", str(tmp_path / "run"), "--epochs=1", "--min_count=1",
               "--n_segments=8", "--d=8", "--d_state=4", "--progress=false", "--device=cpu", "--ttt=false"])
    assert rc == 0
    results = _strict_loads((tmp_path / "run" / "results.json").read_text())
    assert results["test"]["ndcg@10_by_segment"].count(None) == 5          # 3 test users in 8 segments


def test_no_json_is_written_around_the_helper():
    """json.dump/json.dumps appear only in json_io.py: any other writer would let NaN through again."""
    offenders = []
    for folder in ("t2arec_fast", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "json_io.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if re.search(r"\bjson\.dumps?\(", line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert offenders == []
