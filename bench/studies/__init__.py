"""Studies: accuracy experiments whose JSON docs/results.md quotes (reproduce, tune_alignment, shift_study) and the
renderer of its tables (report)."""
