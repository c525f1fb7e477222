"""Helpers for the serving tests (and tests/cli/test_serve_cmd.py): a small random T2ARec, random event streams,
event-log files, and the reference answer (the full-sequence encoder over each user's events)."""
import numpy as np
import torch

from t2arec_fast.model import T2ARec

N_ITEMS = 40


def small_model(seed: int = 0, n_layers: int = 2) -> T2ARec:
    torch.manual_seed(seed)
    return T2ARec(N_ITEMS, d=16, d_state=8, n_layers=n_layers).eval()


def random_histories(n_users: int, max_len: int, seed: int = 0, t0: int = 1_700_000_000):
    """{user id: (items int64, times int64 non-decreasing)} with lengths 1..max_len; user ids are sparse."""
    rng = np.random.default_rng(seed)
    out = {}
    for u in rng.choice(10**9, n_users, replace=False):
        n = int(rng.integers(1, max_len + 1))
        items = rng.integers(1, N_ITEMS + 1, n)
        times = t0 + np.cumsum(rng.integers(0, 5000, n))
        out[int(u)] = (items.astype(np.int64), times.astype(np.int64))
    return out


def interleaved(histories, per_call: int = 3, seed: int = 1):
    """Split all events into observe() calls: each call takes the next 1..per_call events of a random subset of
    users, so a user often has several events in one call and calls interleave users."""
    rng = np.random.default_rng(seed)
    cursor = {u: 0 for u in histories}
    while any(cursor[u] < len(histories[u][0]) for u in histories):
        users, items, times = [], [], []
        for u, (it, ts) in histories.items():
            if cursor[u] >= len(it) or rng.random() < 0.3:
                continue
            take = int(rng.integers(1, per_call + 1))
            for j in range(cursor[u], min(cursor[u] + take, len(it))):
                users.append(u), items.append(it[j]), times.append(ts[j])
            cursor[u] = min(cursor[u] + take, len(it))
        if users:
            perm = _keep_user_order_shuffle(np.array(users), rng)
            yield np.array(users)[perm], np.array(items)[perm], np.array(times)[perm]


def _keep_user_order_shuffle(users, rng):
    """A permutation that mixes users but keeps each user's events in their original relative order."""
    keys = rng.random(len(users))
    perm = np.argsort(keys)
    for u in np.unique(users):                     # re-sort each user's positions so its order is unchanged
        at = np.flatnonzero(users[perm] == u)
        perm[at] = np.sort(perm[at])
    return perm


@torch.inference_mode()
def reference_scores(model, histories, users, last: int = None, request_times=None):
    """Full-sequence scores (n, n_items + 1) of each user's events (only the last `last` if given); request_times
    (n,) int64 for a model that scores at the request time."""
    seqs = [(histories[u][0][-last:], histories[u][1][-last:]) if last else histories[u] for u in users]
    L = max(len(s[0]) for s in seqs)
    items = torch.zeros(len(seqs), L, dtype=torch.int64)
    times = torch.zeros(len(seqs), L, dtype=torch.int64)
    for r, (it, ts) in enumerate(seqs):
        items[r, L - len(it):] = torch.from_numpy(it)
        times[r, L - len(ts):] = torch.from_numpy(ts)
    if request_times is not None:
        request_times = torch.as_tensor(np.asarray(request_times, np.int64))
    return model.scores(items, times, request_times).numpy()


def served_scores(rec, users, at_time=None):
    """Every item's served score (n, n_items + 1) via recommend(k = n_items); column 0 = −inf like model.scores."""
    items, scores = rec.recommend(np.asarray(users, np.int64), k=rec.n_items, at_time=at_time)
    full = np.full((len(users), rec.n_items + 1), -np.inf, np.float32)
    np.put_along_axis(full, items, scores, axis=1)
    return full


def assert_close_scores(got, want, rtol=1e-5):
    """Relative to each row's largest |score| (the padding column excluded)."""
    got, want = got[:, 1:], want[:, 1:]
    scale = np.abs(want).max(axis=1, keepdims=True)
    err = np.abs(got - want) / scale
    assert err.max() <= rtol, f"max relative error {err.max():.3g} > {rtol}"


def write_events(path, rows, header="user,item,timestamp"):
    """An event-log CSV at `path` of (user, item, timestamp) rows."""
    path.write_text(header + "\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    return path


def random_log(n=120, seed=0):
    """n events of 8 users (ids 1..8) over model item ids, 7 s apart."""
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(1, 9)), int(rng.integers(1, N_ITEMS + 1)), 1_000 + 7 * e) for e in range(n)]


def raw_id_checkpoint(tmp_path):
    """A small_model() checkpoint at tmp_path/ckpt whose item id map names items sku1..sku40 (users alice, bob)."""
    raw = np.array(["pad"] + [f"sku{i}" for i in range(1, N_ITEMS + 1)], dtype=object)
    small_model().save(tmp_path / "ckpt", id_maps={"item_ids": raw, "user_ids": np.array(["alice", "bob"])})
    return tmp_path / "ckpt"


# unix times that a careless encoding breaks: the 2038 boundary, low words that are float32 NaN patterns if
# bit-cast, values beyond float64's exact integers
INT64_TIMES = [2**31 - 1, 2**31, 2**31 + 5, 0x7FC00000, 0xFF800001, 2**40 + 1, 2**53 + 1, 2**62 + 3]
