"""Issue 14 item 7: a rating threshold (`min_rating`, RecBole's `val_interval: {rating: "[R,inf)"}`) in every reader
whose format has ratings, applied before the k-core; formats without ratings and bad ratings refused by name and
place; without a threshold nothing changes (ratings are not even parsed)."""
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from t2arec_fast.data import CONTENT_KEYS, DataError, load_dataset
from t2arec_fast.data.readers import read_interactions

from .helpers import EXPECTED, sequences, write

# (user, item, rating, time): helpers.ROWS with ratings; 1, 2 and 3 fall below 4, 4 itself is kept (≥)
RATED = [(2, 10, 5, 500), (1, 20, 1, 100), (1, 30, 4, 200), (3, 20, 3, 50), (1, 10, 5, 200), (2, 20, 4, 400),
         (3, 30, 2, 60), (2, 30, 4, 300), (3, 10, 5, 70)]
KEPT_AT_4 = {1: [(30, 200), (10, 200)], 2: [(30, 300), (20, 400), (10, 500)], 3: [(10, 70)]}
MAPPING = {"user": "who", "item": "what", "timestamp": "when", "rating": "grade"}


def _text(header: str, line: str, rows=RATED) -> str:
    return header + "".join(line.format(u=u, i=i, r=r, t=t) for u, i, r, t in rows)


# file name → (text, columns= mapping): every text format that carries ratings, found by name or mapped
RATED_FILES = {
    "u.data": (_text("", "{u}\t{i}\t{r}\t{t}\n"), None),
    "ratings.dat": (_text("", "{u}::{i}::{r}::{t}\n"), None),
    "ratings.csv": (_text("userId,movieId,rating,timestamp\n", "{u},{i},{r}.0,{t}\n"), None),
    "reviews.csv": (_text("user_id,business_id,stars,ts\n", "{u},{i},{r},{t}\n"), None),      # an alias: stars
    "ml.inter": (_text("rating:float\titem_id:token\tuser_id:token\ttimestamp:float\n", "{r}\t{i}\t{u}\t{t}.0\n"),
                 None),
    "mapped.csv": (_text("who;what;grade;when\n", "{u};{i};{r};{t}\n"), MAPPING),                 # by name
    "positions.csv": (_text("", "{u},{i},{r},{t}\n"), {"user": 0, "item": 1, "rating": 2, "timestamp": 3}),
}


def _load(path, **kw):
    return load_dataset(path, min_count=1, verbose=False, **kw)


@pytest.mark.parametrize("name", sorted(RATED_FILES))
def test_threshold_keeps_the_rows_rated_at_least_it_in_every_text_format(tmp_path, name):
    text, columns = RATED_FILES[name]
    path = write(tmp_path, name, text)
    ds = _load(path, columns=columns, min_rating=4)
    assert sequences(ds) == KEPT_AT_4
    assert ds.meta["min_rating"] == 4.0 and ds.meta["rows_dropped_by_min_rating"] == 3
    assert ds.meta["rows_read"] == 9 and ds.meta["users_dropped_by_min_rating"] == 0
    assert ds.meta["items_dropped_by_min_rating"] == 0
    assert sequences(_load(path, columns=columns)) == EXPECTED          # no threshold: every row, as before


@pytest.mark.parametrize("columns", [None, {"user": "u", "item": "i", "timestamp": "t", "rating": "r"}])
def test_threshold_in_parquet_by_name_or_mapping(tmp_path, columns):
    names = ("user_id", "item_id", "rating", "timestamp") if columns is None else ("u", "i", "r", "t")
    users, items, ratings, times = zip(*RATED)
    table = pa.table({names[0]: pa.array(users, pa.int64()), names[1]: pa.array(items, pa.int64()),
                      names[2]: pa.array(ratings, pa.float64()), names[3]: pa.array(times, pa.int64())})
    pq.write_table(table, tmp_path / "x.parquet")
    ds = _load(tmp_path / "x.parquet", columns=columns, min_rating=4)
    assert sequences(ds) == KEPT_AT_4 and ds.meta["rows_dropped_by_min_rating"] == 3


def test_fractional_threshold_and_ratings(tmp_path):
    """ml-latest-small rates in half stars: 3.5 keeps 3.5 and drops 3.0; the text form '.5' is a number too."""
    path = write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n1,1,3.5,10\n1,2,3.0,20\n1,3,4.5,30\n"
                                          "1,4,.5,40\n")
    assert sequences(_load(path, min_rating=3.5)) == {1: [(1, 10), (3, 30)]}
    assert sequences(_load(path, min_rating=0.5))[1] == [(1, 10), (2, 20), (3, 30), (4, 40)]


