"""@timeout: async calls cut at a deadline (short, bounded real waits only)."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from resilience import CallTimeoutError, ErrorCategory, ResilienceError, classify, timeout

# A deadline short enough to keep the suite fast; every wait below is bounded
# by it (the awaited events are never set, so only the deadline ends them).
LIMIT = 0.01


async def _forever() -> None:
    await asyncio.Event().wait()


async def test_a_fast_call_returns_its_value() -> None:
    """Within the limit, the result comes back."""

    @timeout(5)
    async def f(x: int) -> int:
        return x * 2

    assert await f(2) == 4


async def test_a_slow_call_raises_call_timeout_error() -> None:
    """Past the limit: CallTimeoutError, naming the function and the limit."""

    @timeout(LIMIT)
    async def slow_query() -> None:
        await _forever()

    with pytest.raises(CallTimeoutError) as raised:
        await slow_query()
    assert raised.value.seconds == LIMIT
    assert raised.value.name.endswith("slow_query")
    assert "slow_query" in str(raised.value)


async def test_the_timeout_is_a_timeout_error_of_category_timeout() -> None:
    """It is a TimeoutError and a ResilienceError, classified TIMEOUT_ERROR."""

    @timeout(LIMIT)
    async def f() -> None:
        await _forever()

    with pytest.raises(TimeoutError) as raised:
        await f()
    assert isinstance(raised.value, ResilienceError)
    assert classify(raised.value) is ErrorCategory.TIMEOUT_ERROR


async def test_the_call_is_cancelled_at_the_deadline() -> None:
    """The timed-out call's finally blocks run before the error is raised."""
    cleaned = []

    @timeout(LIMIT)
    async def f() -> None:
        try:
            await _forever()
        finally:
            cleaned.append(True)

    with pytest.raises(CallTimeoutError):
        await f()
    assert cleaned == [True]


async def test_the_cause_shows_where_the_call_was_waiting() -> None:
    """The chained cause keeps the cancelled call's traceback."""

    @timeout(LIMIT)
    async def f() -> None:
        await _forever()

    with pytest.raises(CallTimeoutError) as raised:
        await f()
    cause = raised.value.__cause__
    assert isinstance(cause, asyncio.CancelledError)
    assert cause.__traceback__ is not None


async def test_the_functions_own_timeout_error_propagates_unchanged() -> None:
    """A driver's TimeoutError is not relabelled."""
    error = TimeoutError("connect timeout")

    @timeout(5)
    async def f() -> None:
        raise error

    with pytest.raises(TimeoutError) as raised:
        await f()
    assert raised.value is error


async def test_cancelling_the_caller_is_still_a_cancellation() -> None:
    """An outer cancel is CancelledError, never a timeout."""
    started = asyncio.Event()

    @timeout(5)
    async def f() -> None:
        started.set()
        await _forever()

    task = asyncio.create_task(f())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_timeout_leaves_the_task_uncancelled() -> None:
    """After a CallTimeoutError, the caller's task can go on awaiting."""

    @timeout(LIMIT)
    async def f() -> None:
        await _forever()

    with pytest.raises(CallTimeoutError):
        await f()
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0
    await asyncio.sleep(0)  # would raise CancelledError if a cancel were pending


async def test_a_call_that_swallows_the_cancellation_returns_its_value() -> None:
    """As with asyncio.timeout: a call that absorbs the cancel is not a timeout."""

    @timeout(LIMIT)
    async def stubborn() -> str:
        try:
            await _forever()
        except asyncio.CancelledError:
            return "finished anyway"
        return "unreachable"

    assert await stubborn() == "finished anyway"
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0


async def test_nested_timeouts_report_the_one_that_fired() -> None:
    """An outer deadline firing inside an inner @timeout is the outer's timeout."""

    @timeout(10)
    async def inner() -> None:
        await _forever()

    @timeout(LIMIT)
    async def outer() -> None:
        await inner()

    with pytest.raises(CallTimeoutError) as raised:
        await outer()
    assert raised.value.seconds == LIMIT
    assert raised.value.name.endswith("outer")


async def test_an_inner_timeout_is_seen_by_the_outer_call_as_an_error() -> None:
    """The inner deadline fires first: the outer call gets its CallTimeoutError."""

    @timeout(LIMIT)
    async def inner() -> None:
        await _forever()

    @timeout(10)
    async def outer() -> str:
        try:
            await inner()
        except CallTimeoutError as exc:
            return f"inner timed out after {exc.seconds}"
        return "no"

    assert await outer() == f"inner timed out after {LIMIT}"


async def test_other_errors_propagate() -> None:
    """Errors raised in time are the function's own."""

    @timeout(5)
    async def f() -> None:
        raise KeyError("k")

    with pytest.raises(KeyError):
        await f()


async def test_infinity_means_no_limit() -> None:
    """math.inf disables the deadline."""

    @timeout(float("inf"))
    async def f() -> int:
        await asyncio.sleep(0)
        return 1

    assert await f() == 1
    assert f.timeout == float("inf")  # type: ignore[attr-defined]


async def test_methods_are_timed() -> None:
    """Methods work and get self."""

    class Client:
        factor = 3

        @timeout(5)
        async def get(self, x: int) -> int:
            return x * self.factor

        @timeout(LIMIT)
        async def hang(self) -> None:
            await _forever()

    assert await Client().get(2) == 6
    with pytest.raises(CallTimeoutError):
        await Client().hang()


def test_sync_functions_are_refused() -> None:
    """A running sync call cannot be interrupted: TypeError at decoration."""
    with pytest.raises(TypeError, match="async"):

        @timeout(1)
        def f() -> None: ...


def test_signature_and_kind_are_preserved() -> None:
    """wrapt keeps the signature and coroutine-function-ness."""

    @timeout(1)
    async def fetch(customer_id: int, *, limit: int = 5) -> list[int]:
        return []

    assert list(inspect.signature(fetch).parameters) == ["customer_id", "limit"]
    assert inspect.iscoroutinefunction(fetch)
    assert fetch.timeout == 1.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("seconds", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (float("nan"), ValueError),
        ("1", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_bad_limits_are_refused(seconds: Any, error: type[Exception]) -> None:
    """The limit is a number > 0."""
    with pytest.raises(error):
        timeout(seconds)


def test_async_generators_are_refused() -> None:
    """Timing an async generator would only time creating it."""
    with pytest.raises(TypeError, match="generator"):

        @timeout(1)
        async def rows() -> Any:
            yield 1
