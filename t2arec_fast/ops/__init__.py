"""Tensor ops with interchangeable backends ("auto" | "triton" | "reference"). Model code calls these, never kernels."""
from ._backend import BACKENDS, check_backend, resolve_backend, triton_available
from .cross_entropy import CE_IMPLS, linear_cross_entropy
from .selective_scan import selective_scan, selective_scan_chunked, selective_scan_loop
from .state_step import selective_state_step, state_step_output, state_step_reference

__all__ = [
    "BACKENDS", "check_backend", "resolve_backend", "triton_available",
    "selective_scan", "selective_scan_chunked", "selective_scan_loop",
    "selective_state_step", "state_step_output", "state_step_reference", "CE_IMPLS", "linear_cross_entropy",
]
