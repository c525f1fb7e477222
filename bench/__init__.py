"""Benchmarks of t2arec_fast: `python -m bench.run --list` lists them; harness.py holds what they share."""
