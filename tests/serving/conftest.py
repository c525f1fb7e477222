import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    """Serving runs tiny tensors: with several intra-op threads on a busy machine each op waits for the slowest
    thread (measured: GELU on a (1, 256) tensor 20 ms instead of 10 µs). Serving processes use one thread too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