def test_threshold_drops_users_and_items_and_counts_them(tmp_path):
    """Item 20 and user 3 have only low ratings: they vanish with the threshold and the report says so."""
    rows = [(1, 10, 5, 1), (1, 20, 1, 2), (2, 10, 4, 3), (2, 20, 2, 4), (3, 10, 1, 5)]
    ds = _load(write(tmp_path, "u.data", _text("", "{u}\t{i}\t{r}\t{t}\n", rows)), min_rating=4)
    assert sequences(ds) == {1: [(10, 1)], 2: [(10, 3)]}
    stats = ds.stats(with_hash=False)
    assert (stats["rows_read"], stats["rows_dropped_by_min_rating"], stats["users_dropped_by_min_rating"],
            stats["items_dropped_by_min_rating"], stats["rows_dropped_by_min_count"]) == (5, 3, 1, 1, 0)
    assert stats["min_rating"] == 4.0 and stats["items_dropped_by_min_count"] == 0


def test_threshold_comes_before_the_k_core(tmp_path):
    """User 1 rated x 5 and y 1; users 2 and 3 rated both 5. Threshold first (RecBole's order): user 1 keeps one
    event and the 2-core removes them. The other order would keep user 1 with one event after the k-core."""
    rows = [(1, "x", 5, 1), (1, "y", 1, 2), (2, "x", 5, 3), (2, "y", 5, 4), (3, "y", 5, 5), (3, "x", 5, 6)]
    path = write(tmp_path, "ratings.csv", _text("user_id,item_id,rating,timestamp\n", "{u},{i},{r},{t}\n", rows))
    ds = load_dataset(path, min_count=2, min_rating=4, verbose=False)
    assert sequences(ds) == {2: [("x", 3), ("y", 4)], 3: [("y", 5), ("x", 6)]}
    assert (ds.meta["rows_read"], ds.meta["rows_dropped_by_min_rating"], ds.meta["rows_dropped_by_min_count"],
            ds.meta["users_dropped_by_min_count"]) == (6, 1, 1, 1)
    assert min(ds.lengths) >= 2                          # the k-core holds on what the threshold left


def test_threshold_keeps_subsecond_order_of_the_kept_rows(tmp_path):
    """The part of a time below a second orders same-second events; it is filtered with the rows it belongs to."""
    path = write(tmp_path, "ratings.csv", "user_id,item_id,rating,timestamp\n1,a,5,100.7\n1,b,1,100.2\n"
                                          "1,c,5,100.5\n1,d,5,99\n")
    assert sequences(_load(path, min_rating=4)) == {1: [("d", 99), ("c", 100), ("a", 100)]}


# -- formats and data without ratings --------------------------------------------------------------------------------
def _pair(tmp_path):
    write(tmp_path, "S_time_x.txt", "1 10 20\n")
    return write(tmp_path, "S_item_x.txt", "1 5 6\n")


NO_RATINGS = {
    "seq-pair": (_pair, "S_item_x.txt", "sequence pair"),
    "csv": (lambda d: write(d, "log.csv", "user_id,item_id,timestamp\n1,2,3\n"), "log.csv", "no rating column"),
    "recbole": (lambda d: write(d, "a.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n"),
                "a.inter", "no rating column"),
    "positions": (lambda d: write(d, "p.csv", "1,2,3\n"), "p.csv", "no rating column"),
}


@pytest.mark.parametrize("case", sorted(NO_RATINGS))
def test_formats_without_ratings_are_refused_by_name(tmp_path, case):
    make, name, fragment = NO_RATINGS[case]
    columns = {"user": 0, "item": 1, "timestamp": 2} if case == "positions" else None
    path = make(tmp_path)
    with pytest.raises(DataError, match=fragment) as exc:
        _load(path, columns=columns, min_rating=3)
    assert name in str(exc.value) and "min_rating" in str(exc.value)
    assert _load(path, columns=columns).n_interactions >= 1              # no threshold: reads as before


