import pytest
import torch

from t2arec_fast.serving import OnlineRecommender

from .helpers import small_model


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    """Serving runs tiny tensors: with several intra-op threads on a busy machine each op waits for the slowest
    thread (measured: GELU on a (1, 256) tensor 20 ms instead of 10 µs). Serving processes use one thread too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def rec():
    """A small recommender that has seen users 1 (items 3, 5) and 2 (item 4), ring length 8."""
    r = OnlineRecommender(small_model(), capacity_bytes=4 << 20, history_len=8)
    r.observe([1, 2, 1], [3, 4, 5], [100, 200, 300])
    return r
