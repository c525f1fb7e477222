"""Shared test set-up. Without a GPU, Triton kernels run in Triton's interpreter: the variable must be set before
triton is first imported."""
import os
from pathlib import Path

import pytest

try:
    import torch
    _HAS_CUDA = torch.cuda.is_available()
except Exception:  # pragma: no cover
    _HAS_CUDA = False
if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
try:  # tiny tensors: a second intra-op thread only adds contention on small CI machines
    torch.set_num_threads(1)
except Exception:  # pragma: no cover
    pass

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets():
    """The real data sets beside the checkout (../shared/datasets); tests using them skip when it is absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"real data sets not found at {SHARED_DATASETS} (a fresh clone has no ../shared)")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def device():
    return "cuda" if _HAS_CUDA else "cpu"
