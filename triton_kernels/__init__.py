"""Triton kernels of t2arec_fast, installed as `t2arec_fast.triton_kernels`. Kernels and launchers only:
models reach them through `t2arec_fast.ops`."""
