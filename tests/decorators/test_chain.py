"""@chain and chain.of: failover across resources and callables."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import pytest

from resilience import (
    BulkheadFullError,
    ChainExhaustedError,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ResilienceError,
    chain,
    registry,
)
from resilience.testing import FakeClock

from .conftest import SqlError


class Pool:
    """A resource with its own breaker, like ResilientPool."""

    def __init__(self, name: str, *, clock: FakeClock | None = None) -> None:
        self.name = name
        self.circuit_breaker = CircuitBreaker(name, clock=clock or FakeClock())
        self.error: Exception | None = None
        self.calls = 0

    async def query(self, x: Any) -> tuple[str, Any]:
        self.calls += 1
        return await self.circuit_breaker.call(self._run, x)

    async def _run(self, x: Any) -> tuple[str, Any]:
        if self.error is not None:
            raise self.error
        return self.name, x

    def query_sync(self, x: Any) -> tuple[str, Any]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.name, x


@pytest.fixture
def primary() -> Pool:
    """The primary pool."""
    return Pool("primary")


@pytest.fixture
def backup() -> Pool:
    """The backup pool."""
    return Pool("backup")


async def test_the_primary_answers_first(primary: Pool, backup: Pool) -> None:
    """A healthy primary: the backup is never called."""

    @chain(primary, backup)
    async def find(pool: Pool, x: int) -> tuple[str, Any]:
        return await pool.query(x)

    assert await find(1) == ("primary", 1)
    assert backup.calls == 0


async def test_a_failing_primary_fails_over(primary: Pool, backup: Pool) -> None:
    """A connection error on the primary: the backup answers."""
    primary.error = ConnectionError("primary down")

    @chain(primary, backup)
    async def find(pool: Pool, x: int) -> tuple[str, Any]:
        return await pool.query(x)

    assert await find(1) == ("backup", 1)


async def test_keyword_arguments_reach_every_resource(primary: Pool, backup: Pool) -> None:
    """The caller's arguments follow the resource."""
    primary.error = ConnectionError()

    @chain(primary, backup)
    async def find(pool: Pool, x: int, *, label: str = "") -> tuple[str, Any]:
        return await pool.query(f"{label}{x}")

    assert await find(1, label="#") == ("backup", "#1")


async def test_all_failing_raises_chain_exhausted(primary: Pool, backup: Pool) -> None:
    """Every cause is in the group, in order."""
    first, second = ConnectionError("p"), TimeoutError("b")
    primary.error, backup.error = first, second

    @chain(primary, backup)
    async def find(pool: Pool, x: int) -> tuple[str, Any]:
        return await pool.query(x)

    with pytest.raises(ChainExhaustedError) as raised:
        await find(1)
    assert raised.value.exceptions == (first, second)


async def test_chain_exhausted_is_a_resilience_error_and_a_group(primary: Pool) -> None:
    """except ResilienceError and except* both catch it."""
    primary.error = ConnectionError()

    @chain(primary)
    async def find(pool: Pool, x: int) -> tuple[str, Any]:
        return await pool.query(x)

    with pytest.raises(ChainExhaustedError) as raised:
        await find(1)
    assert isinstance(raised.value, ResilienceError)
    assert isinstance(raised.value, ExceptionGroup)
    assert "find" in str(raised.value)


async def test_except_star_matches_the_causes(primary: Pool, backup: Pool) -> None:
    """Callers can handle the causes by type."""
    primary.error, backup.error = ConnectionError(), ConnectionError()

    @chain(primary, backup)
    async def find(pool: Pool, x: int) -> tuple[str, Any]:
        return await pool.query(x)

    caught: list[BaseException] = []
    try:
        await find(1)
    except* ConnectionError as group:
        caught.extend(group.exceptions)
    assert len(caught) == 2


