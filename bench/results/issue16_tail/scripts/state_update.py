"""The one-step state update at batch 64, d_state 32, d 64 (float32, one thread): the broadcast product and sum
against a rank-1 baddbmm onto exp(dt·A)·h, out of place (ops.state_step_reference) and in place, median µs of
1,000 calls, and whether they give the same floats. Run: python bench/results/issue16_tail/scripts/state_update.py"""
import time

import torch

torch.set_num_threads(1)
b, n, d = 64, 32, 64
g = torch.Generator().manual_seed(0)
h, x, B, C = (torch.randn(*s, generator=g) for s in ((b, n, d), (b, d), (b, n), (b, n)))
dt, A = torch.rand(b, generator=g), torch.tensor(-0.5)


def broadcast():
    return torch.exp(dt * A)[:, None, None] * h + (dt[:, None] * B)[:, :, None] * x[:, None, :]


def rank1_bmm():
    return torch.baddbmm(h * torch.exp(dt * A)[:, None, None], (dt[:, None] * B)[:, :, None], x[:, None, :])


def rank1_bmm_in_place():
    h_new = h * torch.exp(dt * A)[:, None, None]
    return h_new.baddbmm_((dt[:, None] * B)[:, :, None], x[:, None, :])


def median_us(f, n_calls=1000):
    for _ in range(50):
        f()
    times = []
    for _ in range(n_calls):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return sorted(times)[n_calls // 2] * 1e6


print(f"broadcast {median_us(broadcast):.1f} µs, rank-1 baddbmm {median_us(rank1_bmm):.1f} µs, in place "
      f"{median_us(rank1_bmm_in_place):.1f} µs; same floats: {torch.equal(broadcast(), rank1_bmm())}, "
      f"{torch.equal(broadcast(), rank1_bmm_in_place())}")
