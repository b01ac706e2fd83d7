"""``@retry``: try again after a transient error, on tenacity's strategies.

The first attempt is a plain call: tenacity's machinery (``RetryCallState``,
its stop/wait/retry strategies) comes in only after a failure, so a call that
succeeds pays almost nothing (tenacity's own ``AsyncRetrying`` costs about
20 us per call even then). Sleeping goes through an injectable ``sleep`` so
tests never wait, and is cancellable: a cancelled caller stops retrying.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, ParamSpec, TypeVar, overload

import tenacity
import wrapt

from .._categories import ErrorCategory, classify, is_transient
from .._clock import SYSTEM_CLOCK, Clock
from .._errors import BulkheadFullError, CircuitOpenError
from ._common import (
    fast_wrapper_class,
    is_async_callable,
    make_trigger,
    qualified_name,
    real_number,
    reject_generators,
)

__all__ = ("DEFAULT_WAIT", "retry")

logger = logging.getLogger("resilience")

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_WAIT: Final = tenacity.wait_random_exponential(multiplier=0.1, max=5.0)
"""Full-jitter exponential backoff: before retry n (n = 1, 2, ...), a wait
drawn uniformly from [0, min(5.0, 0.1 * 2 ** (n - 1))] seconds, so a fleet
retrying the same outage spreads out instead of stampeding in step."""


class _TestingMode:
    """What ``resilience.testing.set_testing`` switched on: read only after a
    failure, so a call that succeeds never looks at it."""

    __slots__ = ("active", "attempts")

    def __init__(self) -> None:
        self.active = False
        self.attempts: int | None = None


TESTING: Final = _TestingMode()


_NEVER_RETRIED_CATEGORIES: Final = frozenset(
    {ErrorCategory.AUTHENTICATION_ERROR, ErrorCategory.QUERY_ERROR}
)


def never_retried(exc: BaseException) -> bool:
    """Errors no ``on=`` can make retryable: the library's own rejections
    (``CircuitOpenError``, ``BulkheadFullError``: retrying defeats the load
    shedding) and authentication and query errors (they fail the same way
    every time)."""
    return isinstance(exc, CircuitOpenError | BulkheadFullError) or (
        classify(exc) in _NEVER_RETRIED_CATEGORIES
    )


class _Retry:
    """The decisions of one ``@retry``, and its sync and async drivers."""

    __slots__ = (
        "attempts",
        "clock",
        "name",
        "predicate",
        "retrying",
        "sleep",
        "strategy",
        "wait",
    )

    def __init__(
        self,
        name: str,
        attempts: int,
        wait: Any,
        predicate: Callable[[BaseException], bool] | None,
        strategy: tenacity.retry_base | None,
        sleep: Callable[[float], Any],
        clock: Clock,
    ) -> None:
        self.name = name
        self.attempts = attempts
        self.wait = wait
        self.predicate = predicate
        self.strategy = strategy
        self.sleep = sleep
        self.clock = clock
        # Only a holder for RetryCallState (some strategies read its settings);
        # it is never iterated.
        self.retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts),
            wait=wait,
            retry=strategy if strategy is not None else tenacity.retry_if_exception(predicate),  # type: ignore[arg-type]
            sleep=lambda seconds: None,
            reraise=True,
        )

    def limit(self) -> int:
        """Attempts in all for the current call (testing mode may cap them)."""
        if TESTING.active and TESTING.attempts is not None:
            return min(self.attempts, TESTING.attempts)
        return self.attempts

    def first_check(self, exc: Exception) -> bool:
        """Cheap test on the first failure: may this error be retried at all?"""
        if self.limit() < 2 or never_retried(exc):
            return False
        predicate = self.predicate
        return predicate is None or predicate(exc)

    def _state(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        state = tenacity.RetryCallState(self.retrying, fn, args, kwargs)
        state.start_time = self.clock.monotonic()
        return state

    def _record(self, state: Any, exc: Exception) -> None:
        outcome = tenacity.Future(state.attempt_number)
        outcome.set_exception(exc)
        state.outcome = outcome
        state.outcome_timestamp = self.clock.monotonic()

    def _next_wait(self, state: Any, exc: Exception) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` to give up."""
        if never_retried(exc):
            return None
        strategy = self.strategy
        if strategy is not None:
            if not strategy(state):
                return None
        elif state.attempt_number > 1 and not self.predicate(exc):  # type: ignore[misc]
            return None
        limit = self.limit()
        if state.attempt_number >= limit:
            return None
        delay = 0.0 if TESTING.active else max(float(self.wait(state)), 0.0)
        state.upcoming_sleep = delay
        state.idle_for += delay
        state.next_action = tenacity.RetryAction(delay)
        logger.warning(
            "retry %s: attempt %d of %d failed (%s); next attempt in %.3fs",
            self.name,
            state.attempt_number,
            limit,
            type(exc).__name__,
            delay,
        )
        return delay

    async def call_async(
        self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            if not self.first_check(exc):
                raise
            first = exc
        # Outside the except block, so later errors are not chained to the first.
        return await self._again_async(fn, args, kwargs, first)

    async def _again_async(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        exc: Exception,
    ) -> Any:
        state = self._state(fn, args, kwargs)
        sleep = self.sleep
        while True:
            self._record(state, exc)
            delay = self._next_wait(state, exc)
            if delay is None:
                raise exc
            if delay > 0:
                slept = sleep(delay)
                if inspect.isawaitable(slept):
                    await slept
            state.prepare_for_next_attempt()
            try:
                return await fn(*args, **kwargs)
            except Exception as error:
                exc = error

    def call_sync(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not self.first_check(exc):
                raise
            first = exc
        return self._again_sync(fn, args, kwargs, first)

    def _again_sync(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], exc: Exception
    ) -> Any:
        state = self._state(fn, args, kwargs)
        sleep = self.sleep
        while True:
            self._record(state, exc)
            delay = self._next_wait(state, exc)
            if delay is None:
                raise exc
            if delay > 0:
                sleep(delay)
            state.prepare_for_next_attempt()
            try:
                return fn(*args, **kwargs)
            except Exception as error:
                exc = error


class _RetryWrapper(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """A function that is retried; ``.retry_attempts`` is its attempt limit."""

    @property
    def retry_attempts(self) -> int:
        """Attempts per call, the first included."""
        return self._self_retry.attempts  # type: ignore[no-any-return]


def _wait_strategy(wait: Any) -> Any:
    if wait is None:
        return DEFAULT_WAIT
    if isinstance(wait, int | float) and not isinstance(wait, bool):
        seconds = real_number(wait, "@retry: wait", minimum=0, inclusive=True)
        return tenacity.wait_none() if seconds == 0 else tenacity.wait_fixed(seconds)
    if isinstance(wait, tenacity.wait.wait_base) or callable(wait):
        return wait
    raise TypeError(
        f"@retry: wait must be seconds (a number >= 0) or a tenacity wait strategy, got {wait!r}"
    )


@overload
def retry(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def retry(
    *,
    attempts: int = 3,
    wait: float
    | tenacity.wait.wait_base
    | Callable[[tenacity.RetryCallState], float]
    | None = None,
    on: type[Exception]
    | tuple[type[Exception], ...]
    | Callable[[BaseException], bool]
    | tenacity.retry_base
    | None = None,
    sleep: Callable[[float], Any] | None = None,
    clock: Clock | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def retry(
    fn: Any = None,
    /,
    *,
    attempts: Any = 3,
    wait: Any = None,
    on: Any = None,
    sleep: Callable[[float], Any] | None = None,
    clock: Clock | None = None,
) -> Any:
    """Call again after a transient error, up to ``attempts`` times in all.

    Use bare (``@retry``) or with keyword arguments (``@retry(attempts=5,
    wait=0.2, on=httpx.ConnectError)``). Sync and async functions and
    methods. The first attempt is a direct call; tenacity's strategies are
    consulted only after a failure. When no attempt is left, or the error is
    not retryable, the last error is raised unchanged. ``CancelledError`` is
    never retried: cancelling the caller (while it runs or sleeps) stops the
    retries. Each retry is logged at WARNING on the ``resilience`` logger
    (error type only, no message). Under ``resilience.testing.set_testing``
    nothing waits between attempts (and attempts may be capped).

    Args:
        attempts: attempts in all, the first included; an int >= 1 (1 means
            no retry). Default 3.
        wait: seconds before each retry (a number >= 0; 0 means none) or a
            tenacity wait strategy (``tenacity.wait_exponential(...)``, or
            any ``fn(retry_state) -> seconds``). Default ``None``:
            :data:`DEFAULT_WAIT`, full-jitter exponential, uniform in
            [0, min(5.0, 0.1 * 2 ** (n - 1))] before retry n.
        on: what is retried; replaces the default rule. An exception type, a
            non-empty tuple of ``Exception`` subclasses, a predicate
            ``fn(exc) -> bool``, or a tenacity retry strategy
            (``tenacity.retry_if_exception_type(...)``, given the
            ``RetryCallState``). Default ``None``: :func:`is_transient`
            (connection, timeout, resource errors, SQLSTATE 40001/40P01, as
            ``classify`` sees them: an ``httpx.ConnectError`` or a 503 from
            ``raise_for_status()`` included).
            Whatever ``on`` says, ``CircuitOpenError``, ``BulkheadFullError``,
            authentication and query errors (a 404 included) are never retried.
        sleep: how to wait: ``fn(seconds)``, whose result is awaited if it is
            awaitable. Default ``asyncio.sleep`` for async functions and
            ``time.sleep`` for sync ones; a sync function needs a sync sleep.
            Tests pass one that advances a ``FakeClock``.
        clock: where the retry state's timestamps are read
            (``monotonic()``). Default the system clock.

    Raises:
        TypeError: a setting passed by position (``@retry(3)``); a bad
            ``wait``, ``on``, ``sleep`` or ``clock``; an async ``sleep`` with
            a sync function.
        ValueError: ``attempts`` < 1 or a negative ``wait``.
    """
    if fn is None:
        return _build(attempts, wait, on, sleep, clock)
    if not callable(fn) and not isinstance(fn, classmethod | staticmethod):
        raise TypeError(
            f"@retry takes its settings by keyword, e.g. @retry(attempts={fn!r}); got {fn!r}"
        )
    return _build(attempts, wait, on, sleep, clock)(fn)


def _build(
    attempts: Any, wait: Any, on: Any, sleep: Any, clock: Clock | None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    if isinstance(attempts, bool) or not isinstance(attempts, int):
        raise TypeError(f"@retry: attempts must be an int >= 1, got {attempts!r}")
    if attempts < 1:
        raise ValueError(f"@retry: attempts must be >= 1, got {attempts!r}")
    wait_strategy = _wait_strategy(wait)
    strategy: tenacity.retry_base | None = None
    predicate: Callable[[BaseException], bool] | None
    if isinstance(on, tenacity.retry_base):
        strategy, predicate = on, None
    elif on is None:
        predicate = is_transient
    else:
        predicate = make_trigger(on, "retry")
    if sleep is not None and not callable(sleep):
        raise TypeError(f"@retry: sleep must be callable, got {sleep!r}")
    if clock is not None and not callable(getattr(clock, "monotonic", None)):
        raise TypeError(f"@retry: clock must have a monotonic() method, got {clock!r}")
    the_clock: Clock = clock if clock is not None else SYSTEM_CLOCK

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        target: Any = fn
        if not callable(target) and not isinstance(target, classmethod | staticmethod):
            raise TypeError(f"@retry needs a callable, got {fn!r}")
        reject_generators(fn, "retry")
        is_async = is_async_callable(fn)
        if sleep is None:
            the_sleep: Callable[[float], Any] = asyncio.sleep if is_async else time.sleep
        elif not is_async and is_async_callable(sleep):
            raise TypeError(
                f"@retry: the sync function {qualified_name(fn)} needs a sync sleep, "
                f"got the async {sleep!r}"
            )
        else:
            the_sleep = sleep
        policy = _Retry(
            qualified_name(fn),
            attempts,
            wait_strategy,
            predicate,
            strategy,
            the_sleep,
            the_clock,
        )
        run = policy.call_async if is_async else policy.call_sync

        def wrapper(
            wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            return run(wrapped, args, kwargs)

        cls = fast_wrapper_class(_RetryWrapper, fn, run)
        wrapped: Any = cls(fn, wrapper)
        wrapped._self_retry = policy
        return wrapped  # type: ignore[no-any-return]

    return decorate
