"""@retry: transient errors retried on tenacity's strategies, with a fake clock."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import pytest
import tenacity

from resilience import (
    BulkheadFullError,
    CallTimeoutError,
    CircuitOpenError,
    CircuitState,
    is_transient,
    retry,
)
from resilience._decorators._retry import DEFAULT_WAIT
from resilience.integrations.tenacity import is_transient as integration_is_transient
from resilience.integrations.tenacity import retry_if_transient
from resilience.testing import FakeClock

from .conftest import FakeSleep, SqlError


class Flaky:
    """Fails with the given errors, in order, then answers."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self, x: int = 0) -> int:
        return self.sync(x)

    def sync(self, x: int = 0) -> int:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return x + 1


async def test_a_first_success_is_called_once(fake_sleep: FakeSleep) -> None:
    """No failure: one call, no sleep."""
    flaky = Flaky()

    @retry(sleep=fake_sleep)
    async def f(x: int) -> int:
        return await flaky(x)

    assert await f(1) == 2
    assert flaky.calls == 1
    assert fake_sleep.waits == []


async def test_a_transient_error_is_retried(fake_sleep: FakeSleep) -> None:
    """Connection errors are retried until an attempt succeeds."""
    flaky = Flaky(ConnectionError(), ConnectionError())

    @retry(attempts=3, wait=0.5, sleep=fake_sleep)
    async def f(x: int) -> int:
        return await flaky(x)

    assert await f(1) == 2
    assert flaky.calls == 3
    assert fake_sleep.waits == [0.5, 0.5]


async def test_exhaustion_raises_the_last_error_unchanged(fake_sleep: FakeSleep) -> None:
    """No attempt left: the last error itself propagates."""
    last = ConnectionError("third")
    flaky = Flaky(ConnectionError("first"), ConnectionError("second"), last)

    @retry(attempts=3, wait=0, sleep=fake_sleep)
    async def f() -> int:
        return await flaky()

    with pytest.raises(ConnectionError) as raised:
        await f()
    assert raised.value is last
    assert flaky.calls == 3


async def test_the_last_error_is_not_chained_to_earlier_ones(fake_sleep: FakeSleep) -> None:
    """Earlier attempts do not appear as the last error's context."""
    flaky = Flaky(ConnectionError("first"), ConnectionError("second"))

    @retry(attempts=2, wait=0, sleep=fake_sleep)
    async def f() -> int:
        return await flaky()

    with pytest.raises(ConnectionError) as raised:
        await f()
    assert raised.value.__context__ is None


@pytest.mark.parametrize(
    "error",
    [
        CircuitOpenError("db", CircuitState.OPEN, 30.0),
        BulkheadFullError("b", 1, 0),
        SqlError("28P01"),
        SqlError("42601"),
        SqlError("23505"),
        SqlError("3D000"),
        ValueError("bug"),
    ],
    ids=lambda e: type(e).__name__ + getattr(e, "sqlstate", ""),
)
async def test_non_transient_errors_are_not_retried(
    fake_sleep: FakeSleep, error: Exception
) -> None:
    """Rejections, auth, query and unknown errors: one attempt, raised at once."""
    flaky = Flaky(error)

    @retry(attempts=5, sleep=fake_sleep)
    async def f() -> int:
        return await flaky()

    with pytest.raises(type(error)):
        await f()
    assert flaky.calls == 1


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(),
        TimeoutError(),
        CallTimeoutError("f", 1.0),
        OSError("network unreachable"),
        SqlError("08006"),
        SqlError("53300"),
        SqlError("57014"),
        SqlError("57P01"),
        SqlError("40001"),
        SqlError("40P01"),
    ],
    ids=lambda e: type(e).__name__ + getattr(e, "sqlstate", ""),
)
async def test_transient_errors_are_retried(fake_sleep: FakeSleep, error: Exception) -> None:
    """Connection, timeout, resource, serialization and deadlock errors are retried."""
    flaky = Flaky(error)

    @retry(attempts=2, sleep=fake_sleep)
    async def f() -> int:
        return await flaky()

    assert await f() == 1
    assert flaky.calls == 2


async def test_cancellation_is_not_retried(fake_sleep: FakeSleep) -> None:
    """A CancelledError from the call propagates after one attempt."""
    flaky = Flaky(asyncio.CancelledError())

    @retry(attempts=5, sleep=fake_sleep)
    async def f() -> int:
        return await flaky()

    with pytest.raises(asyncio.CancelledError):
        await f()
    assert flaky.calls == 1


