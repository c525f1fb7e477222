"""Device tier (serving/device_tier.py): states in slot pools advanced in place by the pooled one-step kernel.

The pooled kernel is the Triton one (run in Triton's interpreter on CPU, natively on CUDA) — model backend
"triton" — and the tier must answer exactly as the CPU path (OnlineRecommender) across eviction to the host cache
and re-admission, with pools far smaller than the number of users."""
import copy

import numpy as np
import pytest
import torch

from t2arec_fast.errors import InputError
from t2arec_fast.serving import OnlineRecommender
from t2arec_fast.serving.device_tier import DeviceRecommender

from .helpers import assert_close_scores, interleaved, random_histories, served_scores, small_model

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _calls(histories, max_users, **options):
    """interleaved() calls, each split into calls of at most `max_users` distinct users (a user's events stay in
    one call, in order), so that every call fits the pools."""
    for users, items, times in interleaved(histories, **options):
        distinct = list(dict.fromkeys(users.tolist()))
        for start in range(0, len(distinct), max_users):
            part = np.isin(users, distinct[start:start + max_users])
            yield users[part], items[part], times[part]


def _pair(slots, **options):
    model = small_model()
    kernel_model = copy.deepcopy(model)
    kernel_model.set_backend("triton")                   # the pooled Triton step kernel (interpreter on CPU)
    cpu = OnlineRecommender(model, **options)
    dev = DeviceRecommender(kernel_model, slots=slots, device=DEVICE, **options)
    return cpu, dev


def test_equals_the_cpu_path_across_eviction_and_readmission():
    histories = random_histories(12, 9, seed=4)
    cpu, dev = _pair(slots=3)
    for users, items, times in _calls(histories, 3, per_call=3):
        cpu.observe(users, items, times)
        dev.observe(users, items, times)
        some = np.unique(users)[:2]
        assert_close_scores(served_scores(dev, some), served_scores(cpu, some))     # interleaved requests
    everyone = np.array(sorted(histories), np.int64)
    assert_close_scores(served_scores(dev, everyone[:3]), served_scores(cpu, everyone[:3]))
    for chunk in (everyone[3:6], everyone[6:9], everyone[9:], everyone[:3]):      # re-admitted from the host tier
        assert_close_scores(served_scores(dev, chunk), served_scores(cpu, chunk))
    assert dev.stats()["device_resident"] == 3


def test_evicted_states_resume_exactly_and_never_rebuild_from_the_ring():
    """Host tier large enough: an evicted user's state comes back from the cache (no re-encode of its ring)."""
    histories = random_histories(8, 6, seed=7)
    cpu, dev = _pair(slots=2, capacity_bytes=1 << 20)
    for users, items, times in _calls(histories, 2, per_call=2, seed=3):
        cpu.observe(users, items, times)
        dev.observe(users, items, times)
    everyone = np.array(sorted(histories), np.int64)
    for u in everyone:
        assert_close_scores(served_scores(dev, [u]), served_scores(cpu, [u]))
    assert dev.stats()["rebuilds"] == 0


def test_top_k_on_the_device_with_exclude_seen_and_duplicates():
    histories = random_histories(5, 7, seed=2)
    cpu, dev = _pair(slots=8)
    for users, items, times in _calls(histories, 8):
        cpu.observe(users, items, times)
        dev.observe(users, items, times)
    users = np.array(sorted(histories) * 2, np.int64)                              # every user twice
    got_items, got_scores = dev.recommend(users, k=5, exclude_seen=True)
    want_items, want_scores = cpu.recommend(users, k=5, exclude_seen=True)
    np.testing.assert_array_equal(got_items, want_items)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-6)


def test_save_flushes_the_pools_and_loads_as_the_cpu_recommender(tmp_path):
    histories = random_histories(6, 5, seed=5)
    cpu, dev = _pair(slots=4)
    for users, items, times in _calls(histories, 4):
        cpu.observe(users, items, times)
        dev.observe(users, items, times)
    dev.save(tmp_path / "served")
    again = OnlineRecommender.load(tmp_path / "served")
    everyone = np.array(sorted(histories), np.int64)
    assert_close_scores(served_scores(again, everyone), served_scores(cpu, everyone))
    assert again.stats()["rebuilds"] == 0


def test_a_call_larger_than_the_pools_is_refused_and_stores_nothing():
    cpu, dev = _pair(slots=2)
    users = np.array([1, 2, 3], np.int64)
    with pytest.raises(InputError, match="more distinct users than the 2 device slots"):
        dev.observe(users, np.array([1, 2, 3]), np.array([10, 10, 10]))
    assert len(dev) == 0 and len(dev.pool) == 0
    dev.observe(users[:2], np.array([1, 2]), np.array([10, 10]))                 # the pools still work
    cpu.observe(users[:2], np.array([1, 2]), np.array([10, 10]))
    assert_close_scores(served_scores(dev, users[:2]), served_scores(cpu, users[:2]))


def test_unsupported_options_are_refused():
    with pytest.raises(InputError, match="ttt"):
        DeviceRecommender(small_model(), slots=4, ttt={"ttt_lr": 0.1})
    with pytest.raises(InputError, match="slots must be"):
        DeviceRecommender(small_model(), slots=0)
    with pytest.raises(InputError, match="runtime must be 'torch', got 'onnx'"):
        DeviceRecommender(small_model(), slots=4, runtime="onnx")


def test_forget_with_bad_ids_frees_nothing():
    _, dev = _pair(slots=4)
    dev.observe(np.array([1], np.int64), np.array([3]), np.array([10]))
    with pytest.raises(InputError, match="user_ids must be integers"):
        dev.forget(np.array([1.0]))
    assert len(dev.pool) == 1 and 1 in dev
    assert dev.forget([1]) == 1 and len(dev.pool) == 0 and 1 not in dev
