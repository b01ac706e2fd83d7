"""``@timeout``: give up on an async call that runs too long.

Async functions only: a running sync function cannot be interrupted without
leaking its thread, so decorating one is a ``TypeError``. The call is
cancelled at the deadline (its ``finally`` blocks run) and
``CallTimeoutError`` is raised: a builtin ``TimeoutError`` too, classified
``TIMEOUT_ERROR``, so a breaker outside counts it as a failure. A
``TimeoutError`` raised by the function itself (a driver's connect timeout)
propagates unchanged.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import wrapt

from .._errors import CallTimeoutError
from ._common import (
    fast_wrapper_class,
    is_async_callable,
    qualified_name,
    real_number,
    reject_generators,
)

__all__ = ("timeout",)

P = ParamSpec("P")
T = TypeVar("T")


class _Deadline:
    """The timer callback of one call: cancels its task, remembering it did."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False

    def __call__(self) -> None:
        self.fired = True
        self.task.cancel()


class _Timeout:
    """``asyncio.timeout``'s protocol, without its context-manager machinery
    (two extra coroutines per call): one ``call_at`` handle, cancelled on the
    way out. Cancellation is told apart from the deadline exactly as
    ``asyncio.timeout`` does it, with ``Task.cancelling()``/``uncancel()``."""

    __slots__ = ("name", "seconds")

    def __init__(self, name: str, seconds: float) -> None:
        self.name = name
        self.seconds = seconds

    async def call(
        self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:  # awaited outside any task: asyncio.timeout refuses too
            raise RuntimeError("@timeout must be awaited inside an asyncio task")
        cancelling = task.cancelling()
        deadline = _Deadline(task)
        handle = loop.call_at(loop.time() + self.seconds, deadline)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            handle.cancel()
            if (
                deadline.fired
                and task.uncancel() <= cancelling
                and isinstance(exc, asyncio.CancelledError)
            ):
                raise CallTimeoutError(self.name, self.seconds) from exc
            raise
        handle.cancel()
        if deadline.fired:  # fired, but the call swallowed its cancellation
            task.uncancel()
        return result


class _TimeoutWrapper(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """An async function with a time limit; ``.timeout`` is the limit in seconds."""

    @property
    def timeout(self) -> float:
        """The limit, in seconds."""
        return self._self_timeout.seconds  # type: ignore[no-any-return]


def timeout(
    seconds: float,
) -> Callable[[Callable[P, Coroutine[Any, Any, T]]], Callable[P, Coroutine[Any, Any, T]]]:
    """Cancel an async call that takes longer than ``seconds``.

    At the deadline the call is cancelled (its ``finally`` blocks run) and
    :class:`resilience.CallTimeoutError` is raised: a ``TimeoutError`` and a
    ``ResilienceError``, classified ``TIMEOUT_ERROR``. A ``TimeoutError`` the
    function raises itself propagates unchanged, and cancelling the caller
    still raises ``CancelledError``. Works on async functions and methods;
    time is the event loop's clock (``asyncio.timeout``).

    Args:
        seconds: the limit; a number > 0 (``math.inf`` for none). Required.

    Raises:
        TypeError: ``seconds`` is not a number; at decoration, a sync or
            generator function.
        ValueError: ``seconds`` <= 0 or NaN.
    """
    limit = real_number(seconds, "@timeout: seconds", minimum=0, inclusive=False)

    def decorate(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        target: Any = fn
        if not callable(target) and not isinstance(target, classmethod | staticmethod):
            raise TypeError(f"@timeout needs a callable, got {fn!r}")
        reject_generators(fn, "timeout")
        if not is_async_callable(fn):
            raise TypeError(
                f"@timeout needs an async function: {qualified_name(fn)} is sync, and a "
                "running sync call cannot be interrupted (use the driver's own timeout)"
            )
        policy = _Timeout(qualified_name(fn), limit)
        if math.isinf(limit):
            run: Callable[..., Any] = _no_limit
        else:
            run = policy.call

        def wrapper(
            wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            return run(wrapped, args, kwargs)

        cls = fast_wrapper_class(_TimeoutWrapper, fn, run)
        wrapped: Any = cls(fn, wrapper)
        wrapped._self_timeout = policy
        return wrapped  # type: ignore[no-any-return]

    return decorate


def _no_limit(
    fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Awaitable[Any]:
    return fn(*args, **kwargs)
