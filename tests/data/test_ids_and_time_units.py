"""Issue 13, items 6 and 8, across every reader: timestamps in s/ms/µs/ns and ids as tokens (docs/data.md)."""
import numpy as np
import pytest

from t2arec_fast.data import DataError, load_dataset
from t2arec_fast.data.time_units import detect_unit

from .helpers import write

# the issue's ids: two beyond int64, two that float64 cannot tell apart, one small
BIG_IDS = ["12345678901234567890", "12345678901234567891", "9007199254740993", "9007199254740992", "17"]


def _load(path, **kw):
    return load_dataset(path, min_count=1, verbose=False, **kw)


def _rows(items, user="1"):
    return [(user, item, 1_600_000_000 + 10 * k) for k, item in enumerate(items)]


def _pair(folder, rows):
    write(folder, "S_item_x.txt", "".join(f"{u} {i}\n" for u, i, _ in rows))
    return write(folder, "S_time_x.txt", "".join(f"{u} {t}\n" for u, _, t in rows))


# every text reader, written from (user, item, time) rows
TEXT_FORMATS = {
    "u.data": lambda rows: "".join(f"{u}\t{i}\t3\t{t}\n" for u, i, t in rows),
    "ratings.dat": lambda rows: "".join(f"{u}::{i}::4::{t}\n" for u, i, t in rows),
    "ratings.csv": lambda rows: "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},4.0,{t}\n" for u, i, t in rows),
    "token.inter": lambda rows: "user_id:token\titem_id:token\ttimestamp:float\n"
                                + "".join(f"{u}\t{i}\t{t}\n" for u, i, t in rows),
    "float.inter": lambda rows: "user_id:float\titem_id:float\ttimestamp:float\n"
                                + "".join(f"{u}\t{i}\t{t}\n" for u, i, t in rows),
    "log.csv": lambda rows: "user_id;item_id;timestamp\n" + "".join(f"{u};{i};{t}\n" for u, i, t in rows),
}


def _write_format(tmp_path, name, rows):
    if name == "seq-pair":
        return _pair(tmp_path / "pair", sorted(rows, key=lambda r: r[2]))
    if name == "parquet":
        pa = pytest.importorskip("pyarrow")
        pq = pytest.importorskip("pyarrow.parquet")
        u, i, t = zip(*rows)
        pq.write_table(pa.table({"user_id": list(u), "item_id": list(i), "timestamp": list(t)}),
                       tmp_path / "x.parquet")
        return tmp_path / "x.parquet"
    return write(tmp_path, name, TEXT_FORMATS[name](rows))


ALL_FORMATS = sorted(TEXT_FORMATS) + ["seq-pair", "parquet"]


# -- item 8: ids are tokens --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_FORMATS)
def test_ids_beyond_int64_and_float64_never_merge(tmp_path, name):
    rows = _rows(BIG_IDS) + _rows(BIG_IDS[::-1], user="98765432109876543210")
    ds = _load(_write_format(tmp_path, name, rows))
    assert ds.n_items == 5                                       # today: 3 (two ids become -2^63, two round alike)
    assert sorted(map(str, ds.item_ids[1:].tolist())) == sorted(BIG_IDS)
    assert sorted(map(str, ds.user_ids.tolist())) == ["1", "98765432109876543210"]
    items, _ = ds.sequence(list(map(str, ds.user_ids)).index("1"))
    assert [str(ds.item_ids[i]) for i in items] == BIG_IDS      # each event keeps its own id, in time order


@pytest.mark.parametrize("name", ALL_FORMATS)
def test_ids_with_leading_zeros_are_distinct_tokens(tmp_path, name):
    ds = _load(_write_format(tmp_path, name, _rows(["007", "7", "07", "x7"])))
    assert ds.n_items == 4 and sorted(ds.item_ids[1:].tolist()) == ["007", "07", "7", "x7"]


def test_canonical_integer_ids_stay_integers_in_numeric_order(tmp_path):
    ds = _load(_write_format(tmp_path, "u.data", _rows(["10", "9", "100", "-3"])))
    assert ds.item_ids.dtype == np.int64 and ds.item_ids.tolist() == [0, -3, 9, 10, 100]


def test_parquet_integer_ids_beyond_2_53_stay_exact(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    items = [9007199254740993, 9007199254740992, 2 ** 63 - 1]
    pq.write_table(pa.table({"user_id": [1, 1, 1], "item_id": pa.array(items, pa.int64()),
                             "timestamp": [1, 2, 3]}), tmp_path / "x.parquet")
    assert sorted(_load(tmp_path / "x.parquet").item_ids[1:].tolist()) == sorted(items)


def test_parquet_float_ids_beyond_2_53_are_refused(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"user_id": [1, 1], "item_id": [5.0, 2.0 ** 60], "timestamp": [1, 2]}),
                   tmp_path / "x.parquet")
    with pytest.raises(DataError, match=r"row 2.*beyond 2\^53"):
        _load(tmp_path / "x.parquet")


@pytest.mark.parametrize("missing", ["NA", "null", "  "])
def test_missing_id_spellings_are_errors_not_ids(tmp_path, missing):
    path = write(tmp_path, "a.csv", f"user,item,timestamp\n1,1,10\n{missing},2,11\n")
    with pytest.raises(DataError, match="missing user id") as info:
        _load(path)
    assert (info.value.line, info.value.column) == (3, "1 (user)")


def test_ids_not_utf8_name_the_line(tmp_path):
    path = tmp_path / "S_item_x.txt"
    path.write_bytes(b"1 5\n2 \xff\xfe\n")
    write(tmp_path, "S_time_x.txt", "1 10\n2 20\n")
    with pytest.raises(DataError, match="not UTF-8") as info:
        _load(path)
    assert info.value.line == 2


