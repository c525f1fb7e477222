"""Test-time alignment in serving: recommend(at_time=…) with `ttt` gives each user the evaluation path's episode of
one user, leaves the cached state alone, honours the shift gate, and refuses what it cannot do."""
import dataclasses

import numpy as np
import pytest
import torch

from t2arec_fast.adapt import adapted_scores
from t2arec_fast.config import TTTConfig
from t2arec_fast.errors import InputError
from t2arec_fast.serving import OnlineRecommender

from .helpers import N_ITEMS, small_model

# strong enough to move scores visibly in a random model; one user per episode
TTT = TTTConfig(ttt_lr=0.5, ttt_mu_time=1.0, ttt_mu_state=1.0, ttt_params="all", ttt_batch_size=1)
USERS = np.array([11, 22, 33])


def make(ttt=TTT, **kw):
    rec = OnlineRecommender(small_model(n_layers=1), capacity_bytes=4 << 20, history_len=6, ttt=ttt, **kw)
    rng = np.random.default_rng(0)
    for j in range(8):                                  # 8 events each, one minute apart: the ring keeps the last 6
        rec.observe(USERS, rng.integers(1, N_ITEMS + 1, 3), np.full(3, 1_700_000_000 + 60 * j))
    return rec


def episode_of_one_user(rec, user, at_time):
    """The evaluation path: adapt.adapted_scores on a batch holding just this user's ring."""
    items, times = rec.history.recent(rec.history.rows_of(np.array([user])))
    return adapted_scores(rec.model, torch.from_numpy(items), torch.from_numpy(times), torch.tensor([at_time]),
                          TTT).scores[0]


def test_scores_are_the_evaluation_paths_episode_per_user():
    rec = make()
    at = 1_700_000_000 + 60 * 7 + 3600
    items, scores = rec.recommend(USERS, k=5, at_time=at)
    for row, user in enumerate(USERS):
        expected = torch.topk(episode_of_one_user(rec, user, at), 5)
        np.testing.assert_array_equal(items[row], expected.indices.numpy())
        np.testing.assert_allclose(scores[row], expected.values.numpy(), rtol=1e-5, atol=1e-6)
    assert rec.stats()["adapted"] == 3


def test_step_changes_answers_but_not_the_cached_state():
    rec = make()
    plain = rec.recommend(USERS, k=N_ITEMS)
    found, before = rec.cache.get(USERS, rec.version)
    adapted = rec.recommend(USERS, k=N_ITEMS, at_time=1_700_000_000 + 10**6)
    assert not np.allclose(plain[1], adapted[1])
    _, after = rec.cache.get(USERS, rec.version)
    np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(rec.recommend(USERS, k=N_ITEMS)[1], plain[1])     # no at_time: no step


def test_gate_adapts_only_users_after_a_long_pause():
    rec = make(ttt=dataclasses.replace(TTT, ttt_gate=20.0))        # median gap 60 s → gate at 20 min
    plain = rec.recommend(USERS, k=N_ITEMS)
    last = 1_700_000_000 + 60 * 7
    items, scores = rec.recommend(USERS, k=N_ITEMS, at_time=[last + 60, last + 3600, last + 600])
    assert rec.stats()["adapted"] == 1                               # only the user back after an hour
    np.testing.assert_array_equal(scores[[0, 2]], plain[1][[0, 2]])
    assert not np.allclose(scores[1], plain[1][1])


def test_request_before_the_last_event_is_refused():
    rec = make()
    with pytest.raises(InputError, match="before user 22's last event"):
        rec.recommend([11, 22], at_time=[1_700_000_000 + 600, 1_700_000_000])
    assert rec.stats()["adapted"] == 0


def test_bad_settings_are_refused():
    with pytest.raises(InputError, match="unknown settings"):
        make(ttt={"ttt_lr": 0.1, "ttt_learning_rate": 1})
    with pytest.raises(InputError, match="needs runtime='torch'"):
        OnlineRecommender(small_model(), ttt=TTT, runtime="onnx")
    assert make(ttt={"ttt_lr": 0.0}).ttt is None                     # a step that cannot change anything is off


def test_save_and_load_keep_the_setting(tmp_path):
    rec = make()
    at = 1_700_000_000 + 10**5
    expected = rec.recommend(USERS, k=5, at_time=at)
    rec.save(tmp_path / "rec")
    back = OnlineRecommender.load(tmp_path / "rec")
    assert back.ttt == TTT
    got = back.recommend(USERS, k=5, at_time=at)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-5)
