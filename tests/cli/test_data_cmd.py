"""`t2arec data stats`: numbers on stdout, JSON on request, bad input = one line and exit 2."""
import json
import subprocess
import sys

import pytest

from t2arec_fast.cli import main

ROWS = [(2, 10, 500), (1, 20, 100), (1, 30, 200), (3, 20, 50), (1, 10, 200), (2, 20, 400), (3, 30, 60),
        (2, 30, 300), (3, 10, 70)]


def udata(rows) -> str:
    return "".join(f"{u}\t{i}\t3\t{t}\n" for u, i, t in rows)


def write(folder, name, text):
    path = folder / name
    path.write_text(text)
    return path


def test_data_stats_prints_and_writes_json(tmp_path, capsys):
    path = write(tmp_path, "u.data", udata(ROWS))
    assert main(["data", "stats", str(path), "--min-count", "1", "--json", str(tmp_path / "out" / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "3 users, 3 items, 9 interactions" in out and "sha256" in out
    stats = json.loads((tmp_path / "out" / "s.json").read_text())
    assert (stats["users"], stats["interactions"]) == (3, 9) and len(stats["files"][0]["sha256"]) == 64


def test_data_stats_options(tmp_path, capsys):
    path = write(tmp_path, "log.txt", "".join(f"{u};{i};{t}\n" for u, i, t in ROWS))
    assert main(["data", "stats", str(path), "--format", "csv", "--min-count", "1",
                 "--columns", "user=0,item=1,timestamp=2"]) == 0
    assert "9 interactions" in capsys.readouterr().out
    assert main(["data", "stats", "synthetic:n_users=60,n_items=80,n_clusters=4", "--min-count", "1"]) == 0
    assert "60 users" in capsys.readouterr().out


def test_real_ml100k(shared_datasets, capsys):
    assert main(["data", "stats", str(shared_datasets / "ml-100k" / "u.data"), "--min-count", "1"]) == 0
    assert "943 users, 1,682 items, 100,000 interactions" in capsys.readouterr().out


@pytest.mark.parametrize("text,expected", [("", "empty"), ("1\t2\t3\t-4.5\n", "line 1, column 4 (timestamp)")])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, text, expected):
    path = write(tmp_path, "u.data", text)
    assert main(["data", "stats", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and err.count("\n") == 1


def test_installed_command_has_no_traceback(tmp_path):
    entry = "import sys; from t2arec_fast.cli import main; sys.exit(main())"   # what the t2arec script runs
    run = subprocess.run([sys.executable, "-c", entry, "data", "stats", str(tmp_path / "none.csv")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "not found" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("argv", [["data", "--help"], ["data", "stats", "--help"], ["demo", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0 and "usage: t2arec" in capsys.readouterr().out


ISSUE_MS = "user_id,item_id,timestamp\n1,7,1700003543761\n1,15,1700006723852\n2,7,1700003600000\n2,9,1700003700000\n"


def test_data_stats_on_milliseconds_says_the_unit(tmp_path, capsys):
    """Issue 13, item 6: a millisecond export died with `year 55840 is out of range`."""
    path = write(tmp_path, "ms.csv", ISSUE_MS)
    assert main(["data", "stats", str(path), "--min-count", "1", "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "ms (detected)" in out and "2023-11-14 23:12:23 UTC" in out
    assert json.loads((tmp_path / "s.json").read_text())["time_unit"] == "ms (detected)"
    assert main(["data", "stats", str(path), "--min-count", "1", "--time-unit", "s"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "after the year 9999" in err and "line 2" in err