async def test_cancelling_the_caller_while_it_waits_stops_the_retries() -> None:
    """Cancelled during the backoff sleep: no further attempt."""
    flaky = Flaky(ConnectionError(), ConnectionError())
    sleeping = asyncio.Event()

    async def slow_sleep(seconds: float) -> None:
        sleeping.set()
        await asyncio.Event().wait()  # never set: only cancellation ends it

    @retry(attempts=3, wait=1.0, sleep=slow_sleep)
    async def f() -> int:
        return await flaky()

    task = asyncio.create_task(f())
    await sleeping.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert flaky.calls == 1


async def test_attempts_one_means_no_retry(fake_sleep: FakeSleep) -> None:
    """attempts=1 is a single call."""
    flaky = Flaky(ConnectionError())

    @retry(attempts=1, sleep=fake_sleep)
    async def f() -> int:
        return await flaky()

    with pytest.raises(ConnectionError):
        await f()
    assert flaky.calls == 1


async def test_wait_zero_never_sleeps(fake_sleep: FakeSleep) -> None:
    """wait=0 retries at once, without calling sleep."""
    flaky = Flaky(ConnectionError())

    @retry(attempts=2, wait=0, sleep=fake_sleep)
    async def f() -> int:
        return await flaky()

    await f()
    assert fake_sleep.waits == []


async def test_a_tenacity_wait_strategy_is_used(fake_sleep: FakeSleep) -> None:
    """wait= takes tenacity strategies."""
    flaky = Flaky(ConnectionError(), ConnectionError(), ConnectionError())

    @retry(attempts=4, wait=tenacity.wait_exponential(multiplier=1, max=10), sleep=fake_sleep)
    async def f() -> int:
        return await flaky()

    await f()
    assert fake_sleep.waits == [1, 2, 4]


async def test_a_wait_callable_sees_the_retry_state(
    fake_clock: FakeClock, fake_sleep: FakeSleep
) -> None:
    """A wait callable gets tenacity's RetryCallState, timed on the injected clock."""
    flaky = Flaky(ConnectionError(), TimeoutError())
    seen: list[tuple[int, str, float | None]] = []

    def wait(state: tenacity.RetryCallState) -> float:
        assert state.outcome is not None
        error = state.outcome.exception()
        seen.append((state.attempt_number, type(error).__name__, state.seconds_since_start))
        return 3.0

    @retry(attempts=3, wait=wait, sleep=fake_sleep, clock=fake_clock)
    async def f() -> int:
        return await flaky()

    await f()
    assert seen == [(1, "ConnectionError", 0.0), (2, "TimeoutError", 3.0)]


async def test_the_default_wait_is_capped_full_jitter(fake_sleep: FakeSleep) -> None:
    """Before retry n, a wait in [0, min(5, 0.1 * 2**(n-1))]."""
    flaky = Flaky(*(ConnectionError() for _ in range(9)))

    @retry(attempts=10, sleep=fake_sleep)
    async def f() -> int:
        return await flaky()

    await f()
    assert len(fake_sleep.waits) == 9
    for n, waited in enumerate(fake_sleep.waits, start=1):
        assert 0 <= waited <= min(5.0, 0.1 * 2 ** (n - 1))
    assert isinstance(DEFAULT_WAIT, tenacity.wait_random_exponential)


async def test_on_types_replace_the_default(fake_sleep: FakeSleep) -> None:
    """on=(ValueError,) retries ValueError, and no longer ConnectionError."""
    flaky = Flaky(ValueError(), ConnectionError())

    @retry(attempts=3, wait=0, on=(ValueError,), sleep=fake_sleep)
    async def f() -> int:
        return await flaky()

    with pytest.raises(ConnectionError):
        await f()
    assert flaky.calls == 2


async def test_on_a_predicate(fake_sleep: FakeSleep) -> None:
    """on= takes a predicate on the exception."""
    flaky = Flaky(RuntimeError("try again"), RuntimeError("give up"))

    @retry(attempts=5, wait=0, on=lambda exc: "again" in str(exc), sleep=fake_sleep)
    async def f() -> int:
        return await flaky()

    with pytest.raises(RuntimeError, match="give up"):
        await f()
    assert flaky.calls == 2


async def test_on_a_tenacity_retry_strategy(fake_sleep: FakeSleep) -> None:
    """on= takes tenacity retry strategies, combined with | and &."""
    flaky = Flaky(KeyError(), IndexError(), LookupError())
    strategy = tenacity.retry_if_exception_type(KeyError) | tenacity.retry_if_exception_type(
        IndexError
    )

    @retry(attempts=5, wait=0, on=strategy, sleep=fake_sleep)
    async def f() -> int:
        return await flaky()

    with pytest.raises(LookupError):
        await f()
    assert flaky.calls == 3


