"""tie_order: events of one user with equal timestamps reordered (by item id, reversed, at random); nothing else
moves."""
import numpy as np
import pytest

from t2arec_fast.data.ties import reorder_ties, tied_share

from .helpers import dataset, sequences

# user 1: items 30, 10, 20 on day 100, then 40 on day 200; user 2: 50 then 60, 70 on day 300 (file order)
ROWS = [(1, 30, 100), (1, 10, 100), (1, 20, 100), (1, 40, 200), (2, 50, 250), (2, 70, 300), (2, 60, 300)]


@pytest.mark.parametrize("order, user1, user2", [
    ("file", [30, 10, 20, 40], [50, 70, 60]),
    ("item", [10, 20, 30, 40], [50, 60, 70]),
    ("reversed", [20, 10, 30, 40], [50, 60, 70]),
])
def test_tie_orders(order, user1, user2):
    seqs = sequences(reorder_ties(dataset(ROWS), order))
    assert [i for i, _ in seqs[1]] == user1 and [i for i, _ in seqs[2]] == user2
    assert [t for _, t in seqs[1]] == [100, 100, 100, 200]                  # times never move


def test_random_order_only_permutes_inside_ties():
    ds = dataset(ROWS)
    seen = set()
    for seed in range(20):
        out = reorder_ties(ds, "random", seed=seed)
        seqs = sequences(out)
        assert sorted(i for i, _ in seqs[1][:3]) == [10, 20, 30] and seqs[1][3] == (40, 200)
        seen.add(tuple(i for i, _ in seqs[1][:3]))
        assert out.meta["tie_order"] == "random" and np.array_equal(out.offsets, ds.offsets)
    assert len(seen) > 1
    assert tied_share(ds) == pytest.approx(3 / 5)


def test_unknown_tie_order():
    with pytest.raises(ValueError, match="tie_order must be one of"):
        reorder_ties(dataset(ROWS), "alphabetical")


def test_cli_train_takes_tie_order(tmp_path, capsys):
    """--tie_order reaches the data set the model trains on; an unknown one is a one-line error."""
    from t2arec_fast.cli import main
    from t2arec_fast.data import load_dataset
    from .helpers import udata, write
    path = write(tmp_path, "u.data", udata([(u, i, 100 * (k // 2)) for u in range(1, 6) for k, i in
                                             enumerate([3, 1, 2, 5, 4, 6])]))
    ds = load_dataset(path, min_count=1, tie_order="item", verbose=False)
    assert ds.item_ids[ds.sequence(0)[0]].tolist() == [1, 3, 2, 5, 4, 6]      # ties (3, 1), (2, 5), (4, 6) by id
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--epochs=1", "--min_count=1",
                 "--tie_order=sorted", "--progress=false"]) == 2
    assert "tie_order='sorted'" in capsys.readouterr().err
