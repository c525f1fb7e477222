"""Online serving: one more event per user costs one O(1) recurrent step, not a re-encode of the history.

    rec = OnlineRecommender(model, capacity_bytes=512 << 20, history_len=200)
    rec.observe(user_ids, item_ids, timestamps)          # batched; int64 arrays (numpy or torch) of equal length
    items, scores = rec.recommend(user_ids, k=10)        # (n, k) int64 model item ids, (n, k) float32
    items, scores = rec.observe_and_recommend(user_ids, item_ids, timestamps, k=10)   # both as one step
    rec.save("serve_dir"); rec = OnlineRecommender.load("serve_dir")

Ids: users are any int64 keys; items are the MODEL's contiguous ids 1..n_items (0 is padding). Raw ids from a data
file are mapped at the boundary with `t2arec_fast.data.ItemIdMap` (built from a checkpoint's id_maps["item_ids"]).

Where a user's data lives (docs/serving.md has the full picture):
  * the LRU `StateCache` (C++, byte budget) holds one flat float32 vector per user — see `StateLayout`: a small
    header, every block's conv window and SSM state, and the last output o_n. Tagged with the model version.
  * the `HistoryStore` (numpy, not evicted) holds each user's last `history_len` (item, time) events, the event
    count and the last timestamp. A state that is missing (evicted) or stale (another model version, or out of step
    with the store) is rebuilt by encoding the ring with the full-sequence encoder; it is never served stale.

The one-step update is the model's own (`model.step_in_place`: `model.step` writing into serving's state buffers) —
the same module as the full-sequence encoder — so serving has no copy of the model's maths. Not thread-parallel:
one lock serialises the public methods.

Tip: tiny tensors gain nothing from intra-op threads and a busy core makes every parallel op wait, so a serving
process should run `torch.set_num_threads(1)` (bench/bench_serving.py does).

One concern per module:
  layout.py       StateLayout: the flat per-user state vector the cache stores (header codec, block states, o_n)
  history.py      HistoryStore: per-user rings of recent events, what an evicted or stale state is rebuilt from
  events.py       input checks and the grouping of one observe() call's events into batched steps
  recommender.py  OnlineRecommender: observe / recommend / observe_and_recommend / swap_model / save / load
  folder.py       writing a saved folder as a whole (temporary sibling folder, then renames)
  replay.py       replay(): offline replay of an event log, as `t2arec serve-replay` runs it
  device_tier.py  DeviceRecommender: hot users' states in device slot pools advanced in place by the pooled
                  one-step kernel, evicted to and re-admitted from the cache above (docs/serving.md, "Device tier")
  redis_store.py  RedisStateStore: users' states, counts and rings in Redis, shared by serving processes (needs
                  redis-py: extra "redis"; imported on use)
  shared.py       the Redis tier behind OnlineRecommender(store=...), with this process's cache as the local tier
"""
from __future__ import annotations

from .history import HistoryStore
from .layout import HEADER_WORDS, LAYOUT_VERSION, StateLayout, int64_to_words, words_to_int64
from .device_tier import DeviceRecommender
from .recommender import RUNTIMES, OnlineRecommender
from .replay import replay

__all__ = ["OnlineRecommender", "DeviceRecommender", "replay", "StateLayout", "HistoryStore", "LAYOUT_VERSION", "HEADER_WORDS",
           "RUNTIMES", "int64_to_words", "words_to_int64"]
