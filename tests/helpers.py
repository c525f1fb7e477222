"""Tiny models and data for the training / adaptation / evaluation / CLI tests (seconds each on 2 shared cores)."""
import torch

from t2arec_fast.config import Config, ModelConfig

TINY_MODEL = dict(d=16, d_state=8, dropout=0.0)
SYNTHETIC = "synthetic:n_users=80,n_items=60,n_clusters=4,mean_events=25,min_events=12,seed=1"


def tiny_config(model="t2arec", **overrides) -> Config:
    """A config that trains in about a second: tiny model, tiny synthetic data, no progress bar."""
    values = dict(dataset=SYNTHETIC, min_count=1, max_len=20, model=model, epochs=2, batch_size=32,
                  eval_batch_size=64, ttt_batch_size=32, progress=False, mu_time=0.1, mu_state=0.01,
                  device="cpu", **TINY_MODEL)
    values.update(overrides)
    return Config.from_sources(overrides=values)


def tiny_model(model="t2arec", n_items=30, max_len=12, seed=0, **kw):
    from t2arec_fast.model import build_model
    torch.manual_seed(seed)
    m = build_model(ModelConfig(model=model, **{**TINY_MODEL, **kw}), n_items, max_len)
    if hasattr(m, "set_time_margin"):
        m.set_time_margin(0.5)
    return m.eval()


class TorchBatch:
    def __init__(self, items, times, target_times, targets):
        self.items, self.times, self.target_times, self.targets = items, times, target_times, targets


def random_batch(n_items=30, batch=6, length=12, seed=0) -> TorchBatch:
    """A LEFT-padded batch with increasing timestamps (gaps from seconds to days)."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, n_items + 1, (batch, length), generator=g)
    gaps = torch.randint(1, 200_000, (batch, length), generator=g)
    times = 1_700_000_000 + gaps.cumsum(1)
    lengths = torch.randint(3, length + 1, (batch,), generator=g)
    lengths[0] = length
    pad = torch.arange(length)[None, :] < (length - lengths)[:, None]
    items, times = items.masked_fill(pad, 0), times.masked_fill(pad, 0)
    target_times = times[:, -1] + torch.randint(1, 300_000, (batch,), generator=g)
    targets = torch.randint(1, n_items + 1, (batch,), generator=g)
    return TorchBatch(items, times, target_times, targets)
