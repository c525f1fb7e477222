"""cli/__init__.py (main, argument parsing) and cli/common.py (reader options, checkpoint folders, user errors): every
command that reads a data set takes the same reader options, and every bad input ends in one line
`t2arec <command>: error: ...` with exit code 2, never a traceback, and never a hint only Python can use (issue 13,
item 11)."""
import json
import re

import pytest

from t2arec_fast.cli import main

EVENTS = "user_id,item_id,timestamp\n" + "".join(f"{u},{i},{1_600_000_000 + 60 * (u * 10 + i)}\n"
                                                 for u in range(1, 9) for i in range(1, 13))
# the data-set inputs every reading command must refuse: (file name, bytes, fragment of the message)
BAD_DATA = {
    "missing file": ("nothere.csv", None, "file or folder not found"),
    "empty file": ("empty.csv", b"", "file is empty"),
    "header only": ("header.csv", b"user_id,item_id,timestamp\n", "no interactions"),
    "wrong columns": ("cols.csv", b"who,what,when\n1,2,3\n", "cannot find a user column"),
    "not UTF-8": ("latin.csv", b"user_id,item_id,timestamp\n1,caf\xe9,100\n", "line 2: not UTF-8 text"),
    "UTF-16": ("utf16.csv", "user_id,item_id,timestamp\n1,2,3\n".encode("utf-16"), "UTF-16 text"),
    "NaN time": ("nan.csv", b"user_id,item_id,timestamp\n1,2,100\n1,3,nan\n", "line 3, column 3 (timestamp)"),
    "negative time": ("neg.csv", b"user_id,item_id,timestamp\n1,2,-100\n", "negative timestamp"),
    "missing id": ("noid.csv", b"user_id,item_id,timestamp\n1,,100\n", "missing item id"),
    "short line": ("short.csv", b"user_id,item_id,timestamp\n1,2,100\n1,3\n", "line 3: expected 3 fields"),
    "unknown format": ("notes.bin", b"hello world\n", "unknown format"),
    "damaged gzip": ("d.csv.gz", b"\x1f\x8b\x08\x00garbage", "cannot decompress"),
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_errors")
    (folder / "events.csv").write_text(EVENTS)
    assert main(["train", str(folder / "events.csv"), "--out", str(folder / "run"), "--min-count", "1",
                 "--epochs", "1", "--d", "8", "--d_state", "4", "--progress", "false", "--device", "cpu",
                 "--ttt=false"]) == 0
    return folder


def _commands(checkpoint, data):
    run = str(checkpoint / "run")
    return {"data stats": ["data", "stats", data, "--min-count", "1"],
            "train": ["train", data, "--out", str(checkpoint / "never"), "--min-count", "1", "--epochs", "1"],
            "evaluate": ["evaluate", run, data],
            "serve-replay": ["serve-replay", run, data, "--quiet", "--k", "5"]}


def _one_line_error(capsys, argv, command):
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith(f"t2arec {command.split()[0]}: error:")
    for key, cli in (("format", "--format"), ("columns", "--columns"), ("time_unit", "--time-unit")):
        python_only = re.search(rf"\b{key}=(\s|\{{|\)|$)", err)          # `pass format=`, `columns={...}`
        assert not python_only or cli in err, f"hint only Python can use: {err}"
    return err


@pytest.mark.parametrize("case", sorted(BAD_DATA))
@pytest.mark.parametrize("command", ["data stats", "train", "evaluate", "serve-replay"])
def test_bad_data_is_one_line_and_exit_2_in_every_command(checkpoint, tmp_path, capsys, command, case):
    name, content, fragment = BAD_DATA[case]
    if content is not None:
        (tmp_path / name).write_bytes(content)
    err = _one_line_error(capsys, _commands(checkpoint, str(tmp_path / name))[command], command)
    assert fragment in err and name in err
    assert not (checkpoint / "never").exists()


@pytest.mark.parametrize("command", ["data stats", "train", "evaluate", "serve-replay"])
def test_reader_options_are_the_same_everywhere(checkpoint, tmp_path, capsys, command):
    """The same file with other column names and millisecond times reads through --columns and --time-unit in
    every command (train, evaluate and serve-replay had no --columns: their error suggested a Python form)."""
    renamed = "who;what;when\n" + "".join(f"{u};{i};{int(t) * 1000}\n" for u, i, t in
                                          (line.split(",") for line in EVENTS.splitlines()[1:]))
    (tmp_path / "renamed.txt").write_text(renamed)
    argv = _commands(checkpoint, str(tmp_path / "renamed.txt"))[command]
    if command == "train":
        argv[argv.index("--out") + 1] = str(tmp_path / "run")
    options = ["--format", "csv", "--columns", "who,what,when", "--time-unit", "ms"]
    err = _one_line_error(capsys, argv + options, command)                 # positions need role=name pairs
    assert "role=column" in err or "expected user=U,item=I,timestamp=T" in err
    assert main(argv + ["--format", "csv", "--columns", "user=who,item=what,timestamp=when", "--time-unit", "ms",
                        *(["--ttt=false", "--d=8", "--d_state=4", "--progress=false"] if command == "train" else [])
                        ]) == 0
    out = capsys.readouterr().out
    if command == "data stats":
        assert "ms (given)" in out and "96 interactions" in out


@pytest.mark.parametrize("argv, fragment", [
    (["train", "{data}", "--out", "{tmp}/r", "--epochs"], "--epochs needs a value"),
    (["train", "{data}", "--out", "{tmp}/r", "--dropout", "1"], "dropout=1.0 is out of range"),
    (["train", "{data}", "--out", "{tmp}/r", "--dt_transform", "logg"], "expected one of linear, log"),
    (["train", "{data}", "--out", "{tmp}/r", "--epoch", "3"], "did you mean 'epochs'"),
    (["train", "{data}", "--out", "{tmp}/file.txt", "--min-count", "1"], "exists and is not a folder"),
    (["data", "stats", "{data}", "--json", "{tmp}", "--min-count", "1"], "Is a directory"),
    (["data", "stats", "{data}", "--columns", "user"], "expected user=U,item=I,timestamp=T"),
    (["data", "stats", "{data}", "--format", "excel"], "unknown format 'excel'"),
    (["data", "stats", "{data}", "--min-count", "-1"], "min_count=-1 is out of range; expected a value ≥ 0"),
    (["evaluate", "{tmp}", "{data}"], "not a checkpoint"),
    (["export", "{tmp}", "--out", "{tmp}/onnx"], "not a checkpoint (no config.json here or in"),
    (["serve-replay", "{tmp}", "{data}"], "not a checkpoint (no config.json here or in"),
    (["serve-replay", "{tmp}/nothing", "{data}"], "nothing"),
])
def test_bad_options_are_one_line_and_exit_2(checkpoint, tmp_path, capsys, argv, fragment):
    (tmp_path / "file.txt").write_text("x")
    argv = [a.format(data=checkpoint / "events.csv", tmp=tmp_path) for a in argv]
    assert fragment in _one_line_error(capsys, argv, argv[0])


def test_key_space_value_anywhere_on_the_line(checkpoint, tmp_path, capsys):
    """`t2arec train DATA --epochs 2` failed with "expected --key=value"; options may also come first."""
    assert main(["train", "--epochs", "2", "--d", "8", str(checkpoint / "events.csv"), "--d_state", "4",
                 "--min-count", "1", "--out", str(tmp_path / "r"), "--progress", "false", "--ttt=false",
                 "--device", "cpu"]) == 0
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["epochs"] == 2 and results["config"]["model"]["d"] == 8
    assert results["config"]["data"]["min_count"] == 1 and results["config"]["model"]["d_state"] == 4