@pytest.mark.parametrize("sqlstate", ["42601", "28P01", "23505"])
async def test_ignored_errors_propagate_at_once(primary: Pool, backup: Pool, sqlstate: str) -> None:
    """A bad query is a bug on every resource: no failover, raised unchanged."""
    error = SqlError(sqlstate)
    primary.error = error

    @chain(primary, backup)
    async def find(pool: Pool, x: int) -> tuple[str, Any]:
        return await pool.query(x)

    with pytest.raises(SqlError) as raised:
        await find(1)
    assert raised.value is error
    assert backup.calls == 0


@pytest.mark.parametrize(
    "error",
    [
        CircuitOpenError("x", CircuitState.HALF_OPEN, 1.0),
        BulkheadFullError("b", 1, 0),
        TimeoutError(),
        SqlError("57P01"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_fails_over_on_the_fallback_errors(
    primary: Pool, backup: Pool, error: Exception
) -> None:
    """Rejections, timeouts and failures fail over, as for @fallback."""
    primary.error = error

    @chain(primary, backup)
    async def find(pool: Pool, x: int) -> tuple[str, Any]:
        return await pool.query(x)

    assert await find(1) == ("backup", 1)


async def test_an_open_primary_is_skipped_without_a_call(primary: Pool, backup: Pool) -> None:
    """An open circuit costs no call (and no waiting)."""
    primary.circuit_breaker.force_open()

    @chain(primary, backup)
    async def find(pool: Pool, x: int) -> tuple[str, Any]:
        return await pool.query(x)

    assert await find(1) == ("backup", 1)
    assert primary.calls == 0


async def test_a_skipped_resource_leaves_its_rejection_in_the_group(
    primary: Pool, backup: Pool
) -> None:
    """The CircuitOpenError of a skipped resource is one of the causes."""
    clock = FakeClock()
    primary = Pool("primary", clock=clock)
    for _ in range(5):
        with pytest.raises(ConnectionError):
            await primary.circuit_breaker.call(_refuse)
    backup.error = ConnectionError()

    @chain(primary, backup)
    async def find(pool: Pool, x: int) -> tuple[str, Any]:
        return await pool.query(x)

    with pytest.raises(ChainExhaustedError) as raised:
        await find(1)
    rejection = raised.value.exceptions[0]
    assert isinstance(rejection, CircuitOpenError)
    assert rejection.name == "primary"
    assert rejection.retry_after == pytest.approx(60.0)
    assert rejection.last_failure_category is not None


async def _refuse() -> None:
    raise ConnectionError("refused")


async def test_a_half_open_primary_is_tried(primary: Pool, backup: Pool) -> None:
    """Once the open period is over, the primary gets its probe."""
    clock = FakeClock()
    primary = Pool("primary", clock=clock)
    for _ in range(5):
        with pytest.raises(ConnectionError):
            await primary.circuit_breaker.call(_refuse)
    clock.advance(60)

    @chain(primary, backup)
    async def find(pool: Pool, x: int) -> tuple[str, Any]:
        return await pool.query(x)

    assert await find(1) == ("primary", 1)


async def test_resources_without_a_breaker_are_always_tried() -> None:
    """Plain objects (no .circuit_breaker) are called."""

    @chain("a", "b")
    async def find(name: str, x: int) -> str:
        if name == "a":
            raise ConnectionError
        return f"{name}{x}"

    assert await find(1) == "b1"


async def test_it_creates_no_breakers(primary: Pool, backup: Pool) -> None:
    """The default registry is untouched by decorating and calling."""
    before = len(registry)
    primary.error = ConnectionError()

    @chain(primary, backup)
    async def find(pool: Pool, x: int) -> tuple[str, Any]:
        return await pool.query(x)

    await find(1)
    assert len(registry) == before


async def test_on_replaces_the_failover_rule(primary: Pool, backup: Pool) -> None:
    """on=(ValueError,) fails over on ValueError and no longer on ConnectionError."""

    @chain(primary, backup, on=ValueError)
    async def find(pool: Pool, x: int) -> tuple[str, Any]:
        if pool is primary and x == 1:
            raise ValueError
        return await pool.query(x)

    assert await find(1) == ("backup", 1)
    primary.error = ConnectionError()
    with pytest.raises(ConnectionError):
        await find(2)


def test_sync_functions_fail_over(primary: Pool, backup: Pool) -> None:
    """@chain works on sync functions."""
    primary.error = ConnectionError()

    @chain(primary, backup)
    def find(pool: Pool, x: int) -> tuple[str, Any]:
        return pool.query_sync(x)

    assert find(1) == ("backup", 1)


def test_sync_functions_raise_chain_exhausted(primary: Pool, backup: Pool) -> None:
    """Sync exhaustion is a ChainExhaustedError too."""
    primary.error = backup.error = ConnectionError()

    @chain(primary, backup)
    def find(pool: Pool, x: int) -> tuple[str, Any]:
        return pool.query_sync(x)

    with pytest.raises(ChainExhaustedError):
        find(1)


def test_sync_functions_skip_an_open_resource(primary: Pool, backup: Pool) -> None:
    """Sync callers skip open resources as well."""
    primary.circuit_breaker.force_open()

    @chain(primary, backup)
    def find(pool: Pool, x: int) -> tuple[str, Any]:
        return pool.query_sync(x)

    assert find(1) == ("backup", 1)
    assert primary.calls == 0


async def test_methods_take_the_resource_after_self(primary: Pool, backup: Pool) -> None:
    """On a method, the resource comes after self."""
    primary.error = ConnectionError()

    class Repo:
        prefix = "repo:"

        @chain(primary, backup)
        async def find(self, pool: Pool, x: int) -> tuple[str, Any]:
            return await pool.query(self.prefix + str(x))

    assert await Repo().find(1) == ("backup", "repo:1")


def test_the_signature_leaves_the_resource_out(primary: Pool) -> None:
    """Callers see the function without its resource parameter."""

    @chain(primary)
    async def find(pool: Pool, customer_id: int, *, limit: int = 10) -> list[int]:
        return []

    assert list(inspect.signature(find).parameters) == ["customer_id", "limit"]
    assert inspect.iscoroutinefunction(find)
    assert find.__name__ == "find"


def test_a_methods_signature_leaves_the_resource_out(primary: Pool) -> None:
    """Bound and unbound, a method's signature has no resource parameter."""

    class Repo:
        @chain(primary)
        async def find(self, pool: Pool, customer_id: int) -> None: ...

    assert list(inspect.signature(Repo.find).parameters) == ["self", "customer_id"]
    assert list(inspect.signature(Repo().find).parameters) == ["customer_id"]


def test_the_resources_are_listed(primary: Pool, backup: Pool) -> None:
    """.resources shows the order."""

    @chain(primary, backup)
    async def find(pool: Pool) -> None: ...

    assert find.resources == (primary, backup)  # type: ignore[attr-defined]


def test_no_resources_is_a_value_error() -> None:
    """A chain of nothing is refused."""
    with pytest.raises(ValueError):
        chain()


def test_a_function_without_a_resource_parameter_is_refused(primary: Pool) -> None:
    """The resource needs a positional parameter."""
    with pytest.raises(TypeError, match="resource"):

        @chain(primary)
        async def find(*, x: int) -> None: ...


def test_a_bad_on_is_refused(primary: Pool) -> None:
    """on= is validated at decoration."""
    with pytest.raises(TypeError):
        chain(primary, on=42)  # type: ignore[call-overload]


# -- chain.of -----------------------------------------------------------------------


async def test_of_tries_callables_in_order() -> None:
    """chain.of(f1, f2) calls f2 when f1 fails."""
    calls: list[str] = []

    async def full(q: str) -> str:
        calls.append("full")
        raise ConnectionError

    async def simple(q: str) -> str:
        calls.append("simple")
        return f"simple {q}"

    search = chain.of(full, simple)
    assert await search("x") == "simple x"
    assert calls == ["full", "simple"]


async def test_of_mixes_sync_and_async() -> None:
    """A sync last resort after async ones; the result is async."""

    async def full(q: str) -> list[str]:
        raise ConnectionError

    def popular(q: str) -> list[str]:
        return ["popular"]

    search = chain.of(full, popular)
    assert inspect.iscoroutinefunction(search)
    assert await search("x") == ["popular"]


def test_of_all_sync_is_sync() -> None:
    """Sync members only: a sync function."""

    def first(x: int) -> int:
        raise ConnectionError

    def second(x: int) -> int:
        return x + 1

    composed = chain.of(first, second)
    assert not inspect.iscoroutinefunction(composed)
    assert composed(1) == 2


async def test_of_raises_chain_exhausted_with_every_cause() -> None:
    """All members fail: ChainExhaustedError of each error."""
    errors = [ConnectionError("a"), TimeoutError("b")]

    async def a() -> None:
        raise errors[0]

    async def b() -> None:
        raise errors[1]

    with pytest.raises(ChainExhaustedError) as raised:
        await chain.of(a, b)()
    assert list(raised.value.exceptions) == errors


def test_of_sync_raises_chain_exhausted() -> None:
    """Sync exhaustion too."""

    def a() -> None:
        raise ConnectionError

    with pytest.raises(ChainExhaustedError):
        chain.of(a, a)()


async def test_of_propagates_ignored_errors() -> None:
    """A bad query in the first member is raised at once."""
    called = False

    async def a() -> None:
        raise SqlError("42601")

    async def b() -> None:
        nonlocal called
        called = True

    with pytest.raises(SqlError):
        await chain.of(a, b)()
    assert not called


def test_of_keeps_the_first_signature() -> None:
    """The composed function looks like its first member."""

    async def full_search(query: str, *, limit: int = 10) -> list[str]:
        """Search everything."""
        return []

    async def simple(query: str, *, limit: int = 10) -> list[str]:
        return []

    search = chain.of(full_search, simple)
    assert search.__name__ == "full_search"
    assert search.__doc__ == "Search everything."
    assert list(inspect.signature(search).parameters) == ["query", "limit"]


async def test_of_with_an_on_rule() -> None:
    """chain.of takes on= too."""

    async def a() -> str:
        raise KeyError

    async def b() -> str:
        return "b"

    assert await chain.of(a, b, on=KeyError)() == "b"


def test_of_refuses_non_callables() -> None:
    """Members must be callable."""
    with pytest.raises(TypeError):
        chain.of(print, 42)  # type: ignore[call-overload]


async def test_cancellation_never_fails_over(primary: Pool, backup: Pool) -> None:
    """A cancelled call is not a failover reason."""

    @chain(primary, backup)
    async def find(pool: Pool, x: int) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await find(1)
    assert backup.calls == 0


async def test_an_error_that_does_not_fail_over_logs_the_earlier_failures(
    primary: Pool, backup: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """A later ignored error is raised unchanged; the failures before it are logged at DEBUG."""
    primary.error = ConnectionError("primary down")
    error = SqlError("42601")
    backup.error = error

    @chain(primary, backup)
    async def find(pool: Pool, x: int) -> tuple[str, Any]:
        return await pool.query(x)

    with caplog.at_level(logging.DEBUG, logger="resilience"), pytest.raises(SqlError) as raised:
        await find(1)
    assert raised.value is error
    assert "ConnectionError: primary down" in caplog.text


async def test_the_exhausted_message_counts_failed_and_skipped(primary: Pool, backup: Pool) -> None:
    """ChainExhaustedError says how many resources failed and how many were skipped."""
    primary.circuit_breaker.force_open()
    backup.error = ConnectionError()
    third = Pool("third")
    third.error = ConnectionError()

    @chain(primary, backup, third)
    async def find(pool: Pool, x: int) -> tuple[str, Any]:
        return await pool.query(x)

    with pytest.raises(ChainExhaustedError) as raised:
        await find(1)
    assert "2 failed, 1 skipped" in str(raised.value)
