"""model.protocol.StepModel: what serving needs from a model. T2ARec and the ONNX step model implement it; SASRec,
which has no recurrent state, does not — serving, serve-replay and export refuse it by type, with a clear error."""
import pytest
import torch

from t2arec_fast.errors import InputError
from t2arec_fast.model import SASRec, T2ARec
from t2arec_fast.model.block import BlockState
from t2arec_fast.model.protocol import StepModel
from t2arec_fast.serving import OnlineRecommender


def test_t2arec_is_a_step_model_and_sasrec_is_not():
    assert isinstance(T2ARec(20, d=8, d_state=4), StepModel)
    assert not isinstance(SASRec(20, max_len=8, d=8), StepModel)


def test_the_onnx_step_model_is_a_step_model(tmp_path):
    pytest.importorskip("onnxruntime")
    from t2arec_fast.export import export_onnx
    from t2arec_fast.export.runtime import OnnxStepModel
    torch.manual_seed(0)
    model = T2ARec(20, d=8, d_state=4, dropout=0.0).eval()
    export_onnx(model, tmp_path / "onnx", kinds=("encode", "step"))
    onnx_model = OnnxStepModel(model, tmp_path / "onnx")
    assert isinstance(onnx_model, StepModel)
    assert (onnx_model.width, onnx_model.needs_request_time) == (model.width, False)
    items = torch.tensor([[0, 3, 5], [2, 4, 6]])
    o, states = onnx_model.encode(items)
    torch.testing.assert_close(onnx_model.scores_from_state(o, states), model.scores(items), rtol=1e-4, atol=1e-5)


def test_serving_and_export_refuse_sasrec_by_type(tmp_path):
    sasrec = SASRec(20, max_len=8, d=8)
    with pytest.raises(InputError, match="one-step update.*SASRec has none"):
        OnlineRecommender(sasrec)
    pytest.importorskip("onnx")
    from t2arec_fast.export import export_onnx
    with pytest.raises(InputError, match="needs a T2ARec model.*got SASRec"):
        export_onnx(sasrec, tmp_path / "onnx")


def test_serve_replay_refuses_a_sasrec_checkpoint_in_one_line(tmp_path, capsys):
    from t2arec_fast.cli import main
    SASRec(20, max_len=8, d=8).save(tmp_path / "ckpt")
    events = tmp_path / "events.csv"
    events.write_text("user_id,item_id,timestamp\n1,2,10\n")
    assert main(["serve-replay", str(tmp_path / "ckpt"), str(events), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "SASRec has none" in err and "Traceback" not in err


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_step_in_place_writes_the_steps_states_into_views_of_a_flat_buffer(runtime, tmp_path):
    """What serving's _advance calls on views of its (users, size) buffer: the same o and states as step, bit for
    bit, written where the views point; the columns around them (header, other blocks) untouched."""
    from t2arec_fast.serving.layout import StateLayout
    torch.manual_seed(0)
    model = T2ARec(20, d=8, d_state=4, n_layers=2, dropout=0.0).eval()
    if runtime == "onnx":
        pytest.importorskip("onnxruntime")
        from t2arec_fast.export import export_onnx
        from t2arec_fast.export.runtime import OnnxStepModel
        export_onnx(model, tmp_path / "onnx", kinds=("encode", "step"))
        model = OnnxStepModel(model, tmp_path / "onnx")
    layout = StateLayout.for_model(model)
    flat = torch.randn(5, layout.size) * 0.3
    before = flat.clone()
    views, _ = layout.views(flat)
    items = torch.tensor([3, 1, 20, 7, 7])
    with torch.inference_mode():
        o_want, want = model.step(items, [BlockState(v.conv.clone(), v.ssm.clone()) for v in views])
        o = model.step_in_place(items, views)
    assert torch.equal(o, o_want)
    for view, new in zip(views, want):
        assert torch.equal(view.conv, new.conv) and torch.equal(view.ssm, new.ssm)
    touched = flat != before
    body = torch.zeros_like(touched)                     # the views' own columns
    for v in layout.views(body)[0]:
        v.conv.fill_(True)
        v.ssm.fill_(True)
    assert not touched[~body].any()