# -- item 6: timestamp units ------------------------------------------------------------------------------------------
ISSUE_MS = "user_id,item_id,timestamp\n1,7,1700003543761\n1,15,1700006723852\n2,7,1700003600000\n2,9,1700003700000\n"


def test_issue_milliseconds_are_detected_and_reported(tmp_path):
    ds = _load(write(tmp_path, "ms.csv", ISSUE_MS))
    assert ds.timestamps.tolist() == [1700003543, 1700006723, 1700003600, 1700003700]
    assert ds.meta["time_unit"] == "ms" and ds.meta["time_unit_source"] == "detected"
    stats = ds.stats()
    assert stats["time_unit"] == "ms (detected)" and stats["time_first"].startswith("2023-11-14")


@pytest.mark.parametrize("name", ALL_FORMATS)
@pytest.mark.parametrize("unit,scale", [("s", 1), ("ms", 10 ** 3), ("us", 10 ** 6), ("ns", 10 ** 9)])
def test_every_unit_in_every_reader_gives_the_same_seconds(tmp_path, name, unit, scale):
    seconds = [1_600_000_000, 1_600_000_060, 1_700_000_000]
    rows = [("1", str(10 + k), t * scale + (scale // 2 if scale > 1 else 0)) for k, t in enumerate(seconds)]
    ds = _load(_write_format(tmp_path, name, rows))
    assert ds.timestamps.tolist() == seconds                    # sub-second parts are cut, never rounded up
    assert ds.meta["time_unit"] == unit


def test_detection_rule_boundaries():
    assert [detect_unit(v) for v in (0, 10 ** 11 - 1, 10 ** 11, 10 ** 14 - 1, 10 ** 14, 10 ** 17, 2 ** 63 - 1)] == \
        ["s", "s", "ms", "ms", "us", "ns", "ns"]


def test_same_second_events_keep_their_true_order(tmp_path):
    # milliseconds of one second in reverse file order; seconds alone would keep file order (wrong)
    text = "user_id,item_id,timestamp\n1,30,1700000000900\n1,20,1700000000500\n1,10,1700000000100\n"
    ds = _load(write(tmp_path, "a.csv", text))
    assert ds.item_ids[ds.items].tolist() == [10, 20, 30] and ds.timestamps.tolist() == [1700000000] * 3


def test_fractional_seconds_order_events_and_are_floored(tmp_path):
    text = "user_id,item_id,timestamp\n1,30,1700000000.75\n1,20,1700000000.25\n1,10,1699999999.5\n"
    ds = _load(write(tmp_path, "a.csv", text))
    assert ds.item_ids[ds.items].tolist() == [10, 20, 30]
    assert ds.timestamps.tolist() == [1699999999, 1700000000, 1700000000]


def test_explicit_unit_wins_and_a_wrong_one_is_a_clear_error(tmp_path):
    path = write(tmp_path, "ms.csv", ISSUE_MS)
    ds = _load(path, time_unit="milliseconds")
    assert ds.meta["time_unit_source"] == "given" and ds.timestamps[0] == 1700003543
    with pytest.raises(DataError, match=r"after the year 9999.*--time-unit") as info:
        _load(path, time_unit="s")
    assert (info.value.line, info.value.column) == (2, "3 (timestamp)")
    with pytest.raises(DataError, match="unknown time unit 'hours'; expected one of auto, s, ms, us, ns"):
        _load(path, time_unit="hours")


def test_seconds_given_as_ns_are_kept_as_the_user_says(tmp_path):
    ds = _load(write(tmp_path, "a.csv", "user_id,item_id,timestamp\n1,1,1700000000\n"), time_unit="ns")
    assert ds.timestamps.tolist() == [1]


def test_parquet_datetime_with_milliseconds(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    times = np.array([1700000000900, 1700000000100], dtype="datetime64[ms]")
    pq.write_table(pa.table({"user_id": [1, 1], "item_id": [2, 1], "timestamp": times}), tmp_path / "x.parquet")
    ds = _load(tmp_path / "x.parquet", time_unit="s")                 # a unit does not apply to date-times
    assert ds.item_ids[ds.items].tolist() == [1, 2] and ds.meta["time_unit_source"] == "date-time"


def test_spaces_around_an_id_do_not_make_another_id(tmp_path):
    ds = _load(write(tmp_path, "a.csv", "user_id,item_id,timestamp\n1, 7,10\n1,7 ,11\n1,8,12\n"))
    assert ds.item_ids.tolist() == [0, 7, 8] and ds.item_ids[ds.items].tolist() == [7, 7, 8]


def test_iso_dates_in_csv_are_date_times(tmp_path):
    ds = _load(write(tmp_path, "a.csv", "user_id,item_id,date\n1,7,2016-05-09\n1,8,2016-05-08\n"))
    assert ds.timestamps.tolist() == [1462665600, 1462752000] and ds.meta["time_unit_source"] == "date-time"


def test_kcore_drops_and_repeats_are_counted(tmp_path):
    rows = "".join(f"1\t{i}\t3\t{t}\n" for i, t in [(1, 10), (1, 10), (2, 11), (3, 12)]) + "2\t1\t3\t5\n2\t2\t3\t6\n"
    stats = _load(write(tmp_path, "u.data", rows)).stats()
    assert (stats["rows_read"], stats["duplicate_events"], stats["rows_dropped_by_min_count"]) == (6, 1, 0)
    stats = load_dataset(write(tmp_path, "v/u.data", rows), min_count=2, verbose=False).stats()
    assert (stats["rows_dropped_by_min_count"], stats["items_dropped_by_min_count"],
            stats["users_dropped_by_min_count"]) == (1, 1, 0)
