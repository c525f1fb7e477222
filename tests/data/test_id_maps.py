"""ItemIdMap: raw item ids of a data file ↔ the model's contiguous ids."""
import numpy as np

from t2arec_fast.data import ItemIdMap


def test_item_id_map_text_and_numbers():
    m = ItemIdMap(np.array(["pad", "sku1", "sku10", "7"], dtype=object).astype(str))
    np.testing.assert_array_equal(m.to_model(np.array(["sku10", "sku100", "sku1", "x"])), [2, 0, 1, 0])
    np.testing.assert_array_equal(m.to_model(np.array([7, 8])), [3, 0])            # numbers vs text ids
    n = ItemIdMap(np.array([0, 50, 20, 30]))
    np.testing.assert_array_equal(n.to_model(np.array([20, 30, 50, 21])), [2, 3, 1, 0])
    np.testing.assert_array_equal(n.to_raw([1, 2]), [50, 20])
