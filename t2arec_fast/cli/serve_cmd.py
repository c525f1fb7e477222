"""`t2arec serve-replay`: replay a time-ordered event log through the online recommender.

    t2arec serve-replay CHECKPOINT EVENTS.csv [--k 10] [--exclude-seen] [--history-len 200] [--capacity-mb 256]
                        [--limit N] [--skip-unknown] [--ttt [KEY=VALUE ...]] [--save DIR] [--threads 1] [--json P]
                        [--quiet] [--store redis://HOST:PORT/DB [--store-prefix P]] [--runtime torch|onnx]

For every event, in timestamp order: recommend for its user first (was the true item in the top-k?), then observe
the event. Reports hit rate@k, NDCG@10 and per-event latency percentiles. All of it is `t2arec_fast.serving.replay`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from t2arec_fast.data.id_maps import UNKNOWN_IDS

from .common import UserError, checkpoint_dir, reader_options, reader_settings, write_json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve-replay", help="replay an event log through the O(1) online recommender (hit rate, NDCG, latency)",
        description="Replay events (CSV user,item,timestamp, or any format `t2arec data` reads) in timestamp order: "
        "for each event recommend for its user BEFORE observing it, then observe it. Reports hit rate@k, NDCG@10 "
        "and latency percentiles of recommend and observe per event.", parents=[reader_options(min_count=False)])
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="model checkpoint folder, a train --out folder (uses best/), or a saved recommender folder "
                        "(serving.json: resumes its states)")
    p.add_argument("events", metavar="EVENTS", help="event log in any format `t2arec data stats` reads (e.g. a CSV "
                   "with a header naming user, item, timestamp); no k-core filter is applied to it")
    p.add_argument("--k", type=int, default=10, help="top-k cut-off for the hit rate (default 10)")
    p.add_argument("--exclude-seen", action="store_true", help="drop items already in the user's history")
    p.add_argument("--history-len", type=int, default=200, help="events kept per user for rebuilds (default 200)")
    p.add_argument("--capacity-mb", type=float, default=256.0, help="state cache budget in MiB (default 256)")
    p.add_argument("--limit", type=int, default=None, help="replay only the first N events (in time order)")
    p.add_argument("--unknown-ids", choices=UNKNOWN_IDS, default="error",
                   help="events whose item the model does not know: stop with an error, or drop them (counted). "
                        "Users are never unknown: a user not seen before starts cold")
    p.add_argument("--skip-unknown", action="store_true", help="the same as --unknown-ids drop")
    p.add_argument("--ttt", nargs="*", metavar="KEY=VALUE", default=None,
                   help="score each request after a per-user test-time step (request time = the event's time); "
                        "settings are TTT config keys, e.g. --ttt ttt_gate=20 ttt_lr=10 ttt_params=ssm")
    p.add_argument("--store", metavar="URL", default=None,
                   help="keep users' states in Redis (redis://host:port/db), shared with other serving processes; "
                        "the state cache becomes the local tier (docs/serving.md, 'Shared state')")
    p.add_argument("--store-prefix", metavar="P", default="t2arec", help="key prefix in Redis (default t2arec)")
    p.add_argument("--save", metavar="DIR", default=None, help="save the recommender here after the replay")
    p.add_argument("--json", metavar="P", default=None, help="write the results JSON here")
    p.add_argument("--threads", type=int, default=1,
                   help="torch (and with --runtime onnx ONNX Runtime) intra-op threads (default 1: tiny per-event "
                        "tensors gain nothing from more)")
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                   help="encode and step in PyTorch (default) or in ONNX Runtime, the graphs exported from the "
                        "checkpoint at start (docs/serving.md: faster per call; no --ttt)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_serve_replay)


def _serve_replay(args) -> int:
    from t2arec_fast.serving import replay
    import torch
    if args.k < 1:
        raise UserError(f"--k must be ≥ 1, got {args.k}")
    if args.threads < 1:
        raise UserError(f"--threads must be ≥ 1, got {args.threads}")
    if args.store and args.save:
        raise UserError("--save writes a folder with the states; with --store they live in Redis: drop one")
    if args.runtime == "onnx" and args.ttt is not None:
        raise UserError("--ttt differentiates the model, which ONNX Runtime cannot: use --runtime torch")
    torch.set_num_threads(args.threads)
    recommender = _open_recommender(Path(args.checkpoint), args)
    if args.ttt is not None:
        recommender.set_ttt(_ttt_config(args.ttt))
    drop = args.skip_unknown or args.unknown_ids == "drop"
    users, items, times, skipped = _read_events(args.events, recommender, drop, reader_settings(args))
    if args.limit is not None:
        first = np.argsort(times, kind="stable")[:max(args.limit, 0)]
        first.sort()
        users, items, times = users[first], items[first], times[first]
    result = replay(recommender, users, items, times, k=args.k, exclude_seen=args.exclude_seen,
                    progress=not args.quiet)
    result.update(checkpoint=str(args.checkpoint), events_file=str(args.events), skipped_unknown_items=skipped)
    _print_summary(result)
    if args.save:
        recommender.save(args.save)
    write_json(args.json, result)
    return 0


def _ttt_config(pairs: list):
    from t2arec_fast.config import Config, TTTConfig
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UserError(f"--ttt takes KEY=VALUE settings, got {pair!r}")
        settings[key] = value
    fields = {f for f in TTTConfig.__dataclass_fields__}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise UserError(f"--ttt: {unknown} are not test-time settings; known: {sorted(fields)}")
    return Config.from_sources(overrides=settings).ttt


def _open_recommender(path: Path, args):
    from t2arec_fast.model import load_model
    from t2arec_fast.serving import OnlineRecommender
    if (path / "serving.json").is_file():
        if args.store:
            raise UserError(f"{path} is a saved recommender with its own states; --store needs a model checkpoint")
        if args.runtime != "torch":
            raise UserError(f"{path} is a saved recommender: it resumes with the runtime it was saved with")
        return OnlineRecommender.load(path)
    model = load_model(checkpoint_dir(path))      # OnlineRecommender refuses a model without a one-step update
    store = None
    if args.store:
        from t2arec_fast.serving.redis_store import RedisStateStore
        store = RedisStateStore(args.store, prefix=args.store_prefix, history_len=args.history_len)
    return OnlineRecommender(model, capacity_bytes=int(args.capacity_mb * (1 << 20)), history_len=args.history_len,
                             store=store, runtime=args.runtime, onnx_threads=args.threads)


def _read_events(path, recommender, drop_unknown: bool, settings: dict):
    """→ user keys int64, model item ids int64, timestamps int64, number of dropped events. Raw ids go through the
    recommender's maps: items through the model's saved item map, users through its saved user keys (a user never
    seen before gets a new key: a cold start, also after a save and load)."""
    from t2arec_fast.data.id_maps import ItemIdMap
    from t2arec_fast.data.preprocess import ids_as_numpy
    from t2arec_fast.data.readers import read_interactions
    raw = read_interactions(path, **settings)
    raw_items = items = ids_as_numpy(raw.items)
    times = np.asarray(raw.timestamps, np.int64)
    if ItemIdMap.from_model(recommender.model) is not None:
        items = recommender.item_ids_of(items)
    elif items.dtype.kind in "iu":            # a checkpoint without id maps: the file holds model ids
        items = np.where((items >= 1) & (items <= recommender.n_items), items, 0).astype(np.int64)
    else:
        raise UserError(f"{path}: item ids are not integers and the checkpoint has no item id map (id_maps.npz)")
    unknown = items == 0
    if unknown.any() and not drop_unknown:
        first = int(np.flatnonzero(unknown)[0])
        raise UserError(f"{path}: event {first + 1} has item {raw_items[first]!r}, which the model "
                        f"does not know ({int(unknown.sum())} such events; --unknown-ids drop skips them)")
    keep = ~unknown
    users = recommender.user_keys_of(ids_as_numpy(raw.users)[keep])
    return users, items[keep], times[keep], int(unknown.sum())


def _print_summary(r: dict) -> None:
    k = r["k"]
    lat = r["latency_ms"]
    rows = [("events", f"{r['events']:,} ({r['warm_events']:,} warm, {r['cold_events']:,} cold start)"),
            (f"hit@{k}", f"{r[f'hit@{k}']:.4f}  (warm {r[f'warm_hit@{k}']:.4f})"),
            ("ndcg@10", f"{r['ndcg@10']:.4f}  (warm {r['warm_ndcg@10']:.4f})"),
            ("recommend ms p50 / p99", f"{lat['recommend']['p50']:.3f} / {lat['recommend']['p99']:.3f}"),
            ("observe ms p50 / p99", f"{lat['observe']['p50']:.3f} / {lat['observe']['p99']:.3f}"),
            ("events/s (one at a time)", f"{r['events_per_s']:,.0f}"),
            ("state rebuilds", f"{r['stats']['rebuilds']:,}")]
    if "cas_retries" in r["stats"]:
        rows.append(("Redis round trips / CAS retries",
                     f"{r['stats']['round_trips']:,} / {r['stats']['cas_retries']:,}"))
    if r.get("skipped_unknown_items"):
        rows.append(("skipped (unknown item)", f"{r['skipped_unknown_items']:,}"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
