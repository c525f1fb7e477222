"""The one switch that chooses an implementation: "auto" | "triton" | "reference".

Also "loop" (the sequential definition, for tests) and "export" (a loop-free form for ONNX export)."""
from __future__ import annotations

import functools

import torch

BACKENDS = ("auto", "triton", "reference", "loop", "export")


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether `import triton` works here (cached for the process)."""
    try:
        import triton  # noqa: F401
    except Exception:  # pragma: no cover - depends on the platform
        return False
    return True


def inside_func_transform() -> bool:
    """True while torch.func (vmap, grad, jacrev, ...) is tracing: per-user test-time steps run under vmap(grad)."""
    try:
        return torch._C._functorch.peek_interpreter_stack() is not None
    except AttributeError:  # pragma: no cover - older torch without the functorch C API
        return False


def check_choice(what: str, value: str, choices) -> str:
    """→ value, if it is one of `choices` (a setting's allowed values).

    Raises:
        ValueError: naming the setting (`what`), the value and the choices.
    """
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {tuple(choices)}")
    return value


def check_backend(backend: str) -> str:
    """→ backend, if it is one of BACKENDS.

    Raises:
        ValueError: any other value, naming the choices.
    """
    return check_choice("backend", backend, BACKENDS)


def resolve_backend(backend: str, tensor) -> str:
    """Map a requested backend to the concrete one for `tensor`'s device.

    "auto" and "triton" both give the chunked reference inside torch.func transforms: the Triton custom ops have an
    autograd formula but no batching rule, so vmap(grad(...)) cannot run them, while the reference is plain PyTorch.
    → "triton" | "reference" | "loop" | "export".

    Raises:
        ValueError: an unknown backend.
        RuntimeError: backend="triton" where triton cannot be imported.
    """
    check_backend(backend)
    if backend in ("auto", "triton") and inside_func_transform():
        return "reference"
    if backend == "auto":
        return "triton" if tensor.is_cuda and triton_available() else "reference"
    if backend == "triton" and not triton_available():
        raise RuntimeError("backend='triton' requested but triton is not importable")
    return backend
