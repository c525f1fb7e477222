"""Small builders for data tests: write files, build datasets from (user, item, time) triples."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from t2arec_fast.data import Interactions, build_dataset


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def udata(rows) -> str:
    """u.data text from (user, item, timestamp) rows (rating 3)."""
    return "".join(f"{u}\t{i}\t3\t{t}\n" for u, i, t in rows)


def dataset(rows, min_count: int = 1):
    """A SequenceDataset from (user, item, timestamp) rows, in the given (file) order."""
    users, items, times = (np.array(col, dtype=np.int64) for col in zip(*rows))
    return build_dataset(Interactions(users, items, times, name="test", format="test"), min_count=min_count)


def sequences(ds) -> dict:
    """{raw user id: [(raw item id, timestamp), ...]} for easy comparisons."""
    out = {}
    user_ids, item_ids = ds.user_ids.tolist(), ds.item_ids.tolist()
    for u in range(ds.n_users):
        items, times = ds.sequence(u)
        out[user_ids[u]] = [(item_ids[i], int(t)) for i, t in zip(items.tolist(), times.tolist())]
    return out


ROWS = [  # 3 users, out of order in the file, with a tie (user 1 at t=200: items 30 then 10)
    (2, 10, 500), (1, 20, 100), (1, 30, 200), (3, 20, 50), (1, 10, 200), (2, 20, 400), (3, 30, 60), (2, 30, 300),
    (3, 10, 70),
]
EXPECTED = {
    1: [(20, 100), (30, 200), (10, 200)],
    2: [(30, 300), (20, 400), (10, 500)],
    3: [(20, 50), (30, 60), (10, 70)],
}


def five_users():
    """User 0: 12 events, user 1: 5, user 2: 3, user 3: 2, user 4: 1; item (user+1)*100 + position, time
    1000·user + 10·position (the split and batch tests' data set)."""
    rows = [(u, (u + 1) * 100 + k, 1000 * u + 10 * k) for u, n in enumerate([12, 5, 3, 2, 1]) for k in range(n)]
    return dataset(rows)


def raw_items(ds, ids):
    """Model item ids (0 = padding) as the raw ids of `ds` (0 stays 0)."""
    return np.where(ids > 0, ds.item_ids[ids], 0)
