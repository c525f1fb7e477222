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
    commands = cli.build_parser()._subparsers._group_actions[0].choices
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
