"""bench/studies/cl_views.py: the share of augmented views that leave a training row unchanged, counted right."""
import numpy as np

from bench.studies.cl_views import view_stats
from t2arec_fast.data import leave_one_out, train_batches


def test_a_near_certain_drop_leaves_exactly_the_one_input_rows_unchanged(tiny_dataset):
    split = leave_one_out(tiny_dataset)
    lengths = np.concatenate([(b.items != 0).sum(1) for b in train_batches(split, 20, 256, shuffle=False)])
    stats = view_stats(split, 20, crop=1.0, drop=0.999999, reorder=0.0)
    assert stats["rows"] == len(lengths)
    # every event but the kept last one goes, so only rows of one input come back as they were
    assert stats["share_views_unchanged"] == stats["share_rows_both_unchanged"] == np.mean(lengths == 1)


def test_views_of_long_rows_change(tiny_dataset):
    stats = view_stats(leave_one_out(tiny_dataset), 20, crop=0.5, drop=0.0, reorder=0.0)
    assert 0 <= stats["share_rows_both_unchanged"] <= stats["share_views_unchanged"] < 0.5
