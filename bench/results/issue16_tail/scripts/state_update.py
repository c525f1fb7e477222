"""The one-step state update at batch 64, d_state 32, d 64 (float32, one thread): the broadcast product and sum
against exp(dt·A)·h then an in-place rank-1 baddbmm_ (ops.state_step_reference), median µs of 1,000 calls, and
whether the two give the same floats. Run: python bench/results/issue16_tail/scripts/state_update.py"""
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


print(f"broadcast {median_us(broadcast):.1f} µs, rank-1 baddbmm_ {median_us(rank1_bmm):.1f} µs, "
      f"same floats: {torch.equal(broadcast(), rank1_bmm())}")
