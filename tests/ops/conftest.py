"""Fixtures for the op tests. Triton kernels run in Triton's interpreter on CPU (tests/conftest.py sets
TRITON_INTERPRET=1 before triton is imported) and natively on CUDA when a GPU is present.

Cases marked `slow` (the large L=200 shapes, minutes in the interpreter) run only with T2AREC_RUN_SLOW=1;
bench/gpu_check.sh sets it, where they take seconds.
"""
import os

import pytest
import torch

RUN_SLOW = os.environ.get("T2AREC_RUN_SLOW", "0") == "1"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: large interpreter cases; run with T2AREC_RUN_SLOW=1")


def pytest_collection_modifyitems(config, items):
    if RUN_SLOW:
        return
    skip = pytest.mark.skip(reason="slow in the interpreter; set T2AREC_RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def poison_kernel_outputs(monkeypatch):
    """Every buffer a Triton launcher allocates starts as NaN, so an element a kernel never writes fails."""
    from t2arec_fast.triton_kernels import _common
    monkeypatch.setattr(_common, "POISON_OUTPUTS", True)


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)
