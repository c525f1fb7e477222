"""Shared test set-up. Without a GPU, Triton kernels run in Triton's interpreter: the variable must be set before
triton is first imported."""
import contextlib
import os
import shutil
import tempfile
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
def tiny_dataset():
    """The tiny synthetic set of helpers.SYNTHETIC (80 users), loaded once."""
    from helpers import SYNTHETIC
    from t2arec_fast.data import load_dataset
    return load_dataset(SYNTHETIC, min_count=1, verbose=False)


@pytest.fixture(scope="session")
def device():
    return "cuda" if _HAS_CUDA else "cpu"


# -- a real redis-server for the Redis state-store tests (tests/redis_server.py) -----------------------------------
@contextlib.contextmanager
def _redis_dir(fallback: Path):
    """The server's folder: in /dev/shm (tmpfs) where there is one, else `fallback`. The AOF is still written and
    fsynced before every reply (appendfsync always); on tmpfs the fsync costs nothing, on this machine's disk
    ~5-10 ms per write, which would make the tests slow without testing more: they kill processes, not the machine,
    and what a killed process wrote is in the page cache either way."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        folder = Path(tempfile.mkdtemp(prefix="t2arec-redis-", dir=shm))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        yield fallback


def _start_redis(directory):
    from redis_server import RedisServer
    for attempt in range(3):               # a free port can be taken between choosing it and binding it
        server = RedisServer(directory)
        try:
            return server.start()
        except RuntimeError:
            if attempt == 2:
                raise


@pytest.fixture(scope="session")
def redis_binary():
    """The redis-server binary. Missing: skip, except where T2AREC_REQUIRE_REDIS=1 (.ci/run) makes it a failure."""
    from redis_server import redis_server_binary
    binary = redis_server_binary()
    if binary is None:
        message = "redis-server is not installed (`make redis-server` installs the OS package; `make test` does)"
        if os.environ.get("T2AREC_REQUIRE_REDIS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture(scope="session")
def _shared_redis(redis_binary, tmp_path_factory):
    with _redis_dir(tmp_path_factory.mktemp("redis-shared")) as folder:
        server = _start_redis(folder)
        yield server
        server.stop()


@pytest.fixture
def redis_url(_shared_redis):
    """URL of a server shared by the session's tests, emptied before each test."""
    import redis
    with redis.Redis.from_url(_shared_redis.url) as client:
        client.flushall()
    return _shared_redis.url


@pytest.fixture
def redis_server(redis_binary, tmp_path):
    """A server of the test's own (tests that SIGKILL and restart it): `.kill()`, `.start()`, `.url`."""
    with _redis_dir(tmp_path / "redis") as folder:
        server = _start_redis(folder)
        yield server
        server.kill()
