"""`t2arec train` / `t2arec evaluate` end to end on a tiny synthetic set, and bad input → exit 2, no traceback."""
import json

import pytest

from t2arec_fast.cli import main

from helpers import SYNTHETIC

TINY = ["--min_count=1", "--max_len=20", "--d=16", "--d_state=8", "--batch_size=64", "--eval_batch_size=64",
        "--ttt_batch_size=40", "--progress=false", "--device=cpu"]
METRICS = [f"{m}@{k}" for m in ("recall", "mrr", "ndcg") for k in (5, 10, 20)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    rc = main(["train", SYNTHETIC, "--model", "t2arec", "--out", str(out / "run"), "--json", str(out / "train.json"),
               "--epochs=2", "--mu_time=0.1", "--mu_state=0.01", *TINY])
    assert rc == 0
    return out


def test_train_writes_results(trained, capsys):
    results = json.loads((trained / "train.json").read_text())
    assert json.loads((trained / "run" / "results.json").read_text()) == results
    for part in ("valid", "test", "test_ttt", "valid_ttt"):
        assert set(METRICS) <= set(results[part]), part
        assert len(results[part]["ndcg@10_by_segment"]) == 4
    assert results["test_ttt"]["ttt"]["batch_size"] == 40 and results["test_ttt"]["ttt"]["user_order_sha1"]
    assert results["test"]["mask_history"] is False
    assert results["epochs"] == 2 and results["seconds_per_epoch"] > 0
    assert results["config"]["train"]["epochs"] == 2 and results["config"]["model"]["d"] == 16
    assert (trained / "run" / "best" / "model.safetensors").is_file()
    assert (trained / "run" / "last" / "trainer.pt").is_file()


def test_evaluate_checkpoint(trained, tmp_path, capsys):
    path = tmp_path / "eval.json"
    rc = main(["evaluate", str(trained / "run"), SYNTHETIC, "--json", str(path), "--ttt_lr=0.01",
               "--mask_history=true"])
    assert rc == 0
    results = json.loads(path.read_text())
    assert set(METRICS) <= set(results["test"]) and set(METRICS) <= set(results["test_ttt"])
    assert results["test"]["mask_history"] is True and results["test_ttt"]["ttt"]["ttt_lr"] == 0.01
    assert results["max_len"] == 20                     # carried from the checkpoint
    printed = capsys.readouterr().out
    assert "test_ttt" in printed and "NDCG@10 by request gap" in printed      # the printed table
    assert "batch=40, users by request time; each episode adapts on the events before" in printed
    assert sum(n for _, n in results["test"]["ndcg@10_by_request_gap"].values()) == results["test"]["n_users"]

    rc = main(["evaluate", str(trained / "run" / "best"), SYNTHETIC, "--no-ttt", "--json", str(path)])
    assert rc == 0 and "test_ttt" not in json.loads(path.read_text())


@pytest.mark.parametrize("argv, message", [
    (["train", SYNTHETIC, "--out", "{tmp}/x", "--epoch=3"], "did you mean 'epochs'"),
    (["train", SYNTHETIC, "--out", "{tmp}/x", "--epochs=three"], "epochs"),
    (["train", "{tmp}/no_such_file.csv", "--out", "{tmp}/x", "--epochs=1"], "no_such_file"),
    (["evaluate", "{tmp}", SYNTHETIC], "not a checkpoint"),
    (["evaluate", "{run}", SYNTHETIC, "--d=8"], "cannot be changed"),
    (["evaluate", "{run}", "synthetic:n_users=30,n_items=20,min_events=12"], "items"),
])
def test_bad_input_exits_2_without_traceback(trained, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, run=trained / "run") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_model_choice_is_an_argparse_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["train", SYNTHETIC, "--model", "gru4rec", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_every_command_module_is_registered_and_none_is_missing():
    """The CLI lists its command modules explicitly; a module that is absent or not listed is a bug, not a skip."""
    from pathlib import Path

    import t2arec_fast.cli as cli
    on_disk = {p.stem for p in Path(cli.__file__).parent.glob("*_cmd.py")}
    assert on_disk == set(cli.COMMAND_MODULES)
    commands = cli.command_parsers(cli.build_parser())
    assert {"train", "evaluate", "export", "serve-replay", "demo"} <= set(commands)


def test_no_training_target_is_refused_before_training(tmp_path, capsys):
    """Issue 13, item 7: every user has 2 events, so leave-one-out leaves no training or validation target. train
    used to exit 0 with `valid NDCG@10 nan`, claim a best/ it never wrote and write a bare NaN into results.json."""
    rows = "".join(f"{u}\t{i}\t3\t{1_600_000_000 + 60 * k}\n" for u in range(5) for k, i in enumerate([1, 2]))
    (tmp_path / "u.data").write_text(rows)
    out = tmp_path / "run"
    assert main(["train", str(tmp_path / "u.data"), "--out", str(out), "--epochs=1", "--min_count=1",
                 "--progress=false", "--device=cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert ("no user has a training target or a validation target: of 5 users (history lengths 2-2 events after "
            "min_count=1), 0 have training targets, 0 a validation target and 5 a test target") in err
    assert not out.exists()                                  # refused up front: nothing written


def test_train_names_only_a_checkpoint_it_wrote(tmp_path, capsys, monkeypatch):
    """A run whose validation score is never finite writes no best/: train says so and exits 1."""
    import t2arec_fast.train as train
    monkeypatch.setattr(train, "_validate", lambda *a, **k: (float("nan"), {}))
    out = tmp_path / "run"
    rc = main(["train", SYNTHETIC, "--out", str(out), "--epochs=1", "--ttt=false", *TINY])
    captured = capsys.readouterr()
    assert rc == 1 and not (out / "best").exists() and "checkpoint " not in captured.out
    assert "no checkpoint written" in captured.err and json.loads((out / "results.json").read_text())


# -- issue 13, item 10: evaluate reads data through the checkpoint's id maps -------------------------------------------
@pytest.fixture(scope="module")
def trained_on_file(tmp_path_factory):
    """A model trained on a CSV copy of the synthetic set whose movie ids are sparse numbers (10, 20, ...)."""
    from t2arec_fast.data import load_dataset
    folder = tmp_path_factory.mktemp("renamed")
    ds = load_dataset(SYNTHETIC, min_count=1, verbose=False)
    rows = [(int(ds.user_ids[u]), int(ds.item_ids[i]) * 10, int(t))
            for u in range(ds.n_users) for i, t in zip(*ds.sequence(u))]
    (folder / "ratings.csv").write_text("userId,movieId,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    assert main(["train", str(folder / "ratings.csv"), "--out", str(folder / "run"), "--epochs", "2", "--ttt=false",
                 *TINY]) == 0
    return folder, rows


def _evaluate_ndcg(capsys, run, data, *options):
    path = run.parent / "eval.json"
    assert main(["evaluate", str(run), str(data), "--no-ttt", "--json", str(path), *options]) == 0, capsys.readouterr()
    return json.loads(path.read_text())["test"]["ndcg@10"]


def test_evaluate_maps_ids_through_the_checkpoint_and_never_renumbers(trained_on_file, capsys):
    """Renaming the first movie (10 → 99999) shifted every other id by one: evaluate silently scored other movies
    (NDCG@10 0.1875 instead of 0.2649 in the issue). Now the same file in any form gives the trained model's
    number, an unknown id is refused by default, and --unknown-ids drop equals the file without those events."""
    folder, rows = trained_on_file
    run = folder / "run"
    trained = json.loads((run / "results.json").read_text())["test"]["ndcg@10"]
    assert _evaluate_ndcg(capsys, run, folder / "ratings.csv") == pytest.approx(trained, abs=1e-12)
    shuffled = sorted(rows, key=lambda r: (r[1] * 7919) % 101)                 # other row order, RecBole format
    (folder / "copy.inter").write_text("item_id:token\tuser_id:token\ttimestamp:float\n"
                                       + "".join(f"{i}\t{u}\t{t}\n" for u, i, t in shuffled))
    assert _evaluate_ndcg(capsys, run, folder / "copy.inter") == pytest.approx(trained, abs=1e-12)

    first = min(i for _, i, _ in rows)
    renamed = [(u, 99999 if i == first else i, t) for u, i, t in rows]
    (folder / "renamed.csv").write_text("userId,movieId,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in renamed))
    assert main(["evaluate", str(run), str(folder / "renamed.csv"), "--no-ttt"]) == 2
    err = capsys.readouterr().err
    n_renamed = sum(i == first for _, i, _ in rows)
    assert f"{n_renamed} events have ids the model was not trained on: 1 unknown items (99999)" in err
    assert "--unknown-ids drop" in err
    without = [r for r in rows if r[1] != first]
    (folder / "without.csv").write_text("userId,movieId,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in without))
    dropped = _evaluate_ndcg(capsys, run, folder / "renamed.csv", "--unknown-ids", "drop")
    assert json.loads((run.parent / "eval.json").read_text())["unknown_ids"] == {
        "policy": "drop", "items": 1, "users": 0, "events_dropped": n_renamed}
    assert f"dropped {n_renamed} events" in capsys.readouterr().err
    assert dropped == pytest.approx(_evaluate_ndcg(capsys, run, folder / "without.csv"), abs=1e-12)
