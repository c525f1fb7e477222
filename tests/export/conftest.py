"""Shared set-up for the ONNX export tests: a small float32 model exported once per session."""
import pytest

from .helpers import small_model


@pytest.fixture(scope="session")
def model():
    return small_model()


@pytest.fixture(scope="session")
def exported(model, tmp_path_factory):
    """(directory, export summary) of all graph kinds at the default opset."""
    from t2arec_fast.export import export_onnx
    out = tmp_path_factory.mktemp("onnx")
    return out, export_onnx(model, out)


@pytest.fixture(scope="session")
def encoder(exported):
    from t2arec_fast.export import OnnxEncoder
    return OnnxEncoder(exported[0], providers=["CPUExecutionProvider"])
