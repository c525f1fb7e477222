"""The one switch that chooses an implementation: "auto" | "triton" | "reference".

Also "loop" (the sequential definition, for tests) and "export" (a loop-free form for ONNX export)."""
from __future__ import annotations

import functools

BACKENDS = ("auto", "triton", "reference", "loop", "export")


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # pragma: no cover - depends on the platform
        return False
    return True


def resolve_backend(backend: str, tensor) -> str:
    """Map a requested backend to the concrete one for `tensor`'s device."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "auto":
        return "triton" if tensor.is_cuda and triton_available() else "reference"
    if backend == "triton" and not triton_available():
        raise RuntimeError("backend='triton' requested but triton is not importable")
    return backend
