"""`t2arec serve-replay` (cli/serve_cmd.py): it reads an event log, maps raw ids, replays it through
OnlineRecommender (the replay() API is tested in tests/serving/test_replay.py) and reports one line per error."""
import json

import numpy as np
import pytest

from t2arec_fast.cli import main
from t2arec_fast.serving import OnlineRecommender, replay

from tests.serving.helpers import N_ITEMS, random_log, raw_id_checkpoint, small_model, write_events


@pytest.fixture
def checkpoint(tmp_path):
    small_model().save(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_cli_serve_replay(checkpoint, tmp_path, capsys):
    events = write_events(tmp_path / "events.csv", random_log())
    out = tmp_path / "r.json"
    assert main(["serve-replay", str(checkpoint), str(events), "--k", "5", "--json", str(out), "--quiet",
                 "--save", str(tmp_path / "served")]) == 0
    result = json.loads(out.read_text())
    assert result["events"] == 120 and "hit@5" in result and "ndcg@10" in result
    assert set(result["latency_ms"]) == {"recommend", "observe"}
    assert "hit@5" in capsys.readouterr().out
    log = np.array(random_log())
    api = replay(OnlineRecommender(small_model(), 256 << 20), log[:, 0], log[:, 1], log[:, 2], k=5)
    assert (result["hit@5"], result["ndcg@10"]) == (api["hit@5"], api["ndcg@10"])
    # a saved recommender folder resumes: replaying later events continues from the saved states
    later = write_events(tmp_path / "later.csv", [(1, 3, 10_000), (2, 4, 10_001)])
    assert main(["serve-replay", str(tmp_path / "served"), str(later), "--quiet", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["warm_events"] == 2


def test_cli_unknown_item_is_a_one_line_error(checkpoint, tmp_path, capsys):
    events = write_events(tmp_path / "events.csv", [(1, 3, 10), (1, N_ITEMS + 5, 11), (2, 4, 12)])
    assert main(["serve-replay", str(checkpoint), str(events), "--quiet"]) == 2
    assert "does not know" in capsys.readouterr().err
    assert main(["serve-replay", str(checkpoint), str(events), "--quiet", "--skip-unknown",
                 "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["skipped_unknown_items"] == 1


def test_cli_maps_raw_item_ids_with_the_checkpoint_id_map(tmp_path):
    raw = np.array(["pad"] + [f"sku{i}" for i in range(1, N_ITEMS + 1)], dtype=object)
    small_model().save(tmp_path / "ckpt", id_maps={"item_ids": raw})
    events = write_events(tmp_path / "events.csv", [("alice", "sku3", 10), ("bob", "sku40", 11),
                                                    ("alice", "sku7", 12)])
    assert main(["serve-replay", str(tmp_path / "ckpt"), str(events), "--quiet", "--save",
                 str(tmp_path / "served")]) == 0
    back = OnlineRecommender.load(tmp_path / "served")
    alice = back.user_keys.keys_for(["alice"])                  # text ids keep their keys across save/load
    assert sorted(back.history.items[back.history.rows_of(alice)][0, :2].tolist()) == [3, 7]


def test_cli_serve_replay_with_test_time_alignment(checkpoint, tmp_path, capsys):
    events = write_events(tmp_path / "events.csv", random_log(60))
    out = tmp_path / "r.json"
    settings = ["ttt_lr=0.5", "ttt_mu_time=1", "ttt_mu_state=1"]
    assert main(["serve-replay", str(checkpoint), str(events), "--quiet", "--json", str(out), "--ttt", *settings]) == 0
    result = json.loads(out.read_text())
    assert result["stats"]["adapted"] == result["warm_events"] > 0          # every warm request had its own step
    log = np.array(random_log(60))
    rec = OnlineRecommender(small_model(), 256 << 20, ttt={"ttt_lr": 0.5, "ttt_mu_time": 1.0, "ttt_mu_state": 1.0})
    api = replay(rec, log[:, 0], log[:, 1], log[:, 2])
    assert (result["hit@10"], result["ndcg@10"]) == (api["hit@10"], api["ndcg@10"])
    assert main(["serve-replay", str(checkpoint), str(events), "--quiet", "--ttt", "lr=0.1"]) == 2
    assert "not test-time settings" in capsys.readouterr().err


def test_cli_serve_replay_through_redis_gives_the_in_process_metrics(checkpoint, tmp_path, redis_url, capsys):
    events = write_events(tmp_path / "events.csv", random_log())
    here, shared = tmp_path / "here.json", tmp_path / "shared.json"
    assert main(["serve-replay", str(checkpoint), str(events), "--quiet", "--json", str(here)]) == 0
    assert main(["serve-replay", str(checkpoint), str(events), "--quiet", "--json", str(shared),
                 "--store", redis_url, "--store-prefix", "replay"]) == 0
    a, b = json.loads(here.read_text()), json.loads(shared.read_text())
    assert (a["hit@10"], a["ndcg@10"], a["warm_events"]) == (b["hit@10"], b["ndcg@10"], b["warm_events"])
    assert b["stats"]["store"]["prefix"] == "replay" and "CAS retries" in capsys.readouterr().out


def test_cli_serve_replay_store_errors_are_one_line(checkpoint, tmp_path, redis_binary, capsys):
    from redis_server import free_loopback_port
    events = write_events(tmp_path / "events.csv", random_log(10))
    assert main(["serve-replay", str(checkpoint), str(events), "--quiet", "--store", "http://x"]) == 2
    assert "not a Redis URL" in capsys.readouterr().err
    down = f"redis://127.0.0.1:{free_loopback_port()}/0"
    assert main(["serve-replay", str(checkpoint), str(events), "--quiet", "--store", down]) == 2
    assert f"Redis at {down} did not answer" in capsys.readouterr().err
    assert main(["serve-replay", str(checkpoint), str(events), "--quiet", "--store", down, "--save", "x"]) == 2
    assert "--save writes a folder" in capsys.readouterr().err


def test_cli_text_user_ids_through_redis_keep_their_user_across_processes(tmp_path, redis_url):
    """With --store, text user ids' keys live in Redis: a second serve-replay (another process, in effect) sees
    alice's and bob's events as theirs and carol as a new user — before, text ids were refused with a store."""
    ckpt = raw_id_checkpoint(tmp_path)
    first = write_events(tmp_path / "e1.csv", [("alice", "sku3", 10), ("bob", "sku5", 11), ("alice", "sku7", 12)])
    assert main(["serve-replay", str(ckpt), str(first), "--quiet", "--store", redis_url]) == 0
    second = write_events(tmp_path / "e2.csv", [("carol", "sku3", 20), ("bob", "sku5", 21), ("alice", "sku7", 22)])
    assert main(["serve-replay", str(ckpt), str(second), "--quiet", "--store", redis_url,
                 "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["cold_events"], result["warm_events"]) == (1, 2)


def test_cli_new_text_user_after_a_restart_is_cold(tmp_path, capsys):
    """The issue: a second replay from the saved folder reported the new user's 3 events as "3 warm, 0 cold start"
    — user ids were numbered per file, so carol took over alice's state."""
    ckpt = raw_id_checkpoint(tmp_path)
    first = write_events(tmp_path / "e1.csv", [("alice", "sku3", 10), ("bob", "sku5", 11), ("alice", "sku7", 12)])
    assert main(["serve-replay", str(ckpt), str(first), "--quiet", "--save", str(tmp_path / "saved")]) == 0
    second = write_events(tmp_path / "e2.csv", [("carol", "sku3", 20), ("carol", "sku5", 21), ("carol", "sku7", 22)])
    assert main(["serve-replay", str(tmp_path / "saved"), str(second), "--quiet", "--json", str(tmp_path / "r.json"),
                 "--save", str(tmp_path / "saved")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["cold_events"], result["warm_events"]) == (1, 2)
    assert "3 (2 warm, 1 cold start)" in capsys.readouterr().out
    back = OnlineRecommender.load(tmp_path / "saved")
    assert len(back) == 3 and len(back.user_keys) == 3                      # three users, three keys
    alice = back.history.rows_of(back.user_keys.keys_for(["alice"]))
    assert sorted(back.history.items[alice][0, :2].tolist()) == [3, 7]     # alice's own events, not carol's


def test_cli_serve_replay_in_onnx_runtime_recommends_what_torch_does(checkpoint, tmp_path, capsys):
    """--runtime onnx: the same replay with encode and step in ONNX Runtime (float32 rounding apart, the same hits),
    through Redis too; refused with --ttt and with a saved recommender folder."""
    events = write_events(tmp_path / "events.csv", random_log())
    runs = {}
    for runtime in ("torch", "onnx"):
        out = tmp_path / f"{runtime}.json"
        assert main(["serve-replay", str(checkpoint), str(events), "--quiet", "--json", str(out),
                     "--runtime", runtime, "--save", str(tmp_path / f"served_{runtime}")]) == 0
        runs[runtime] = json.loads(out.read_text())
    assert runs["onnx"]["events"] == runs["torch"]["events"] == 120
    assert runs["onnx"]["hit@10"] == runs["torch"]["hit@10"]
    assert runs["onnx"]["ndcg@10"] == pytest.approx(runs["torch"]["ndcg@10"], abs=1e-6)
    assert json.loads((tmp_path / "served_onnx" / "serving.json").read_text())["runtime"] == "onnx"
    assert main(["serve-replay", str(checkpoint), str(events), "--quiet", "--runtime", "onnx", "--ttt"]) == 2
    assert "--runtime torch" in capsys.readouterr().err
    assert main(["serve-replay", str(tmp_path / "served_onnx"), str(events), "--quiet", "--runtime", "onnx"]) == 2
    assert "resumes with the runtime it was saved with" in capsys.readouterr().err


def test_cli_serve_replay_in_onnx_runtime_through_redis(checkpoint, tmp_path, redis_url):
    events = write_events(tmp_path / "events.csv", random_log())
    here, shared = tmp_path / "here.json", tmp_path / "shared.json"
    assert main(["serve-replay", str(checkpoint), str(events), "--quiet", "--json", str(here)]) == 0
    assert main(["serve-replay", str(checkpoint), str(events), "--quiet", "--json", str(shared), "--runtime", "onnx",
                 "--store", redis_url, "--store-prefix", "replay_onnx"]) == 0
    a, b = json.loads(here.read_text()), json.loads(shared.read_text())
    assert (a["hit@10"], a["warm_events"]) == (b["hit@10"], b["warm_events"])
    assert b["ndcg@10"] == pytest.approx(a["ndcg@10"], abs=1e-6)
