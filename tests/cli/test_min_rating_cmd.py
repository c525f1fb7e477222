"""Issue 14 item 7 on the command line: --min-rating in every command that reads data (data stats, train, evaluate,
serve-replay, tune), recorded with the model, carried by evaluate; configs/paper_ml1m.yaml (the paper's ML-1M
protocol) loads and trains one tiny epoch on a generated ratings.dat."""
import json
import re
from collections import Counter
from importlib.resources import files

import numpy as np
import pytest

from t2arec_fast.cli import main
from t2arec_fast.config import Config, ConfigError

PAPER_ML1M = files("t2arec_fast").joinpath("configs/paper_ml1m.yaml")
TINY = ["--d", "8", "--d_state", "4", "--epochs", "1", "--batch_size", "64", "--eval_batch_size", "64",
        "--ttt_batch_size", "64", "--progress", "false", "--device", "cpu"]
N_USERS, N_ITEMS = 48, 24


def _ratings_dat(path):
    """user::item::rating::timestamp, ML-1M's layout. Users 1-40 rate 20 items mostly 3-5; users 41-48 rate 20
    items mostly 1-2, so the threshold (3) leaves them under 10 events and the 10-core then removes them."""
    rng = np.random.default_rng(0)
    lines = []
    for user in range(1, N_USERS + 1):
        picky = user > 40
        items = rng.choice(np.arange(1, N_ITEMS + 1), size=20, replace=False)
        ratings = rng.choice([1, 2, 3] if picky else [2, 3, 4, 5], size=20, p=[0.5, 0.4, 0.1] if picky else
                             [0.1, 0.3, 0.3, 0.3])
        for k, (item, rating) in enumerate(zip(items, ratings)):
            lines.append(f"{user}::{item}::{rating}::{978_300_000 + user * 10_000 + k * 37}\n")
    path.write_text("".join(lines))
    return lines


def _expected(lines, min_rating, k):
    """The recipe by hand: keep rating ≥ min_rating, then drop users and items under k events until stable."""
    rows = [tuple(int(v) for v in line.split("::")) for line in lines]
    rows = [r for r in rows if r[2] >= min_rating]
    while True:
        users, items = Counter(r[0] for r in rows), Counter(r[1] for r in rows)
        kept = [r for r in rows if users[r[0]] >= k and items[r[1]] >= k]
        if len(kept) == len(rows):
            return rows
        rows = kept


@pytest.fixture(scope="module")
def ml1m(tmp_path_factory):
    """A ratings.dat, and a model trained on it with configs/paper_ml1m.yaml (tiny sizes on the command line)."""
    folder = tmp_path_factory.mktemp("ml1m")
    lines = _ratings_dat(folder / "ratings.dat")
    assert main(["train", str(folder / "ratings.dat"), "--config", str(PAPER_ML1M), "--out", str(folder / "run"),
                 *TINY]) == 0
    return folder, lines


def test_paper_ml1m_config_holds_the_papers_protocol():
    cfg = Config.from_sources(PAPER_ML1M)
    assert (cfg.data.min_rating, cfg.data.min_count, cfg.data.max_len, cfg.data.split) == (3.0, 10, 200, "loo")
    assert cfg.data.mask_history is False and cfg.data.n_segments == 4
    assert (cfg.model.model, cfg.model.d, cfg.model.d_state, cfg.model.conv_kernel, cfg.model.n_layers,
            cfg.model.expand, cfg.model.dropout) == ("t2arec", 64, 32, 4, 1, 1, 0.2)
    assert (cfg.train.lr, cfg.train.patience) == (1e-3, 10)


def test_paper_ml1m_trains_on_a_ratings_dat_with_the_threshold_before_the_10_core(ml1m):
    folder, lines = ml1m
    results = json.loads((folder / "run" / "results.json").read_text())
    kept = _expected(lines, 3, 10)
    assert results["n_users"] == len({r[0] for r in kept}) and results["n_items"] == len({r[1] for r in kept})
    assert results["n_users"] == 40                          # the 8 users of low ratings are gone
    assert results["epochs"] == 1 and np.isfinite(results["test"]["ndcg@10"])
    assert results["config"]["data"]["min_rating"] == 3.0 and results["config"]["data"]["max_len"] == 200
    saved = json.loads((folder / "run" / "best" / "config.json").read_text())
    assert '"min_rating": 3.0' in json.dumps(saved)          # the checkpoint records the threshold it was trained with


