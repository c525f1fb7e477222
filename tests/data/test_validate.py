"""Every kind of bad input gets a DataError naming the file, the line (and column) and what was expected."""
import gzip

import pytest

from t2arec_fast.data import DataError, load_dataset

from .helpers import ROWS, udata, write

GOOD = udata(ROWS)  # 9 lines


def _error(path, **kw) -> DataError:
    with pytest.raises(DataError) as info:
        load_dataset(path, min_count=1, verbose=False, **kw)
    return info.value


def _with_line(text: str, line_no: int, new_line: str) -> str:
    lines = text.splitlines(keepends=True)
    lines[line_no - 1] = new_line
    return "".join(lines)


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_missing_file(tmp_path):
    err = _error(tmp_path / "nope" / "u.data")
    assert "not found" in str(err) and "nope" in str(err)


def test_empty_file(tmp_path):
    err = _error(write(tmp_path, "u.data", ""))
    assert "empty" in str(err) and err.path is not None


def test_header_only_file(tmp_path):
    err = _error(write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n"))
    assert "no interactions" in str(err)


def test_unknown_format(tmp_path):
    err = _error(write(tmp_path, "notes.bin", "hello world\n"))
    assert "unknown format" in str(err) and "notes.bin" in str(err)
    err = _error(write(tmp_path, "u.data", GOOD), format="excel")
    assert "unknown format 'excel'" in str(err)


def test_folder_without_interactions(tmp_path):
    write(tmp_path / "empty", "README.md", "nothing here")
    assert "no interaction file" in str(_error(tmp_path / "empty"))


def test_missing_column_in_header(tmp_path):
    err = _error(write(tmp_path, "ratings.csv", "userId,movieId,rating\n1,2,3\n"))
    assert err.line == 1 and "timestamp" in str(err)
    err = _error(write(tmp_path, "x.inter", "user_id:token\titem_id:token\trating:float\n1\t2\t3\n"))
    assert err.line == 1 and "timestamp" in str(err) and "columns" in str(err)
    err = _error(write(tmp_path, "y.inter", "user_id\titem_id\ttimestamp\n1\t2\t3\n"))
    assert err.line == 1 and "typed header" in str(err)
    err = _error(write(tmp_path, "z.csv", "a,b,c\n1,2,3\n"))
    assert "cannot find a user column" in str(err)


def test_wrong_number_of_columns(tmp_path):
    err = _error(write(tmp_path, "u.data", _with_line(GOOD, 4, "3\t20\t50\n")))
    assert err.line == 4 and "expected 4 fields" in str(err) and "got 3" in str(err)


@pytest.mark.parametrize("value,what", [("abc", "not a number"), ("-5", "negative"), ("nan", "nan"),
                                        ("inf", "inf"), ("", "missing")])
def test_bad_timestamp_in_text(tmp_path, value, what):
    err = _error(write(tmp_path, "u.data", _with_line(GOOD, 6, f"2\t20\t3\t{value}\n")))
    assert (err.line, err.column) == (6, "4 (timestamp)")
    assert what in str(err) and "u.data" in str(err) and "expected a non-negative unix time" in str(err)


def test_bad_timestamp_in_recbole_and_csv(tmp_path):
    inter = "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t881250949.0\n1\t3\t-881250949.5\n"
    err = _error(write(tmp_path, "a.inter", inter))
    assert (err.line, err.column) == (3, "3 (timestamp)") and "negative" in str(err)
    csv = "item,timestamp,user\n1,10,1\n\n2,NaN,1\n"               # blank line: line numbers still right
    err = _error(write(tmp_path, "b.csv", csv))
    assert (err.line, err.column) == (4, "2 (timestamp)") and "NaN" in str(err)


def test_missing_id(tmp_path):
    err = _error(write(tmp_path, "b.csv", "user,item,timestamp\n1,1,10\n,2,11\n"))
    assert (err.line, err.column) == (3, "1 (user)") and "missing user id" in str(err)


def test_truncated_last_line(tmp_path):
    err = _error(write(tmp_path, "u.data", GOOD + "196\t24"))
    assert err.line == 10 and "ends mid-line" in str(err)
    err = _error(write(tmp_path, "u2.data", GOOD + "196\t242\t3\t"))   # cut inside the last field
    assert err.line == 10 and "missing" in str(err) and "ends mid-line" in str(err)


def test_truncated_compressed_file(tmp_path):
    path = tmp_path / "u.data.gz"
    path.write_bytes(gzip.compress(GOOD.encode())[:-12])
    assert "decompress" in str(_error(path))


def _pair(tmp_path, items: str, times: str):
    write(tmp_path, "S_item_x.txt", items)
    write(tmp_path, "S_time_x.txt", times)
    return _error(tmp_path / "S_item_x.txt")


def test_sequence_pair_different_line_counts(tmp_path):
    err = _pair(tmp_path, "1 5 6\n2 7 8\n", "1 10 20\n")
    assert err.line == 2 and "S_time_x.txt" in str(err) and "one line per user" in str(err)


def test_sequence_pair_different_users(tmp_path):
    err = _pair(tmp_path, "1 5 6\n2 7 8\n", "1 10 20\n3 10 20\n")
    assert (err.line, err.column) == (2, 1) and "same user" in str(err)


def test_sequence_pair_different_lengths(tmp_path):
    err = _pair(tmp_path, "1 5 6\n2 7 8 9\n", "1 10 20\n2 10 20\n")
    assert err.line == 2 and "3 items" in str(err) and "2 timestamps" in str(err)


def test_sequence_pair_truncated_time_file(tmp_path):
    err = _pair(tmp_path, "1 5 6\n2 7 8 9\n", "1 10 20\n2 10 20")
    assert err.line == 2 and "ends mid-line" in str(err) and "S_time_x.txt" in str(err)


@pytest.mark.parametrize("value,what", [("x1", "not a number"), ("nan", "nan"), ("-3", "negative")])
def test_sequence_pair_bad_timestamp(tmp_path, value, what):
    err = _pair(tmp_path, "1 5 6\n2 7 8 9\n", f"1 10 20\n2 10 {value} 30\n")
    assert (err.line, err.column) == (2, 3) and what in str(err) and "S_time_x.txt" in str(err)


def test_sequence_pair_missing_partner(tmp_path):
    path = write(tmp_path, "S_item_x.txt", "1 5 6\n")
    assert "S_time_x.txt is missing" in str(_error(path))


def test_columns_argument_checked(tmp_path):
    err = _error(write(tmp_path, "u.data", GOOD), columns={"user": "a", "item": "b"})
    assert "column mapping must name exactly user, item, timestamp" in str(err)


def test_k_core_leaving_nothing(tmp_path):
    with pytest.raises(DataError, match="no interactions left"):
        load_dataset(write(tmp_path, "u.data", GOOD), min_count=50, verbose=False)
