"""t2arec_fast: T2ARec (state-space sequential recommender with test-time alignment), fast on GPU and CPU.

Heavy parts are imported lazily so that `import t2arec_fast` stays quick.
"""
from ._version import __version__

_LAZY = {
    "T2ARec": "t2arec_fast.model",
    "SASRec": "t2arec_fast.model",
    "Config": "t2arec_fast.config",
    "load_dataset": "t2arec_fast.data",
    "StateCache": "t2arec_fast.cache",
    "OnlineRecommender": "t2arec_fast.serving",
    "export_onnx": "t2arec_fast.export",
    "OnnxEncoder": "t2arec_fast.export",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 't2arec_fast' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["__version__", *_LAZY]
