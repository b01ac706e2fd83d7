"""The library's exceptions.

Everything the library raises on its own account derives from
:class:`ResilienceError`, so one ``except ResilienceError`` catches every
rejection without also catching the dependency's own errors::

    Exception
    └── ResilienceError
        ├── CircuitOpenError          (alias CircuitBreakerOpenError)
        ├── BulkheadFullError
        ├── ChainExhaustedError       (also an ExceptionGroup of every cause)
        └── CallTimeoutError          (also a builtin TimeoutError)

Errors raised by the protected function itself always propagate unchanged:
the library never wraps or replaces them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._categories import ErrorCategory
    from ._config import CircuitState

__all__ = (
    "BulkheadFullError",
    "fresh_copy",
    "CallTimeoutError",
    "ChainExhaustedError",
    "CircuitBreakerOpenError",
    "CircuitOpenError",
    "ResilienceError",
)


class ResilienceError(Exception):
    """Base class of every error the library raises on its own account."""


class CircuitOpenError(ResilienceError):
    """A circuit breaker rejected the call without running it.

    A fresh instance is raised for every rejection, so a rejected caller never
    holds on to another caller's traceback.

    Attributes:
        name: the breaker's name.
        state: the breaker's state when it rejected the call.
        retry_after: seconds until a probe may be admitted. In OPEN, the open
            deadline minus now; in HALF_OPEN with every probe permit taken, a
            short estimate (at most 1 s); ``None`` in FORCED_OPEN, where no
            deadline exists.
        last_failure_category: the category of the last recorded failure, or
            ``None``.
    """

    # The fields live in ``args``: the hot path builds a rejection with
    # ``BaseException.__new__`` alone (no Python-level __init__ to run), and
    # pickling needs nothing more than ``args``.
    __slots__ = ()

    def __init__(
        self,
        name: str,
        state: CircuitState,
        retry_after: float | None,
        last_failure_category: ErrorCategory | None = None,
    ) -> None:
        self.args = (name, state, retry_after, last_failure_category)

    def _set(self, i: int, value: Any) -> None:
        fields = list(self.args)
        fields[i] = value
        self.args = tuple(fields)

    @property
    def name(self) -> str:
        """The breaker's name."""
        return self.args[0]  # type: ignore[no-any-return]

    @name.setter
    def name(self, value: str) -> None:
        self._set(0, value)

    @property
    def state(self) -> CircuitState:
        """The breaker's state when it rejected the call."""
        return self.args[1]  # type: ignore[no-any-return]

    @state.setter
    def state(self, value: CircuitState) -> None:
        self._set(1, value)

    @property
    def retry_after(self) -> float | None:
        """Seconds until a probe may be admitted (``None`` in FORCED_OPEN)."""
        return self.args[2]  # type: ignore[no-any-return]

    @retry_after.setter
    def retry_after(self, value: float | None) -> None:
        self._set(2, value)

    @property
    def last_failure_category(self) -> ErrorCategory | None:
        """The category of the last recorded failure, or ``None``."""
        return self.args[3]  # type: ignore[no-any-return]

    @last_failure_category.setter
    def last_failure_category(self, value: ErrorCategory | None) -> None:
        self._set(3, value)

    def __str__(self) -> str:
        when = (
            "until it is closed by hand"
            if self.retry_after is None
            else f"retry after {self.retry_after:.3f}s"
        )
        return f"circuit {self.name!r} is {self.state.value}: {when}"


CircuitBreakerOpenError = CircuitOpenError
"""Alias of :class:`CircuitOpenError`, the name the Kailash guide uses."""


class BulkheadFullError(ResilienceError):
    """A bulkhead had no free slot (and no free waiting place) for the call.

    A bulkhead rejection says nothing about the health of the dependency, so an
    outer circuit breaker ignores it.

    Attributes:
        name: the bulkhead's name.
        max_concurrent: its concurrency limit.
        max_waiting: how many callers may wait for a slot.
    """

    def __init__(self, name: str, max_concurrent: int, max_waiting: int) -> None:
        self.name = name
        self.max_concurrent = max_concurrent
        self.max_waiting = max_waiting
        super().__init__(name, max_concurrent, max_waiting)

    def __str__(self) -> str:
        return (
            f"bulkhead {self.name!r} is full "
            f"({self.max_concurrent} running, {self.max_waiting} waiting)"
        )


class CallTimeoutError(ResilienceError, TimeoutError):
    """``@timeout`` cancelled a call that ran longer than its limit.

    It is a builtin :class:`TimeoutError` too, so it is classified as
    ``TIMEOUT_ERROR`` and caught by ``except TimeoutError``.

    Attributes:
        name: the qualified name of the function that timed out.
        seconds: the limit that was exceeded.
    """

    def __init__(self, name: str, seconds: float) -> None:
        self.name = name
        self.seconds = seconds
        super().__init__(name, seconds)

    def __str__(self) -> str:
        return f"{self.name} did not finish within {self.seconds:g}s"


class ChainExhaustedError(ExceptionGroup[Exception], ResilienceError):
    """Every resource of a ``@chain`` failed; ``.exceptions`` holds each cause in order."""

    def __new__(cls, message: str, exceptions: Sequence[Exception]) -> ChainExhaustedError:
        return super().__new__(cls, message, exceptions)

    def derive(self, excs: Sequence[Exception]) -> ChainExhaustedError:  # type: ignore[override]
        return ChainExhaustedError(self.message, excs)


def fresh_copy(exc: Exception) -> Exception:
    """A new exception like ``exc`` (same type, ``args`` and attributes; no
    traceback), for handing one failure to many waiters: re-raising a single
    object from many tasks makes their tracebacks pile up on it.

    ``copy.copy`` first; when the type's ``__init__`` does not take back its own
    ``args`` (common in database drivers), the copy is built without calling
    ``__init__``. Only an exception that cannot even be allocated that way is
    returned as it is (its traceback untouched).
    """
    try:
        clone = copy.copy(exc)
        if type(clone) is not type(exc):
            raise TypeError("copy changed the type")
    except Exception:
        try:
            clone = type(exc).__new__(type(exc), *exc.args)
            # OSError.__new__ leaves args (and errno, strerror, ...) to an
            # overridden __init__, which is not called here: set them.
            clone.args = exc.args
            if isinstance(exc, OSError):
                for field in ("errno", "strerror", "filename", "filename2"):
                    setattr(clone, field, getattr(exc, field))
            clone.__dict__.update(vars(exc))
            for cls in type(exc).__mro__:
                for slot in getattr(cls, "__slots__", ()):
                    if hasattr(exc, slot) and slot not in ("__dict__", "__weakref__"):
                        setattr(clone, slot, getattr(exc, slot))
        except Exception:
            return exc
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list):
        clone.__notes__ = list(notes)  # not shared with the original
    clone.__traceback__ = None
    clone.__cause__ = exc.__cause__
    clone.__suppress_context__ = exc.__suppress_context__
    clone.__context__ = None
    return clone
