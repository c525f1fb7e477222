"""Errors for bad input to the model, serving and export APIs (data-file errors live in data.errors)."""


class InputError(ValueError):
    """Input that cannot be used (wrong shape, dtype, id range, order). The message says what and where."""


class StoreError(RuntimeError):
    """The shared state store (Redis, docs/serving.md) could not do what was asked; the message names the server."""


class StoreUnavailableError(StoreError):
    """The store did not answer within its timeouts and retries. Nothing was written by the failed call, except
    that a write whose reply was lost may have been applied whole (never in part)."""


class StoreCorruptError(StoreError):
    """A value in the store cannot be what this package wrote there; the message names the key and field."""


class StoreConflictError(StoreError):
    """A write lost its compare-and-set more often than the configured retries allow (extreme contention)."""


class StoredWithoutAnswerError(StoreError):
    """A call with a shared store stored its events (its commit was applied) but failed after that: computing the
    answer or reading what it needs from the store (observe_and_recommend), or keeping this process's copies (the
    local tier, a write-back) — the cause is chained and named. Observing the events again would count them twice;
    ask recommend() for an answer. Deliberately not a StoreUnavailableError: a caller that repeats calls after an
    outage must not repeat this one. Source: docs/serving.md, "Consistency"."""

    def __init__(self, failed: str, cause: BaseException, call: str = "observe_and_recommend"):
        advice = ("ask recommend() for the answer, do not observe these events again" if call == "observe_and_recommend"
                  else "do not observe these events again")
        super().__init__(f"{call}: the events WERE stored (the commit was applied); {failed} failed "
                         f"({type(cause).__name__}: {cause}) — {advice}")
