"""What every decorator needs: what kind of callable it wraps, and its name."""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Any

from .._categories import Outcome, outcome_of
from .._errors import BulkheadFullError, ChainExhaustedError, CircuitOpenError
from .._guard import is_async_callable, unwrap_descriptor  # the core decides; re-exported

__all__ = (
    "Trigger",
    "default_trigger",
    "fast_wrapper_class",
    "is_async_callable",
    "make_trigger",
    "qualified_name",
    "real_number",
    "reject_generators",
    "unwrap_descriptor",
)


def reject_generators(fn: Any, decorator: str) -> None:
    """Raise ``TypeError`` for generator functions: guarding them would only
    guard creating the generator, never its work."""
    target = unwrap_descriptor(fn)
    if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
        raise TypeError(
            f"@{decorator} cannot guard the generator function {qualified_name(fn)}: "
            "it would only guard creating the generator"
        )


def qualified_name(fn: Any) -> str:
    """``module.qualname`` of a function (or of the function in a descriptor)."""
    target = unwrap_descriptor(fn)
    module = getattr(target, "__module__", None) or "<unknown>"
    qualname = getattr(target, "__qualname__", None) or getattr(
        target, "__name__", type(target).__qualname__
    )
    return f"{module}.{qualname}"


# -- appended for @fallback, @chain, @retry, @timeout, @bulkhead ---------------

Trigger = Callable[[BaseException], bool]
"""Decides whether an exception makes a decorator act (fall back, fail over)."""

# What every fallback and failover acts on, whatever the breaker said.
_REJECTIONS: tuple[type[BaseException], ...] = (
    CircuitOpenError,
    BulkheadFullError,
    ChainExhaustedError,
    TimeoutError,
)
_FAILURE = Outcome.FAILURE
_TRIP = Outcome.TRIP


def default_trigger(exc: BaseException) -> bool:
    """The errors ``@fallback`` and ``@chain`` act on by default.

    A library rejection (``CircuitOpenError``, ``BulkheadFullError``), a
    ``TimeoutError`` (``CallTimeoutError`` included), an exhausted ``@chain``,
    or an error whose outcome is a failure: the outcome the innermost breaker
    gave it (honouring its ``ignore``, ``record``, ``classifier`` and
    ``category_policy``) or, with no breaker inside, the default policy's.
    Ignored categories (bad SQL, authentication) never trigger: they are
    bugs to fix, not outages to hide.
    """
    if isinstance(exc, _REJECTIONS):
        return True
    if not isinstance(exc, Exception):
        return False
    outcome = outcome_of(exc)
    return outcome is _FAILURE or outcome is _TRIP


def _exception_types(value: Any) -> tuple[type[Exception], ...] | None:
    """``value`` as a tuple of ``Exception`` subclasses, or ``None`` if it is not one."""
    if isinstance(value, type):
        value = (value,)
    if not isinstance(value, tuple) or not value:
        return None
    for item in value:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            return None
    return value


def make_trigger(on: Any, decorator: str) -> Trigger:
    """The trigger an ``on=`` argument asks for (validated at decoration time).

    ``None`` is :func:`default_trigger`; an exception type or a non-empty tuple
    of ``Exception`` subclasses triggers on instances of them; any other
    callable is a predicate ``fn(exc) -> bool``.

    Raises:
        TypeError: ``on`` is none of these, or names a ``BaseException`` that
            is not an ``Exception`` (cancellation must never be swallowed).
    """
    if on is None:
        return default_trigger
    types_ = _exception_types(on)
    if types_ is not None:
        for item in types_:
            if not issubclass(item, Exception):
                raise TypeError(
                    f"@{decorator}: on= may only name Exception subclasses, got {item!r} "
                    "(cancellation and interpreter exits are never caught)"
                )

        def trigger(exc: BaseException) -> bool:
            return isinstance(exc, types_)

        return trigger
    if isinstance(on, type) or not callable(on):
        raise TypeError(
            f"@{decorator}: on= must be an exception type, a tuple of them, or a "
            f"predicate fn(exc) -> bool, got {on!r}"
        )
    predicate: Trigger = on
    return predicate


def real_number(value: Any, what: str, *, minimum: float, inclusive: bool) -> float:
    """``value`` as a float, or ``TypeError``/``ValueError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {value!r}")
    number = float(value)
    if number != number or (number < minimum if inclusive else number <= minimum):
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        raise ValueError(f"{what} must be {bound}, got {value!r}")
    return number


def fast_wrapper_class(base: type, fn: Any, run: Callable[..., Any]) -> type:
    """A subclass of ``base`` (a ``wrapt.FunctionWrapper``) of its own for one
    plain function, whose ``__call__`` goes straight to ``run(fn, args,
    kwargs)``: no wrapt dispatch. For anything but a plain function, ``base``.

    Bound methods still go through wrapt (``__get__`` returns wrapt's bound
    wrapper, which calls the wrapper function), so binding stays right.
    """
    if not isinstance(fn, types.FunctionType):
        return base

    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        return run(fn, args, kwargs)

    return type(base.__name__, (base,), {"__call__": __call__, "__slots__": ()})
