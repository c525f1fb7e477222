"""The real data sets beside the checkout (skipped in a fresh clone without ../shared)."""
from t2arec_fast.data import CONTENT_KEYS, load_dataset


def test_ml100k_raw_and_recbole_agree(shared_datasets):
    raw = load_dataset(shared_datasets / "ml-100k" / "u.data", min_count=1, verbose=False)
    recbole = load_dataset(shared_datasets / "ml-100k-recbole" / "ml-100k.inter", min_count=1, verbose=False)
    a, b = raw.stats(), recbole.stats()
    assert (a["users"], a["items"], a["interactions"]) == (943, 1682, 100000)
    assert {k: a[k] for k in CONTENT_KEYS} == {k: b[k] for k in CONTENT_KEYS}
    assert (raw.items == recbole.items).all() and (raw.timestamps == recbole.timestamps).all()
    assert len(a["files"][0]["sha256"]) == 64 and a["files"][0]["sha256"] != b["files"][0]["sha256"]
    assert raw.default_max_len == 200


def test_amazon_beauty_5core(shared_datasets):
    ds = load_dataset(shared_datasets / "amazon-beauty", min_count=5, verbose=False)
    stats = ds.stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (22363, 12101, 198502)
    assert ds.default_max_len == 50 and 0.43 < stats["zero_gap_share"] < 0.45
