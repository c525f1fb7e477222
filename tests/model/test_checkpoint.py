"""model/checkpoint.py: a saved model (safetensors + JSON) loads back bit-identical; a damaged one is a clear error."""
import numpy as np
import pytest
import torch

from t2arec_fast.errors import InputError
from t2arec_fast.model import T2ARec, load_model

from .helpers import random_batch, tiny_model


def test_checkpoint_round_trip_gives_identical_scores(tmp_path):
    model = tiny_model(torch.float32, n_layers=2, state_norm="relative")
    items, times, _ = random_batch()
    model.save(tmp_path / "ckpt", id_maps={"item_ids": np.array(["pad", "a", "b"], dtype=object)})
    loaded = T2ARec.load(tmp_path / "ckpt")
    assert loaded.config == model.config
    assert float(loaded.time_margin) == 0.5
    assert torch.equal(loaded.scores(items, times), model.scores(items, times))
    assert list(loaded.id_maps["item_ids"]) == ["pad", "a", "b"]
    assert torch.equal(load_model(tmp_path / "ckpt").scores(items, times), model.scores(items, times))


def test_corrupted_checkpoint_is_a_clear_error(tmp_path):
    model = tiny_model(torch.float32)
    model.save(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="model.safetensors"):
        T2ARec.load(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="config.json"):
        T2ARec.load(tmp_path / "nothing")


def test_a_checkpoint_saved_with_the_old_key_names_loads(tmp_path):
    """config.json written before the renames: n_blocks beside SASRec's n_layers, step_transform."""
    import json
    model = tiny_model(torch.float32)                       # one layer; SASRec's old default beside it was 2
    model.save(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "config.json"
    meta = json.loads(path.read_text())
    cfg = meta["config"]
    cfg["n_blocks"] = cfg.pop("n_layers")
    cfg["n_layers"] = 2
    cfg["step_transform"] = cfg.pop("dt_transform")
    path.write_text(json.dumps(meta))
    with pytest.warns(FutureWarning, match="'n_blocks' is now 'n_layers'"):
        loaded = load_model(tmp_path / "ckpt")
    assert loaded.config == model.config and len(loaded.layers) == 1
    items, times, _ = random_batch()
    assert torch.equal(loaded.scores(items, times), model.scores(items, times))


@pytest.mark.parametrize("edit, message", [
    (lambda meta: [meta], "not a checkpoint config"),
    (lambda meta: {k: v for k, v in meta.items() if k != "config"}, "not a checkpoint config"),
    (lambda meta: meta | {"config": meta["config"] | {"bogus_option": 1}}, "bogus_option"),
    (lambda meta: meta | {"config": {k: v for k, v in meta["config"].items() if k != "n_items"}}, "n_items"),
])
def test_a_config_json_that_does_not_describe_a_model_is_a_clear_error(tmp_path, edit, message):
    """Valid JSON that is not what model.save writes: an InputError naming config.json, never a KeyError/TypeError."""
    import json
    tiny_model(torch.float32).save(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "config.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    with pytest.raises(InputError, match=message) as info:
        load_model(tmp_path / "ckpt")
    assert "config.json" in str(info.value)


def test_weights_fingerprint_is_the_one_identity_of_a_model(tmp_path):
    """One content hash (model.checkpoint.weights_fingerprint): equal for the same checkpoint loaded again (dtypes
    included: a buffer cast to float32 is another model), different
    for one changed weight or one changed config value; the ONNX label and the Redis model version are built on it."""
    from t2arec_fast.export.metadata import model_version
    from t2arec_fast.model.checkpoint import weights_fingerprint
    from t2arec_fast.serving.shared import STEP_ARITHMETIC, model_fingerprint
    model = tiny_model(torch.float32)
    model.save(tmp_path / "ckpt")
    loaded = T2ARec.load(tmp_path / "ckpt")
    assert weights_fingerprint(T2ARec.load(tmp_path / "ckpt")) == weights_fingerprint(loaded)
    assert model_version(model) == weights_fingerprint(model)[:16]
    assert model_fingerprint(model) == f"T2ARec:{weights_fingerprint(model)}:step{STEP_ARITHMETIC}"
    with torch.no_grad():
        next(loaded.parameters()).view(-1)[0] += 1e-6
    assert weights_fingerprint(loaded) != weights_fingerprint(T2ARec.load(tmp_path / "ckpt"))
    other = tiny_model(torch.float32)
    other.load_state_dict(model.state_dict())
    assert weights_fingerprint(other) == weights_fingerprint(model)
    other.config.dropout = model.config.dropout + 0.1        # same weights, another setting
    assert weights_fingerprint(other) != weights_fingerprint(model)
