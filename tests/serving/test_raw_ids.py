"""serving/raw_ids.py: observe_raw / recommend_raw with a data file's ids, and user keys across save and load."""
import numpy as np
import pytest

from t2arec_fast.errors import InputError
from t2arec_fast.model import load_model
from t2arec_fast.serving import OnlineRecommender

from .helpers import raw_id_checkpoint


def test_python_raw_id_path_across_save_and_load(tmp_path):
    rec = OnlineRecommender(load_model(raw_id_checkpoint(tmp_path)), capacity_bytes=4 << 20)
    assert rec.observe_raw(["alice", "bob", "alice"], ["sku3", "sku5", "sku7"], [10, 11, 12]) == 0
    with pytest.raises(InputError, match="item 'sku999' is not in the model's item map"):
        rec.observe_raw(["bob"], ["sku999"], [13])
    assert rec.observe_raw(["bob", "bob"], ["sku999", "sku9"], [13, 14], unknown_items="drop") == 1
    items, scores = rec.recommend_raw(["alice", "bob"], k=5)
    rec.save(tmp_path / "saved")
    back = OnlineRecommender.load(tmp_path / "saved")
    again, again_scores = back.recommend_raw(["alice", "bob"], k=5)
    assert items.tolist() == again.tolist() and np.array_equal(scores, again_scores)
    assert all(str(i).startswith("sku") for i in items.ravel())
    cold, _ = back.recommend_raw(["carol"], k=3)                              # never seen: the most observed items
    assert cold.tolist() == [["sku3", "sku5", "sku7"]]
    assert back.user_keys.keys_for([42, 43]).tolist() == [42, 43]           # integer ids stay their own keys


def test_observe_raw_refuses_bad_calls_by_name_and_stores_nothing(tmp_path):
    rec = OnlineRecommender(load_model(raw_id_checkpoint(tmp_path)), capacity_bytes=4 << 20)
    with pytest.raises(InputError, match=r"observe_raw: user_ids, item_ids and timestamps differ in length \(2, 3, 3\)"):
        rec.observe_raw(["alice", "bob"], ["sku3", "sku5", "sku7"], [10, 11, 12])
    with pytest.raises(InputError, match="unknown_items must be 'error' or 'drop', got 'skip'"):
        rec.observe_raw(["alice"], ["sku3"], [10], unknown_items="skip")
    assert len(rec) == 0 and len(rec.user_keys) == 0