async def test_retries_are_logged_without_the_message(
    fake_sleep: FakeSleep, caplog: pytest.LogCaptureFixture
) -> None:
    """Each retry is a WARNING naming the function and error type (not its text)."""
    flaky = Flaky(ConnectionError("password=hunter2"))

    @retry(attempts=2, wait=0.25, sleep=fake_sleep)
    async def fetch() -> int:
        return await flaky()

    with caplog.at_level(logging.WARNING, logger="resilience"):
        await fetch()
    assert "fetch" in caplog.text
    assert "ConnectionError" in caplog.text
    assert "hunter2" not in caplog.text


def test_sync_functions_retry_with_a_sync_sleep(fake_sleep: FakeSleep) -> None:
    """Sync functions retry too, sleeping through the sync sleep."""
    flaky = Flaky(ConnectionError())

    @retry(attempts=2, wait=0.1, sleep=fake_sleep.sync)
    def f(x: int) -> int:
        return flaky.sync(x)

    assert f(1) == 2
    assert fake_sleep.waits == [0.1]


def test_sync_functions_raise_the_last_error(fake_sleep: FakeSleep) -> None:
    """Sync exhaustion raises the last error."""
    flaky = Flaky(ConnectionError(), ConnectionError("last"))

    @retry(attempts=2, wait=0, sleep=fake_sleep.sync)
    def f() -> int:
        return flaky.sync()

    with pytest.raises(ConnectionError, match="last"):
        f()


def test_sync_functions_do_not_retry_rejections(fake_sleep: FakeSleep) -> None:
    """The sync driver applies the same rule."""
    flaky = Flaky(CircuitOpenError("db", CircuitState.OPEN, 1.0))

    @retry(attempts=3, sleep=fake_sleep.sync)
    def f() -> int:
        return flaky.sync()

    with pytest.raises(CircuitOpenError):
        f()
    assert flaky.calls == 1


def test_an_async_sleep_for_a_sync_function_is_refused(fake_sleep: FakeSleep) -> None:
    """A sync function cannot await its sleep: said at decoration."""
    with pytest.raises(TypeError, match="sync sleep"):

        @retry(sleep=fake_sleep)
        def f() -> None: ...


async def test_a_sync_sleep_works_for_an_async_function(fake_sleep: FakeSleep) -> None:
    """A sleep that returns no awaitable is simply called."""
    flaky = Flaky(ConnectionError())

    @retry(attempts=2, wait=0.2, sleep=fake_sleep.sync)
    async def f() -> int:
        return await flaky()

    await f()
    assert fake_sleep.waits == [0.2]


async def test_bare_decorator_uses_the_defaults() -> None:
    """@retry without arguments: 3 attempts."""

    @retry
    async def f() -> int:
        return 1

    assert await f() == 1
    assert f.retry_attempts == 3  # type: ignore[attr-defined]


async def test_bare_decorator_on_a_classmethod() -> None:
    """@retry over @classmethod works without arguments too."""

    class Repo:
        @retry
        @classmethod
        async def count(cls) -> int:
            return 3

    assert await Repo.count() == 3


async def test_methods_are_retried(fake_sleep: FakeSleep) -> None:
    """Methods get self and are retried."""
    flaky = Flaky(ConnectionError())

    class Client:
        base = 10

        @retry(attempts=2, wait=0, sleep=fake_sleep)
        async def get(self, x: int) -> int:
            return await flaky(x) + self.base

    assert await Client().get(1) == 12


def test_signature_and_kind_are_preserved() -> None:
    """wrapt keeps the signature and coroutine-function-ness."""

    @retry(attempts=2)
    async def fetch(customer_id: int, *, limit: int = 5) -> list[int]:
        """Doc."""
        return []

    assert list(inspect.signature(fetch).parameters) == ["customer_id", "limit"]
    assert inspect.iscoroutinefunction(fetch)
    assert fetch.__doc__ == "Doc."


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"attempts": 0}, ValueError),
        ({"attempts": -1}, ValueError),
        ({"attempts": 2.5}, TypeError),
        ({"attempts": True}, TypeError),
        ({"wait": -1}, ValueError),
        ({"wait": "1s"}, TypeError),
        ({"on": 42}, TypeError),
        ({"on": (KeyboardInterrupt,)}, TypeError),
        ({"sleep": 1}, TypeError),
        ({"clock": object()}, TypeError),
    ],
)
def test_bad_arguments_fail_at_decoration(kwargs: dict[str, Any], error: type[Exception]) -> None:
    """Every bad setting is refused when the decorator is built."""
    with pytest.raises(error):
        retry(**kwargs)


def test_generators_are_refused() -> None:
    """Retrying a generator would only retry creating it."""
    with pytest.raises(TypeError, match="generator"):

        @retry
        def rows() -> Any:
            yield 1


# -- the tenacity integration ---------------------------------------------------------

