"""serving/layout.py: the flat state vector's header (int64 counts and times as exact byte words) and its views."""
import numpy as np
import torch

from t2arec_fast.serving import HEADER_WORDS, LAYOUT_VERSION, OnlineRecommender, int64_to_words, words_to_int64

from .helpers import INT64_TIMES, small_model


def test_int64_words_encoding():
    values = np.array([0, -1, 1, np.iinfo(np.int64).min, np.iinfo(np.int64).max, *INT64_TIMES], np.int64)
    words = int64_to_words(values)
    assert words.dtype == np.float32 and np.isfinite(words).all() and words.max() <= 255
    np.testing.assert_array_equal(words_to_int64(words), values)
    np.testing.assert_array_equal(words_to_int64(words.astype(np.float16)), values)   # a float16 cache keeps them


def test_layout_header_and_views():
    model = small_model()
    rec = OnlineRecommender(model, capacity_bytes=4 << 20)
    rec.observe([5], [9], [123])
    _, flat = rec.cache.get([5], rec.version)
    assert flat[0, 0] == LAYOUT_VERSION and flat[0, 1] == HEADER_WORDS
    states, o = rec.layout.views(torch.from_numpy(flat))
    o_ref, states_ref = model.encode(torch.tensor([[9]]), torch.tensor([[123]]))
    torch.testing.assert_close(o, o_ref, rtol=1e-5, atol=1e-6)
    for got, want in zip(states, states_ref):
        torch.testing.assert_close(got.conv, want.conv, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got.ssm, want.ssm, rtol=1e-5, atol=1e-6)
    expect = 20 + sum(s.conv[0].numel() + s.ssm[0].numel() for s in states_ref) + model.config.d
    assert rec.layout.size == expect == rec.cache.state_size
