"""What triggers a fallback: outages yes, ignored categories and cancellation never."""

from __future__ import annotations

import asyncio

import pytest

from resilience import (
    BulkheadFullError,
    CallTimeoutError,
    CircuitOpenError,
    CircuitState,
    Registry,
    circuit,
    fallback,
)
from resilience.testing import FakeClock

from ..conftest import CountingCache, SqlError

# -- what triggers -----------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError("refused"),
        TimeoutError(),
        CallTimeoutError("f", 1.0),
        BulkheadFullError("b", 1, 0),
        CircuitOpenError("c", CircuitState.OPEN, 5.0),
        SqlError("08006"),
        SqlError("53300"),
        SqlError("XX000"),
        RuntimeError("unknown"),
    ],
    ids=lambda e: type(e).__name__ + getattr(e, "sqlstate", ""),
)
async def test_triggers_on_outages(cache: CountingCache, error: Exception) -> None:
    """Rejections, timeouts and failure-outcome errors serve the fallback."""
    raise_it = False

    @fallback(cache)
    async def get(x: int) -> str:
        if raise_it:
            raise error
        return "good"

    await get(1)
    raise_it = True
    assert await get(1) == "good"


@pytest.mark.parametrize("sqlstate", ["42601", "42P01", "23505", "22P02", "28P01", "40001"])
async def test_never_triggers_on_ignored_categories(cache: CountingCache, sqlstate: str) -> None:
    """Bad SQL, bad data, bad credentials, a lost transaction: raised, never hidden."""
    raise_it = False

    @fallback(cache)
    async def get(x: int) -> str:
        if raise_it:
            raise SqlError(sqlstate)
        return "good"

    await get(1)
    raise_it = True
    reads = cache.gets
    with pytest.raises(SqlError):
        await get(1)
    assert cache.gets == reads


async def test_cancellation_is_never_a_trigger(cache: CountingCache) -> None:
    """A cancelled call stays cancelled."""
    cancel = False

    @fallback(cache)
    async def get(x: int) -> str:
        if cancel:
            raise asyncio.CancelledError
        return "good"

    await get(1)
    cancel = True
    with pytest.raises(asyncio.CancelledError):
        await get(1)


async def test_the_inner_breakers_verdict_is_honoured(cache: CountingCache) -> None:
    """An error the innermost breaker ignores does not trigger the fallback."""
    down = False

    @fallback(cache)
    @circuit("ignores-connection", registry=Registry(), ignore=(ConnectionError,))
    async def get(x: int) -> str:
        if down:
            raise ConnectionError
        return "good"

    await get(1)
    down = True
    with pytest.raises(ConnectionError):
        await get(1)


async def test_an_open_inner_circuit_serves_the_fallback(cache: CountingCache) -> None:
    """The DESIGN example: @fallback(cache) over @circuit."""
    reg = Registry(clock=FakeClock())

    @fallback(cache)
    @circuit("users-db", registry=reg)
    async def get(x: int) -> str:
        return "good"

    await get(1)
    get.breaker.force_open()  # type: ignore[attr-defined]
    assert await get(1) == "good"


async def test_on_types_replace_the_default(cache: CountingCache) -> None:
    """on=(ValueError,) triggers on ValueError and no longer on ConnectionError."""
    error: Exception | None = None

    @fallback(cache, on=(ValueError,))
    async def get(x: int) -> str:
        if error is not None:
            raise error
        return "good"

    await get(1)
    error = ValueError()
    assert await get(1) == "good"
    error = ConnectionError()
    with pytest.raises(ConnectionError):
        await get(1)


async def test_on_a_single_type(cache: CountingCache) -> None:
    """on= takes a bare exception type too."""
    fail = False

    @fallback(cache, on=KeyError)
    async def get(x: int) -> str:
        if fail:
            raise KeyError(x)
        return "good"

    await get(1)
    fail = True
    assert await get(1) == "good"


async def test_on_can_opt_in_to_an_ignored_category(cache: CountingCache) -> None:
    """on= naming a query error makes it a trigger: the user said so."""
    fail = False

    @fallback(cache, on=SqlError)
    async def get(x: int) -> str:
        if fail:
            raise SqlError("42P01")
        return "good"

    await get(1)
    fail = True
    assert await get(1) == "good"


async def test_on_a_predicate(cache: CountingCache) -> None:
    """on= takes a predicate fn(exc) -> bool."""
    fail = False

    @fallback(cache, on=lambda exc: "retryable" in str(exc))
    async def get(x: int) -> str:
        if fail:
            raise RuntimeError("retryable")
        return "good"

    await get(1)
    fail = True
    assert await get(1) == "good"
