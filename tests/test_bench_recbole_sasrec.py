"""bench/recbole_sasrec.py: our data written as RecBole's atomic file in our order, the config it hands RecBole, and
(only where recbole is installed, in its own environment) RecBole reading that file back as our data and split."""
import importlib.util
import json

import numpy as np
import pytest

from bench import recbole_sasrec as rs
from t2arec_fast.data import SequenceDataset, leave_one_out

HAS_RECBOLE = importlib.util.find_spec("recbole") is not None
NEEDS_RECBOLE = pytest.mark.skipif(not HAS_RECBOLE, reason="recbole is not installed here; it lives in its own "
                                   "environment (bench/recbole_sasrec.py's docstring says how to make it)")


def _dataset():
    """Two users; user 0 has a tie (items 3 and 1 both at t=5) that only the file order decides."""
    return SequenceDataset(
        name="tiny", offsets=np.array([0, 4, 7]), items=np.array([3, 1, 2, 4, 2, 4, 1]),
        timestamps=np.array([5, 5, 7, 9, 1, 1, 2]), user_ids=np.array(["a", "b"]),
        item_ids=np.array(["<pad>", "x", "y", "z", "w"]), default_max_len=50)


def _read_inter(path):
    lines = path.read_text().splitlines()
    return lines[0], [tuple(int(v) for v in line.split("\t")) for line in lines[1:]]


def test_atomic_file_keeps_our_order_with_row_positions_as_timestamps(tmp_path):
    ds = _dataset()
    path = rs.write_atomic(ds, tmp_path, "t2arec-tiny")
    assert path == tmp_path / "t2arec-tiny" / "t2arec-tiny.inter"
    header, rows = _read_inter(path)
    assert header == "user_id:token\titem_id:token\ttimestamp:float"
    assert rows == [(0, 3, 0), (0, 1, 1), (0, 2, 2), (0, 4, 3), (1, 2, 0), (1, 4, 1), (1, 1, 2)]
    # counts as ours; sorting by (user, timestamp) - what RecBole does for order TO - gives our order back
    users, items, positions = (np.array(c) for c in zip(*rows))
    assert (len(rows), len(set(users)), len(set(items))) == (ds.n_interactions, ds.n_users, ds.n_items)
    order = np.lexsort((positions, users))
    assert np.array_equal(items[order], ds.items)


def test_atomic_file_of_a_loaded_data_set_has_one_row_per_event(tmp_path, tiny_dataset):
    ds = tiny_dataset
    header, rows = _read_inter(rs.write_atomic(ds, tmp_path, "x"))
    users, items, positions = (np.array(c) for c in zip(*rows))
    assert len(rows) == ds.n_interactions
    assert np.array_equal(np.bincount(users, minlength=ds.n_users), ds.lengths)
    assert np.array_equal(items, ds.items)
    assert all(np.array_equal(positions[ds.offsets[u]:ds.offsets[u + 1]], np.arange(ds.lengths[u]))
               for u in range(ds.n_users))


def test_config_is_leave_one_out_by_time_without_filtering_and_recboles_sasrec_defaults(tmp_path):
    cfg = rs.recbole_config(tmp_path, max_len=50, seed=3, epochs=7, stopping_step=4)
    assert cfg["data_path"] == str(tmp_path) and cfg["checkpoint_dir"].startswith(str(tmp_path))
    assert cfg["eval_args"] == {"split": {"LS": "valid_and_test"}, "group_by": "user", "order": "TO", "mode": "full"}
    assert cfg["user_inter_num_interval"] == cfg["item_inter_num_interval"] == "[0,inf)"
    assert cfg["val_interval"] is None and cfg["rm_dup_inter"] is None
    assert cfg["load_col"] == {"inter": ["user_id", "item_id", "timestamp"]}
    assert cfg["MAX_ITEM_LIST_LENGTH"] == 50
    assert cfg["metrics"] == ["NDCG", "Recall", "MRR"] and cfg["topk"] == [10] and cfg["valid_metric"] == "NDCG@10"
    assert {k: cfg[k] for k in ("n_layers", "n_heads", "hidden_size", "inner_size", "hidden_dropout_prob",
                                "attn_dropout_prob", "loss_type", "learner", "learning_rate", "train_batch_size")} == {
        "n_layers": 2, "n_heads": 2, "hidden_size": 64, "inner_size": 256, "hidden_dropout_prob": 0.5,
        "attn_dropout_prob": 0.5, "loss_type": "CE", "learner": "adam", "learning_rate": 1e-3,
        "train_batch_size": 2048}
    assert cfg["train_neg_sample_args"] is None          # RecBole refuses negative sampling with the CE loss
    assert (cfg["seed"], cfg["epochs"], cfg["stopping_step"]) == (3, 7, 4)


