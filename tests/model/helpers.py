"""A tiny float64 T2ARec and a left-padded batch for the model tests."""
import torch

from t2arec_fast.model import T2ARec


def tiny_model(dtype=torch.float64, n_layers=1, **options):
    torch.manual_seed(0)
    model = T2ARec(40, d=16, d_state=8, n_layers=n_layers, dropout=0.0, **options).to(dtype).eval()
    model.set_time_margin(0.5)
    return model


def random_batch(batch=3, length=9, n_items=40, pads=(4, 2, 0), seed=1):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, n_items + 1, (batch, length), generator=g)
    times = 1_700_000_000 + torch.cumsum(torch.randint(0, 20_000, (batch, length), generator=g), 1)
    for row, p in enumerate(pads[:batch]):
        items[row, :p] = 0
        times[row, :p] = 0
    target_times = times[:, -1] + 3_600
    return items, times, target_times