def test_evaluate_carries_the_models_threshold_and_takes_another(ml1m, tmp_path):
    folder, lines = ml1m
    out = tmp_path / "e.json"
    assert main(["evaluate", str(folder / "run"), str(folder / "ratings.dat"), "--no-ttt", "--json", str(out)]) == 0
    carried = json.loads(out.read_text())
    assert carried["config"]["data"]["min_rating"] == 3.0 and carried["test"]["n_users"] == 40
    assert main(["evaluate", str(folder / "run"), str(folder / "ratings.dat"), "--no-ttt", "--min-rating", "4",
                 "--unknown-ids", "drop", "--json", str(out)]) == 0
    stricter = json.loads(out.read_text())
    assert stricter["config"]["data"]["min_rating"] == 4.0
    assert stricter["test"]["n_users"] == len({r[0] for r in _expected(lines, 4, 10)})
    assert main(["evaluate", str(folder / "run"), str(folder / "ratings.dat"), "--no-ttt", "--min_rating=none",
                 "--min-count", "1", "--unknown-ids", "drop", "--json", str(out)]) == 0       # every rating again
    cleared = json.loads(out.read_text())
    assert cleared["config"]["data"]["min_rating"] is None
    assert cleared["unknown_ids"]["users"] == N_USERS - 40       # the low raters are read, and unknown to the model
    assert stricter["unknown_ids"]["users"] == carried["unknown_ids"]["users"] == 0


def test_data_stats_reports_what_the_threshold_dropped(ml1m, capsys, tmp_path):
    folder, lines = ml1m
    assert main(["data", "stats", str(folder / "ratings.dat"), "--min-rating", "3", "--json",
                 str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    below = sum(int(line.split("::")[2]) < 3 for line in lines)
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["rows_dropped_by_min_rating"] == below and stats["min_rating"] == 3.0
    assert stats["interactions"] == len(_expected(lines, 3, 10)) and stats["rows_read"] == len(lines)
    assert re.search(rf"rows dropped by min rating +{below:,}\n", out) and re.search(r"min rating +3\n", out)
    assert main(["data", "stats", str(folder / "ratings.dat")]) == 0          # default: no rating lines at all
    assert "min rating" not in capsys.readouterr().out


def test_serve_replay_replays_only_rated_events(ml1m, tmp_path):
    folder, lines = ml1m
    out = tmp_path / "r.json"
    assert main(["serve-replay", str(folder / "run"), str(folder / "ratings.dat"), "--min-rating", "4",
                 "--unknown-ids", "drop", "--quiet", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rated = sum(int(line.split("::")[2]) >= 4 for line in lines)          # no k-core on a replayed log
    assert result["events"] + result["skipped_unknown_items"] == rated


def test_tune_reads_with_the_threshold(ml1m, tmp_path):
    pytest.importorskip("optuna")
    folder, _ = ml1m
    space = tmp_path / "space.yaml"
    space.write_text("dropout: [0.0, 0.1]\n")
    assert main(["tune", str(folder / "ratings.dat"), "--space", str(space), "--trials", "1", "--min-rating", "4",
                 "--min-count", "5", "--json", str(tmp_path / "t.json"), "--max_len", "20", "--ttt=false",
                 *TINY]) == 0
    best = json.loads((tmp_path / "t.json").read_text())["best"]
    assert best["config"]["data"]["min_rating"] == 4.0 and best["config"]["data"]["min_count"] == 5


@pytest.mark.parametrize("argv, fragment", [
    (["data", "stats", "{csv}", "--min-rating", "3"], "no rating column"),
    (["data", "stats", "{dat}", "--min-rating", "nan"], "min_rating=nan is out of range"),
    (["serve-replay", "{run}", "{csv}", "--min-rating", "3", "--quiet"], "no rating column"),
    (["train", "{csv}", "--out", "{tmp}/x", "--min-rating", "3"], "no rating column"),
])
def test_bad_threshold_use_is_one_line_exit_2(ml1m, tmp_path, capsys, argv, fragment):
    folder, _ = ml1m
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\n1,2,3\n")
    argv = [a.format(csv=tmp_path / "log.csv", dat=folder / "ratings.dat", run=folder / "run", tmp=tmp_path)
            for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_non_number_threshold_is_an_argparse_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["data", "stats", str(tmp_path), "--min-rating", "high"])
    assert exc.value.code == 2 and "--min-rating" in capsys.readouterr().err


def test_config_round_trip(tmp_path):
    cfg = Config.from_sources(args=["--min-rating", "3.5", "--columns", "user=u,item=i,timestamp=t,rating=r"])
    assert cfg.data.min_rating == 3.5 and cfg.data.columns == "user=u,item=i,timestamp=t,rating=r"
    cfg.save_yaml(tmp_path / "c.yaml")
    again = Config.from_sources(tmp_path / "c.yaml")
    assert again.to_dict() == cfg.to_dict()
    assert Config().data.min_rating is None                              # default: keep every interaction
    assert Config.from_sources(overrides={"min_rating": 4}).data.min_rating == 4.0
    assert Config.from_sources(args=["--min_rating=none"]).data.min_rating is None
    with pytest.raises(ConfigError, match="min_rating=inf is out of range"):
        Config.from_sources(overrides={"min_rating": float("inf")})
    with pytest.raises(ConfigError, match="min_rating='high' is not a valid float"):
        Config.from_sources(args=["--min_rating=high"])