def test_set_overrides_are_read_as_yaml_and_win():
    over = rs.parse_overrides(["learning_rate=0.0005", "n_layers=1", "hidden_act=relu", "show_progress=true"])
    assert over == {"learning_rate": 0.0005, "n_layers": 1, "hidden_act": "relu", "show_progress": True}
    cfg = rs.recbole_config("/tmp/x", 200, overrides=over)
    assert (cfg["learning_rate"], cfg["n_layers"], cfg["MAX_ITEM_LIST_LENGTH"]) == (0.0005, 1, 200)
    with pytest.raises(ValueError, match="key=value"):
        rs.parse_overrides(["learning_rate"])


def test_named_data_sets_take_reproduce_settings_and_paths_pass_through(tmp_path):
    from bench.studies.reproduce import DATASETS
    path, k_core, max_len = rs.resolve_data("amazon-beauty")
    assert (path, k_core, max_len) == (str(DATASETS["amazon-beauty"][0]), 5, 50)
    assert rs.resolve_data("ml-100k", tmp_path) == (str(tmp_path / "ml-100k"), 10, 200)
    assert rs.resolve_data("some/folder/x.csv") == ("some/folder/x.csv", None, None)
    assert rs.data_label("synthetic:n_users=5") == "synthetic" and rs.data_label("some/folder/") == "folder"


def test_our_counts_are_those_of_the_leave_one_out_split():
    ds = _dataset()
    counts = rs.our_counts(ds, leave_one_out(ds))
    # user 0: 4 events = 2 training events (1 target: the first has no input), valid, test; user 1: 3 events = 1
    # training event (no target), valid, test
    assert counts == {"n_users": 2, "n_items": 4, "n_interactions": 7, "train_examples": 1, "valid_examples": 2,
                      "test_examples": 2}


@pytest.mark.skipif(HAS_RECBOLE, reason="recbole is installed: the missing-recbole message cannot be seen here")
def test_without_recbole_the_script_says_how_to_install_it_in_one_line():
    with pytest.raises(SystemExit) as stop:
        rs.main(["ml-100k", "--dry"])
    message = str(stop.value)
    assert "\n" not in message and "recbole==1.2.1" in message and "python3 -m venv" in message


@NEEDS_RECBOLE
def test_recbole_reads_our_file_as_our_data_and_split(tmp_path, capsys):
    got = rs.run(rs.parse_args(["synthetic:n_users=60,n_items=200", "--k-core", "1", "--dry", "--work",
                                str(tmp_path)]))
    assert got["counts"]["ours"] == got["counts"]["recbole"]
    for part in ("valid", "test"):
        found = got["same_examples"][part]
        assert found["users"] == found["targets_equal"] == found["inputs_equal"] == 60


@NEEDS_RECBOLE
def test_one_small_epoch_writes_the_json(tmp_path):
    rs.main(["synthetic:n_users=60,n_items=200", "--k-core", "1", "--epochs", "1", "--threads", "1", "--out",
             str(tmp_path), "--set", "hidden_size=16", "inner_size=32", "train_batch_size=512"])
    report = json.loads((tmp_path / "recbole_sasrec_synthetic.json").read_text())
    assert report["counts"]["equal"] and report["best_epoch"] == 0 and report["epochs_run"] == 1
    assert report["config"]["hidden_size"] == 16 and report["recbole"] == "1.2.1"
    assert 0 <= report["test"]["ndcg@10"] <= 1 and report["epochs"][0]["valid"]["ndcg@10"] >= 0
    assert report["environment"]["recbole"] == "1.2.1" and report["seconds_per_epoch"] > 0


@NEEDS_RECBOLE
def test_a_file_in_another_order_is_refused_before_training(tmp_path, monkeypatch):
    write = rs.write_atomic

    def reversed_times(ds, folder, name):         # each user's history backwards: same counts, other examples
        path = write(ds, folder, name)
        header, rows = _read_inter(path)
        path.write_text(header + "\n" + "".join(f"{u}\t{i}\t{-t}\n" for u, i, t in rows))
        return path
    monkeypatch.setattr(rs, "write_atomic", reversed_times)
    with pytest.raises(SystemExit, match="valid examples differ from ours"):
        rs.run(rs.parse_args(["synthetic:n_users=60,n_items=200", "--k-core", "1", "--dry", "--work",
                              str(tmp_path)]))