def test_parquet_without_a_rating_column_is_refused(tmp_path):
    pq.write_table(pa.table({"user_id": [1], "item_id": [2], "timestamp": [3]}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match="no rating column among") as exc:
        _load(tmp_path / "n.parquet", min_rating=3)
    assert "n.parquet" in str(exc.value)


def test_synthetic_data_has_no_ratings():
    with pytest.raises(DataError, match="synthetic data has no ratings"):
        _load("synthetic:n_users=20,n_items=30", min_rating=3)


# -- bad ratings -----------------------------------------------------------------------------------------------------
BAD_RATINGS = {  # file name → (text, line, column, fragment of the message)
    "u.data": ("1\t2\t5\t100\n1\t3\tx\t200\n", 2, "3 (rating)", "rating 'x' is not a number"),
    "ratings.dat": ("1::2::5::100\n1::3::5::150\n1::4::NaN::200\n", 3, "3 (rating)", "missing or NaN rating"),
    "ratings.csv": ("userId,movieId,rating,timestamp\n1,2,4.0,100\n1,3,,200\n", 3, "3 (rating)",
                    "missing or NaN rating"),
    "ml.inter": ("rating:float\titem_id:token\tuser_id:token\ttimestamp:float\n5\t1\t1\t10\ninf\t2\t1\t20\n", 3,
                 "1 (rating)", "rating is inf"),
    "mapped.csv": ("who;what;grade;when\n1;2;good;100\n", 2, "3 (grade)", "rating 'good' is not a number"),
}


@pytest.mark.parametrize("name", sorted(BAD_RATINGS))
def test_bad_ratings_name_file_line_and_column(tmp_path, name):
    text, line, column, fragment = BAD_RATINGS[name]
    path = write(tmp_path, name, text)
    columns = MAPPING if name == "mapped.csv" else None
    with pytest.raises(DataError, match=fragment) as exc:
        _load(path, columns=columns, min_rating=3)
    assert (exc.value.line, exc.value.column) == (line, column) and str(exc.value.path).endswith(name)
    assert _load(path, columns=columns).n_interactions == len(text.strip().splitlines()) - (
        0 if name in ("u.data", "ratings.dat") else 1)  # without a threshold ratings are never read: loads as before


def test_bad_parquet_rating_names_the_row(tmp_path):
    pq.write_table(pa.table({"user_id": [1, 1], "item_id": [2, 3], "rating": [4.0, math.nan], "timestamp": [1, 2]}),
                   tmp_path / "b.parquet")
    with pytest.raises(DataError, match="row 2: rating is nan") as exc:
        _load(tmp_path / "b.parquet", min_rating=3)
    assert exc.value.column == "3 (rating)" and str(exc.value.path).endswith("b.parquet")


@pytest.mark.parametrize("value", [math.nan, math.inf, "4", True])
def test_threshold_must_be_a_finite_number(tmp_path, value):
    path = write(tmp_path, "u.data", "1\t2\t5\t100\n")
    with pytest.raises(DataError, match="min_rating=.*expected a finite number"):
        read_interactions(path, min_rating=value)


def test_every_row_below_the_threshold_is_a_clear_error(tmp_path):
    path = write(tmp_path, "u.data", "1\t2\t1\t100\n1\t3\t2\t200\n")
    with pytest.raises(DataError, match="no interaction is rated 3 or more.*2 rows read"):
        _load(path, min_rating=3)


def test_default_reads_no_ratings_and_reports_nothing_new(tmp_path):
    """Without a threshold the data set, its meta and its statistics have exactly the keys they had before."""
    ds = _load(write(tmp_path, "u.data", RATED_FILES["u.data"][0]))
    stats = ds.stats(with_hash=False)
    assert not [key for key in [*ds.meta, *stats] if "rating" in key]
    assert read_interactions(tmp_path / "u.data").ratings is None


def test_real_movielens_in_two_formats_agree_under_a_threshold(shared_datasets):
    """ml-100k's u.data and RecBole's ml-100k.inter (rating:float) give the same data set with ratings ≥ 3."""
    a = load_dataset(shared_datasets / "ml-100k" / "u.data", min_count=10, min_rating=3, verbose=False)
    b = load_dataset(shared_datasets / "ml-100k-recbole" / "ml-100k.inter", min_count=10, min_rating=3,
                     verbose=False)
    sa, sb = a.stats(with_hash=False), b.stats(with_hash=False)
    assert {k: sa[k] for k in CONTENT_KEYS} == {k: sb[k] for k in CONTENT_KEYS}
    assert sa["rows_dropped_by_min_rating"] == sb["rows_dropped_by_min_rating"] == 17_480
    assert (sa["users"], sa["items"], sa["interactions"]) == (939, 1016, 80_393)
    assert np.array_equal(a.items, b.items)