_TABLE: list[BaseException] = [
    ConnectionError(),
    TimeoutError(),
    CallTimeoutError("f", 1.0),
    OSError(),
    MemoryError(),
    SqlError("08001"),
    SqlError("53300"),
    SqlError("40001"),
    SqlError("40P01"),
    SqlError("XX000"),
    SqlError("28000"),
    SqlError("42P01"),
    CircuitOpenError("db", CircuitState.OPEN, 1.0),
    BulkheadFullError("b", 1, 0),
    ValueError(),
    asyncio.CancelledError(),
    KeyboardInterrupt(),
]


def test_the_integration_predicate_is_the_decorators_rule() -> None:
    """tenacity users get @retry's one rule, not a copy that can drift."""
    assert integration_is_transient is is_transient


async def test_retry_if_transient_drives_tenacity() -> None:
    """Plain tenacity users get the same rule."""
    flaky = Flaky(ConnectionError(), SqlError("42601"))
    retrying = tenacity.AsyncRetrying(
        retry=retry_if_transient,
        stop=tenacity.stop_after_attempt(5),
        wait=tenacity.wait_none(),
        reraise=True,
    )

    async def run() -> None:
        async for attempt in retrying:
            with attempt:
                await flaky()

    with pytest.raises(SqlError):
        await run()
    assert flaky.calls == 2


@pytest.mark.parametrize(
    "error",
    [
        CircuitOpenError("db", CircuitState.OPEN, 5.0),
        BulkheadFullError("pool", 1, 0),
        SqlError("28P01"),
        SqlError("42601"),
    ],
    ids=["circuit-open", "bulkhead-full", "auth", "query"],
)
async def test_a_broad_on_never_retries_rejections_auth_or_query_errors(
    error: Exception,
) -> None:
    """on=Exception still never retries what DESIGN says is never retried."""
    flaky = Flaky(error, error, error)

    @retry(attempts=3, wait=0, on=Exception)
    async def call() -> int:
        return await flaky()

    with pytest.raises(type(error)):
        await call()
    assert flaky.calls == 1


async def test_a_tenacity_strategy_never_retries_a_circuit_open_error() -> None:
    """A tenacity retry strategy is bounded by the same rule."""
    error = CircuitOpenError("db", CircuitState.OPEN, 5.0)
    flaky = Flaky(error, error)

    @retry(attempts=3, wait=0, on=tenacity.retry_if_exception_type(Exception))
    async def call() -> int:
        return await flaky()

    with pytest.raises(CircuitOpenError):
        await call()
    assert flaky.calls == 1


def test_settings_by_position_are_refused() -> None:
    """``@retry(3)`` says to pass attempts by keyword (stamina's shape)."""
    with pytest.raises(TypeError, match="by keyword"):
        retry(3)  # type: ignore[call-overload]


async def test_bare_retry_with_keyword_settings_on_a_function() -> None:
    """``retry(fn, attempts=2)`` works like ``retry(attempts=2)(fn)``."""
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("blip")
        return "ok"

    wrapped = retry(flaky, attempts=2, wait=0)  # type: ignore[call-overload]
    assert await wrapped() == "ok"
    assert calls == 2


# -- HTTP errors (httpx), as classify() sees them ---------------------------------------


def _status_error(status: int) -> Exception:
    import httpx

    request = httpx.Request("GET", "http://upstream.test/")
    response = httpx.Response(status, request=request)
    return httpx.HTTPStatusError(f"{status}", request=request, response=response)


async def test_bare_retry_retries_a_503_from_raise_for_status(fake_sleep: FakeSleep) -> None:
    """503 is transient: a bare @retry tries again."""
    errors = [_status_error(503)]

    @retry(sleep=fake_sleep)
    async def get() -> str:
        if errors:
            raise errors.pop()
        return "ok"

    assert await get() == "ok"


async def test_no_on_makes_a_404_retryable(fake_sleep: FakeSleep) -> None:
    """on=httpx.HTTPStatusError still raises a 404 at the first attempt."""
    import httpx

    calls = 0

    @retry(attempts=3, on=httpx.HTTPStatusError, sleep=fake_sleep)
    async def get() -> None:
        nonlocal calls
        calls += 1
        raise _status_error(404)

    with pytest.raises(httpx.HTTPStatusError):
        await get()
    assert calls == 1


async def test_bare_retry_retries_a_connect_error(fake_sleep: FakeSleep) -> None:
    """httpx.ConnectError is a connection error: retried."""
    import httpx

    errors: list[Exception] = [httpx.ConnectError("refused")]

    @retry(sleep=fake_sleep)
    async def get() -> str:
        if errors:
            raise errors.pop()
        return "ok"

    assert await get() == "ok"


@pytest.mark.parametrize(("status", "transient"), [(503, True), (429, True), (404, False)])
def test_retry_if_transient_reads_http_statuses(status: int, transient: bool) -> None:
    """The tenacity predicate follows classify() on raise_for_status() errors."""
    assert integration_is_transient(_status_error(status)) is transient
