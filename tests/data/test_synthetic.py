"""The synthetic generator: deterministic, realistic in time, and its shift ground truth is right."""
import numpy as np
import pytest

from t2arec_fast.data import DataError, leave_one_out, load_dataset
from t2arec_fast.data.synthetic import START, baseline_check, generate

HOUR, DAY = 3600, 86400


@pytest.fixture(scope="module")
def ds():
    return generate(n_users=400, n_items=400, n_clusters=10, seed=7)


def _gaps_before(ds):
    """(n_interactions,) seconds since the user's previous event (-1 for each user's first event)."""
    gaps = np.diff(ds.timestamps, prepend=0)
    gaps[ds.offsets[:-1]] = -1
    return gaps


def test_same_seed_same_data_other_seed_other_data(ds):
    again = generate(n_users=400, n_items=400, n_clusters=10, seed=7)
    for name in ("offsets", "items", "timestamps", "user_ids", "item_ids"):
        assert np.array_equal(getattr(ds, name), getattr(again, name))
    assert all(np.array_equal(a, b) for a, b in zip(ds.shift_times, again.shift_times))
    other = generate(n_users=400, n_items=400, n_clusters=10, seed=8)
    assert not np.array_equal(ds.timestamps[:100], other.timestamps[:100])


def test_registered_as_a_data_set_spec():
    ds = load_dataset("synthetic:n_users=150,n_items=200,seed=3", min_count=1, verbose=False)
    direct = generate(n_users=150, n_items=200, seed=3)
    assert np.array_equal(ds.items, direct.items) and ds.format == "synthetic"
    with pytest.raises(DataError, match="n_userz"):
        load_dataset("synthetic:n_userz=5", verbose=False)
    with pytest.raises(DataError, match="expected a int"):
        load_dataset("synthetic:n_users=many", verbose=False)


def test_shift_times_are_the_first_events_of_a_new_interest(ds):
    after_shift, cluster = ds.extras["after_shift"], ds.extras["cluster"]
    for u in range(ds.n_users):
        lo, hi = ds.offsets[u], ds.offsets[u + 1]
        assert np.array_equal(ds.shift_times[u], ds.timestamps[lo:hi][after_shift[lo:hi]])
        changed = np.r_[False, cluster[lo + 1:hi] != cluster[lo:hi - 1]]
        assert np.array_equal(changed, after_shift[lo:hi])               # the interest moves exactly there


def test_shifts_follow_long_breaks(ds):
    gaps, shifted = _gaps_before(ds), ds.extras["after_shift"]
    inner = gaps >= 0
    long_gap = gaps >= DAY
    assert np.mean(long_gap[shifted]) > 0.85                              # shifts come after a break ...
    assert np.mean(shifted[inner & long_gap]) > 0.6                       # ... and most breaks bring one
    assert np.mean(shifted[inner & ~long_gap]) < 0.02


def test_many_test_events_come_right_after_a_shift(ds):
    last = leave_one_out(ds).test.stops
    assert 0.4 < ds.extras["after_shift"][last].mean() < 0.75


@pytest.mark.parametrize("test_share", [0.0, 1.0])
def test_validation_targets_can_follow_a_shift_too(test_share):
    ds = generate(n_users=200, n_items=300, n_clusters=10, seed=3, valid_after_shift=1.0, test_after_shift=test_share)
    split, flags = leave_one_out(ds), ds.extras["after_shift"]
    assert flags[split.valid.stops].all()                       # every validation target opens a new interest
    assert flags[split.test.stops].all() == bool(test_share)    # the test target too, or it continues that session
    gaps = _gaps_before(ds)
    assert (gaps[split.valid.stops] > 12 * HOUR).all()          # after a break, as the generator's shifts are


def test_default_data_are_those_every_published_synthetic_number_was_measured_on():
    """A fingerprint taken before `valid_after_shift` existed: new generator options must not change old data."""
    import hashlib
    d = generate(n_users=50, seed=5)
    assert hashlib.sha1(d.items.tobytes() + d.timestamps.tobytes()).hexdigest() == \
        "76b130802067cdfed124f9d1c48d26cf0e9cc995"


def test_realistic_times_sessions_and_popularity(ds):
    t = ds.timestamps
    assert t.min() >= START and t.max() < START + 2 * 365 * DAY
    hours = (t % DAY) // HOUR
    assert np.mean((hours >= 2) & (hours < 6)) < 0.03                    # quiet nights: a daily cycle
    assert np.mean((hours >= 18) & (hours < 22)) > 0.2
    gaps = _gaps_before(ds)
    gaps = gaps[gaps >= 0]
    assert np.median(gaps) < 10 * 60 and np.quantile(gaps, 0.95) > 2 * DAY   # bursts, and heavy-tailed breaks
    counts = np.sort(np.bincount(ds.items)[1:])[::-1]
    assert counts[:len(counts) // 10].sum() > 3 * counts[-len(counts) // 10:].sum() * 2   # skewed popularity
    assert ds.lengths.min() >= 20 and ds.default_max_len == 50


def test_a_time_blind_baseline_loses_measurably(ds):
    report = baseline_check(ds)
    assert report["last_session"]["hr_after_shift"] < 0.1 < report["last_session"]["hr_no_shift"]
    assert report["gap_aware"]["hr_all"] > report["last_session"]["hr_all"] + 0.02
    assert report["oracle"]["hr_all"] > report["gap_aware"]["hr_all"] > report["popular"]["hr_all"]
