"""Helpers shared by the kernel families: output allocation (with optional NaN poisoning), dtype mapping, the
interpreter guard, and the one definition of the output gate SiLU and its derivative (@triton.jit, inlined into
every kernel that gates)."""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# Tests set this to True (or the environment variable T2AREC_POISON_OUTPUTS=1) so that every output buffer a
# launcher allocates starts as NaN: an element a kernel forgets to write then fails the comparison loudly.
POISON_OUTPUTS = os.environ.get("T2AREC_POISON_OUTPUTS", "0") == "1"


def new_output(shape, dtype, device) -> torch.Tensor:
    """An uninitialised output buffer; NaN-filled when POISON_OUTPUTS is on (integer buffers are never poisoned)."""
    if POISON_OUTPUTS and dtype.is_floating_point:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def accumulator_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 if any input is float64 (the test path), else float32 (bf16/fp16/fp32 inputs accumulate in fp32)."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


@triton.jit
def silu(z):
    """SiLU(z) = z·σ(z), elementwise, in z's dtype."""
    return z / (1.0 + tl.exp(-z))


@triton.jit
def silu_with_grad(z):
    """(SiLU(z), SiLU'(z)) elementwise: σ(z)(1 + z(1 − σ(z))) = σ + SiLU·(1 − σ); for backward kernels."""
    sig = 1.0 / (1.0 + tl.exp(-z))
    gate = z * sig
    return gate, sig + gate * (1.0 - sig)


@triton.jit
def state_tile(row, block, d, n, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program's (BLOCK_N × BLOCK_D) tile of a row-major (rows, d_state = n, d) state, slice `block` of d:
    → (offs_d, offs_n, mask_d, mask_n, the tile's element offsets in row `row`, the tile's mask)."""
    offs_d = block * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < d
    mask_n = offs_n < n
    return (offs_d, offs_n, mask_d, mask_n, row * n * d + offs_n[:, None] * d + offs_d[None, :],
            mask_n[:, None] & mask_d[None, :])


def tl_dtype(dtype: torch.dtype):
    """The Triton dtype of an accumulator dtype (float32 or float64; KeyError for any other)."""
    return {torch.float32: tl.float32, torch.float64: tl.float64}[dtype]


def interpreting() -> bool:
    """Whether Triton's CPU interpreter is on (TRITON_INTERPRET=1, which triton reads once, at import)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_device(name: str, *tensors) -> None:
    """Triton kernels run on CUDA, or on CPU tensors only inside Triton's interpreter (TRITON_INTERPRET=1, set
    before triton is imported). `name` is the launcher named in the error; None tensors are skipped.

    Raises:
        ValueError: the tensors are on more than one device.
        RuntimeError: CPU tensors outside the interpreter.
    """
    devices = {t.device for t in tensors if t is not None}
    if len(devices) > 1:
        raise ValueError(f"{name}: all tensors must be on one device, got {sorted(map(str, devices))}")
    device = devices.pop()
    if device.type != "cuda" and not interpreting():
        raise RuntimeError(
            f"{name}: Triton kernels need CUDA tensors (got {device}); on CPU use backend='reference', or set "
            "TRITON_INTERPRET=1 before importing triton to run the kernels in Triton's interpreter")


def next_pow2(n: int) -> int:
    """The smallest power of two ≥ max(n, 1) (block sizes must be powers of two)."""
    return triton.next_power_of_2(max(int(n), 1))
