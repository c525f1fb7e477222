"""Every reader gives the same data set from the same interactions; compression, archives and folders are
transparent; ties keep file order; times past 2038 stay exact."""
import bz2
import gzip
import lzma
import zipfile

import numpy as np
import pytest

from t2arec_fast.data import load_dataset
from t2arec_fast.data.readers import read_interactions

from .helpers import EXPECTED, ROWS, sequences, udata, write

INTER_HEADER = "rating:float\titem_id:token\tuser_id:token\ttimestamp:float\textra:token_seq\n"


def _load(path, **kw):
    return load_dataset(path, min_count=1, verbose=False, **kw)


def _pair_texts(rows):
    by_user = {}
    for u, i, t in sorted(rows, key=lambda r: (r[0], r[2])):  # the sequence files are chronological already
        by_user.setdefault(u, []).append((i, t))
    items = "".join(f"{u} " + " ".join(str(i) for i, _ in ev) + "\n" for u, ev in by_user.items())
    times = "".join(f"{u} " + " ".join(str(t) for _, t in ev) + "\n" for u, ev in by_user.items())
    return items, times


FORMATS = {
    "u.data": lambda rows: udata(rows),
    "ratings.dat": lambda rows: "".join(f"{u}::{i}::4::{t}\n" for u, i, t in rows),
    "ratings.csv": lambda rows: "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},4.0,{t}\n" for u, i, t in rows),
    "ml.inter": lambda rows: INTER_HEADER + "".join(f"3\t{i}\t{u}\t{t}.0\tx y\n" for u, i, t in rows),
    "log.csv": lambda rows: "ts;who;what\n" + "".join(f"{t};{u};{i}\n" for u, i, t in rows),
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_text_format_gives_the_same_sequences(tmp_path, name):
    path = write(tmp_path, name, FORMATS[name](ROWS))
    columns = {"user": "who", "item": "what", "timestamp": "ts"} if name == "log.csv" else None
    ds = _load(path, columns=columns)
    assert sequences(ds) == EXPECTED
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (3, 3, 9)


def test_detected_formats(tmp_path):
    expected = {"u.data": "movielens-tab", "ratings.dat": "movielens-dat", "ratings.csv": "csv",
                "ml.inter": "recbole", "log.csv": "csv"}
    for name, fmt in expected.items():
        assert read_interactions(write(tmp_path, name, FORMATS[name](ROWS)),
                                 columns={"user": "who", "item": "what", "timestamp": "ts"}
                                 if name == "log.csv" else None).format == fmt


def test_sequence_pair_file_or_folder(tmp_path):
    items, times = _pair_texts(ROWS)
    item_file = write(tmp_path / "pair", "Toy_item_org.txt", items)
    time_file = write(tmp_path / "pair", "Toy_time_org.txt", times)
    for path in (item_file, time_file, tmp_path / "pair"):
        ds = _load(path)
        assert sequences(ds) == {1: [(20, 100), (30, 200), (10, 200)], 2: EXPECTED[2], 3: EXPECTED[3]}
        assert ds.name == "Toy" or path.is_dir()
        assert len(ds.files) == 2


def test_parquet_with_column_mapping(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    u, i, t = zip(*ROWS)
    pq.write_table(pa.table({"uid": list(u), "iid": list(i), "when": list(t), "x": [1.0] * len(u)}),
                   tmp_path / "log.parquet")
    ds = _load(tmp_path / "log.parquet", columns={"user": "uid", "item": "iid", "timestamp": "when"})
    assert sequences(ds) == EXPECTED


def test_parquet_datetime_column_becomes_seconds(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    times = np.array([0, 86400, 4102444800], dtype="datetime64[s]")
    pq.write_table(pa.table({"user_id": [1, 1, 1], "item_id": [1, 2, 3], "timestamp": times}), tmp_path / "x.parquet")
    assert _load(tmp_path / "x.parquet").timestamps.tolist() == [0, 86400, 4102444800]


def test_headerless_csv_with_positions(tmp_path):
    path = write(tmp_path, "raw.csv", "".join(f"{t},{i},{u}\n" for u, i, t in ROWS))
    ds = _load(path, columns={"user": 2, "item": 1, "timestamp": 0})
    assert sequences(ds) == EXPECTED


@pytest.mark.parametrize("suffix,compress", [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)])
def test_compressed_files(tmp_path, suffix, compress):
    path = tmp_path / f"u.data{suffix}"
    path.write_bytes(compress(udata(ROWS).encode()))
    ds = _load(path)
    assert sequences(ds) == EXPECTED and ds.format == "movielens-tab"


def test_movielens_zip_archive_picks_the_ratings_file(tmp_path):
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-100k/README", "read me")
        zf.writestr("ml-100k/u1.base", "1\t1\t1\t1\n")
        zf.writestr("ml-100k/u.data", udata(ROWS))
        zf.writestr("ml-100k/u.item", "1|Toy Story|...\n")
    ds = _load(archive)
    assert sequences(ds) == EXPECTED and ds.name == "ml-100k"


def test_folder_picks_known_file_and_format_override(tmp_path):
    write(tmp_path / "ml", "movies.csv", "movieId,title\n1,Toy Story\n")
    write(tmp_path / "ml", "ratings.csv", FORMATS["ratings.csv"](ROWS))
    assert sequences(_load(tmp_path / "ml")) == EXPECTED
    renamed = write(tmp_path, "interactions.log", udata(ROWS))       # unknown name: sniffed from the first line
    assert _load(renamed).format == "movielens-tab"
    assert _load(renamed, format="u.data").format == "movielens-tab"


def test_ties_keep_file_order(tmp_path):
    rows = [(1, 5, 100), (2, 1, 50), (1, 3, 100), (1, 9, 100), (1, 7, 90), (1, 4, 100)]
    ds = _load(write(tmp_path, "u.data", udata(rows)))
    assert [i for i, _ in sequences(ds)[1]] == [7, 5, 3, 9, 4]


def test_timestamps_past_2038_stay_exact_int64(tmp_path):
    late = [2 ** 31 + 1, 4102444800, 253402300799]              # 2038-01-19, 2100-01-01, 9999-12-31
    rows = [(1, 1, late[0]), (1, 2, late[1]), (1, 3, late[2])]
    for name in ("u.data", "ml.inter"):
        # seconds after the year 5138 read as milliseconds by the magnitude rule, so the unit is given here
        ds = _load(write(tmp_path, name, FORMATS[name](rows)), time_unit="s")
        assert ds.timestamps.dtype == np.int64
        assert ds.timestamps.tolist() == late


def test_string_ids_and_padding_placeholder(tmp_path):
    path = write(tmp_path, "reviews.csv",
                 "user_id,item_id,timestamp\nann,B0002,10\nbob,A0001,11\nann,A0001,12\n")
    ds = _load(path)
    assert ds.user_ids.tolist() == ["ann", "bob"]
    assert ds.item_ids.tolist() == ["[PAD]", "A0001", "B0002"]
    assert sequences(ds)["ann"] == [("B0002", 10), ("A0001", 12)]
