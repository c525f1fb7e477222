"""Errors for bad input to the model, serving and export APIs (data-file errors live in data.errors)."""


class InputError(ValueError):
    """Input that cannot be used (wrong shape, dtype, id range, order). The message says what and where."""
