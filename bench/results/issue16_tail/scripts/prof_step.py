"""The model step alone at batch 64 (bench_shared_state's model, zero states): median ms, the step on views of a
flat state buffer as serving runs it (step + copy back, against step_in_place), and a torch.profiler table of its
operators. Run from the repository root: PYTHONPATH=. python bench/results/issue16_tail/scripts/prof_step.py"""
import time, numpy as np, torch
from bench.bench_shared_state import model, N_ITEMS
torch.set_num_threads(1)
m = model()
B = 64
states = m.empty_states(B)
items = torch.randint(1, N_ITEMS + 1, (B,))
def t(f, n=300):
    for _ in range(20): f()
    ts = []
    for _ in range(n):
        a = time.perf_counter(); f(); ts.append(time.perf_counter() - a)
    return np.median(ts) * 1e3
with torch.inference_mode():
    print("step ms", t(lambda: m.step(items, states)))
    o, _ = m.step(items, states)
    print("scores ms", t(lambda: m.item_emb.weight @ o.T))
    from t2arec_fast.serving.layout import StateLayout
    layout = StateLayout.for_model(m)
    flat = torch.randn(B, layout.size, generator=torch.Generator().manual_seed(0)) * 0.1
    views, o_view = layout.views(flat)

    def step_and_copy_back():
        o_new, new = m.step(items, views)
        for view, state in zip(views, new):
            view.conv.copy_(state.conv)
            view.ssm.copy_(state.ssm)
        o_view.copy_(o_new)

    print("on a flat buffer's views: step + copy back ms", t(step_and_copy_back),
          "| step_in_place ms", t(lambda: o_view.copy_(m.step_in_place(items, views))))
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(50): m.step(items, states)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_stack=True) as prof:
        for _ in range(20): m.step(items, states)
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=8))
    print(prof.key_averages(group_by_stack_n=6).table(sort_by="self_cpu_time_total", row_limit=3))
