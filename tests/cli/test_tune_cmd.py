"""`t2arec tune` end to end on tiny synthetic data: a study resumed from its sqlite storage by a second invocation,
and a stored study that does not match this invocation refused with a one-line error."""
import json

import pytest

pytest.importorskip("optuna")

from t2arec_fast.cli import main          # noqa: E402

from helpers import SYNTHETIC             # noqa: E402

TINY = ["--min_count=1", "--max_len=20", "--d=16", "--d_state=8", "--batch_size=32", "--eval_batch_size=64",
        "--epochs=2", "--device=cpu"]


def write(path, text):
    path.write_text(text)
    return path


def test_cli_study_resumes_from_storage(tmp_path, capsys):
    """Two invocations of one sqlite study: the second continues the first up to --trials finished trials."""
    space = write(tmp_path / "space.yaml", "lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n"
                  "dropout: [0.0, 0.2]\n")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    common = ["tune", SYNTHETIC, "--model", "sasrec", "--space", str(space), "--storage", storage, *TINY]
    assert main([*common, "--trials", "1", "--json", str(tmp_path / "a.json")]) == 0
    first = json.loads((tmp_path / "a.json").read_text())
    assert first["trials"]["complete"] == 1 and first["best"]["trial"] == 0

    assert main([*common, "--trials", "2", "--json", str(tmp_path / "b.json"),
                 "--save-config", str(tmp_path / "best.yaml")]) == 0
    second = json.loads((tmp_path / "b.json").read_text())
    assert [t["number"] for t in second["all_trials"]] == [0, 1]              # one more trial, not two
    assert second["all_trials"][0] == first["all_trials"][0]                  # the first process's trial kept
    assert second["all_trials"][0]["params"] != second["all_trials"][1]["params"]   # no replayed draw
    best = second["best"]
    assert best["value"] == max(t["value"] for t in second["all_trials"])
    assert best["config"]["train"]["lr"] == best["params"]["lr"] and best["config"]["model"]["model"] == "sasrec"
    assert set(second["all_trials"][1]["valid_by_epoch"]) == {"1", "2"}       # every epoch reported
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("trial ")]
    assert len(lines) == 2 and "[2/2]" in lines[1] and "valid ndcg@10" in lines[1]
    assert "lr: " in (tmp_path / "best.yaml").read_text()

    assert main([*common, "--trials", "2"]) == 0                              # already done: no new trial
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("trial ")]


@pytest.mark.parametrize("second, message", [
    ([a for a in TINY if a != "--epochs=2"] + ["--epochs=3"], "epochs: 2 → 3"),   # trials would not compare
    (TINY + ["--lr=0.01"], "both searched"),
])
def test_cli_refuses_mismatched_study(tmp_path, capsys, second, message):
    space = write(tmp_path / "space.yaml", "lr: [0.001, 0.002]\n")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    common = ["tune", SYNTHETIC, "--model", "sasrec", "--space", str(space), "--storage", storage, "--trials", "1"]
    assert main([*common, *TINY]) == 0
    capsys.readouterr()
    assert main([*common, *second]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
