"""ItemIdMap: raw item ids of a data file ↔ the model's contiguous ids."""
import numpy as np

from t2arec_fast.data import ItemIdMap

from .helpers import ROWS, udata, write


def test_item_id_map_text_and_numbers():
    m = ItemIdMap(np.array(["pad", "sku1", "sku10", "7"], dtype=object).astype(str))
    np.testing.assert_array_equal(m.to_model(np.array(["sku10", "sku100", "sku1", "x"])), [2, 0, 1, 0])
    np.testing.assert_array_equal(m.to_model(np.array([7, 8])), [3, 0])            # numbers vs text ids
    n = ItemIdMap(np.array([0, 50, 20, 30]))
    np.testing.assert_array_equal(n.to_model(np.array([20, 30, 50, 21])), [2, 3, 1, 0])
    np.testing.assert_array_equal(n.to_raw([1, 2]), [50, 20])


def test_a_file_read_through_saved_maps_keeps_the_models_numbering(tmp_path):
    """Issue 13, item 10: ids are looked up in the checkpoint's maps, never renumbered by the new file."""
    import pytest

    from t2arec_fast.data import DataError, load_dataset
    train = load_dataset(write(tmp_path, "a/u.data", udata(ROWS)), min_count=1, verbose=False)
    maps = {"item_ids": train.item_ids, "user_ids": train.user_ids}
    # user 1 missing, item 10 renamed 5 (sorts first, so every id would shift if renumbered)
    rows = [(u, 5 if i == 10 else i, t) for u, i, t in ROWS if u != 1]
    path = write(tmp_path, "b/u.data", udata(rows))
    with pytest.raises(DataError, match=r"2 events have ids the model was not trained on: 1 unknown items \(5\)"):
        load_dataset(path, min_count=1, verbose=False, id_maps=maps)
    ds = load_dataset(path, min_count=1, verbose=False, id_maps=maps, unknown_ids="drop")
    assert ds.item_ids.tolist() == train.item_ids.tolist() and ds.user_ids.tolist() == [1, 2, 3]
    assert ds.lengths.tolist() == [0, 2, 2] and ds.meta["unknown_ids"]["events_dropped"] == 2
    assert {(int(ds.item_ids[i]), int(t)) for i, t in zip(*ds.sequence(1))} == {(30, 300), (20, 400)}
    with pytest.raises(DataError, match="unknown_ids='keep': expected one of error, drop"):
        load_dataset(path, min_count=1, verbose=False, id_maps=maps, unknown_ids="keep")
