"""The recommended order, outermost first: fallback, chain, retry, circuit,
timeout, bulkhead, function. One test (or two) per adjacent pair, then the
whole stack (see docs/composition.md for the why)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from resilience import (
    BulkheadFullError,
    CallTimeoutError,
    ChainExhaustedError,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    Registry,
    bulkhead,
    chain,
    circuit,
    degradation_scope,
    fallback,
    is_degraded,
    retry,
    timeout,
)
from resilience.testing import FakeClock

from .conftest import CountingCache, FakeSleep, SqlError

LIMIT = 0.01  # the only real waits in this file are @timeout deadlines this short


class Pool:
    """A resource with its own breaker (as ResilientPool has)."""

    def __init__(self, name: str, clock: FakeClock) -> None:
        self.name = name
        self.circuit_breaker = CircuitBreaker(name, clock=clock, failure_threshold=2)
        self.down = False
        self.calls = 0

    async def query(self, x: int) -> str:
        async with self.circuit_breaker:
            self.calls += 1
            await asyncio.sleep(0)
            if self.down:
                raise ConnectionError(f"{self.name} down")
            return f"{self.name}:{x}"


@pytest.fixture
def reg(fake_clock: FakeClock) -> Registry:
    """Breakers of their own, on the fake clock."""
    return Registry(clock=fake_clock)


async def _hang() -> None:
    await asyncio.Event().wait()


# -- fallback over chain ------------------------------------------------------------


async def test_fallback_over_chain_serves_the_cache_when_every_resource_fails(
    fake_clock: FakeClock,
) -> None:
    """ChainExhaustedError is an outage: the last good value is served."""
    primary, replica = Pool("primary", fake_clock), Pool("replica", fake_clock)
    cache = CountingCache()

    @fallback(cache)
    @chain(primary, replica)
    async def find(pool: Pool, x: int) -> str:
        return await pool.query(x)

    assert await find(1) == "primary:1"
    primary.down = replica.down = True
    with degradation_scope():
        assert await find(1) == "primary:1"
        assert is_degraded()


async def test_fallback_over_chain_keys_on_the_callers_arguments(fake_clock: FakeClock) -> None:
    """The resource is not part of the key: an answer from the replica covers the primary."""
    primary, replica = Pool("primary", fake_clock), Pool("replica", fake_clock)
    primary.down = True

    @fallback(CountingCache())
    @chain(primary, replica)
    async def find(pool: Pool, x: int) -> str:
        return await pool.query(x)

    assert await find(x=1) == "replica:1"
    replica.down = True
    assert await find(1) == "replica:1"


async def test_a_chain_that_fails_over_is_not_degraded(fake_clock: FakeClock) -> None:
    """A backup answering is a success for the fallback: written (behind), not degraded."""
    primary, replica = Pool("primary", fake_clock), Pool("replica", fake_clock)
    primary.down = True
    cache = CountingCache()

    @fallback(cache)
    @chain(primary, replica)
    async def find(pool: Pool, x: int) -> str:
        return await pool.query(x)

    with degradation_scope():
        assert await find(1) == "replica:1"
        assert not is_degraded()
    await find.fallback.flush()  # type: ignore[attr-defined]  # written behind
    assert cache.sets == 1


# -- chain over retry -----------------------------------------------------------------


async def test_chain_over_retry_retries_each_resource_before_failing_over(
    fake_clock: FakeClock, fake_sleep: FakeSleep
) -> None:
    """A blip on the primary is retried there; a dead primary hands over to the replica."""
    primary, replica = Pool("primary", fake_clock), Pool("replica", fake_clock)
    primary.circuit_breaker.reconfigure(failure_threshold=10)
    primary.down = True

    @chain(primary, replica)
    @retry(attempts=3, wait=0.1, sleep=fake_sleep)
    async def find(pool: Pool, x: int) -> str:
        return await pool.query(x)

    assert await find(1) == "replica:1"
    assert primary.calls == 3
    assert fake_sleep.waits == [0.1, 0.1]


async def test_chain_over_retry_skips_an_open_resource_without_retrying(
    fake_clock: FakeClock, fake_sleep: FakeSleep
) -> None:
    """An open primary costs nothing: no call, no retry, no sleep."""
    primary, replica = Pool("primary", fake_clock), Pool("replica", fake_clock)
    primary.circuit_breaker.force_open()

    @chain(primary, replica)
    @retry(attempts=3, wait=1.0, sleep=fake_sleep)
    async def find(pool: Pool, x: int) -> str:
        return await pool.query(x)

    assert await find(1) == "replica:1"
    assert primary.calls == 0
    assert fake_sleep.waits == []


# -- retry over circuit ----------------------------------------------------------------


async def test_retry_over_circuit_stops_when_the_circuit_opens(
    reg: Registry, fake_sleep: FakeSleep
) -> None:
    """Each attempt is counted; once open, CircuitOpenError ends the retries."""
    calls = 0

    @retry(attempts=5, wait=0.1, sleep=fake_sleep)
    @circuit("db", registry=reg, failure_threshold=2)
    async def query() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError

    with pytest.raises(CircuitOpenError):
        await query()
    assert calls == 2
    assert query.breaker.metrics()["failed_calls"] == 2  # type: ignore[attr-defined]
    assert query.breaker.metrics()["rejected_calls"] == 1  # type: ignore[attr-defined]


async def test_retry_over_circuit_does_not_retry_a_bad_query(
    reg: Registry, fake_sleep: FakeSleep
) -> None:
    """An ignored error passes both layers untouched: one call, breaker unaffected."""
    calls = 0

    @retry(attempts=5, sleep=fake_sleep)
    @circuit("db", registry=reg)
    async def query() -> None:
        nonlocal calls
        calls += 1
        raise SqlError("42601")

    with pytest.raises(SqlError):
        await query()
    assert calls == 1
    assert query.breaker.metrics()["failed_calls"] == 0  # type: ignore[attr-defined]


# -- circuit over timeout ----------------------------------------------------------------


async def test_circuit_over_timeout_counts_timeouts_as_failures(reg: Registry) -> None:
    """A call cut by @timeout is a TIMEOUT_ERROR failure: enough of them open the circuit."""

    @circuit("slow-db", registry=reg, failure_threshold=2)
    @timeout(LIMIT)
    async def query() -> None:
        await _hang()

    for _ in range(2):
        with pytest.raises(CallTimeoutError):
            await query()
    breaker = query.breaker  # type: ignore[attr-defined]
    assert breaker.state is CircuitState.OPEN
    assert breaker.metrics()["failures_by_category"] == {"TIMEOUT_ERROR": 2}
    with pytest.raises(CircuitOpenError):
        await query()


# -- timeout over bulkhead ----------------------------------------------------------------


async def test_timeout_over_bulkhead_bounds_the_wait_for_a_slot() -> None:
    """Waiting for a slot counts against the deadline; a timed-out waiter leaves the queue."""
    release = asyncio.Event()
    entered = asyncio.Event()

    @timeout(LIMIT)
    @bulkhead(1, max_waiting=1)
    async def query(tag: int) -> int:
        if tag == 0:
            entered.set()
            await release.wait()
        return tag

    holder = asyncio.create_task(_hold_with(query, release))
    await entered.wait()
    with pytest.raises(CallTimeoutError):
        await query(1)
    assert query.bulkhead.waiting == 0  # type: ignore[attr-defined]
    release.set()
    assert await holder == 0


async def _hold_with(query: Any, release: asyncio.Event) -> int:
    # The holder is not under the deadline: it runs query's undecorated bulkhead layer.
    result: int = await query.__wrapped__(0)
    return result


# -- bulkhead over the function -----------------------------------------------------------


async def test_bulkhead_over_the_function_caps_its_concurrency() -> None:
    """No more than max_concurrent executions at once; the rest queue or are shed."""
    running = peak = 0
    release = asyncio.Event()

    @bulkhead(2, max_waiting=2)
    async def query() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    tasks = [asyncio.create_task(query()) for _ in range(4)]
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFullError):
        await query()
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 2


async def test_a_full_bulkhead_is_not_held_against_the_dependency(reg: Registry) -> None:
    """Circuit outside bulkhead: shed load is ignored by the breaker."""
    release = asyncio.Event()

    @circuit("db", registry=reg, failure_threshold=1)
    @bulkhead(1)
    async def query() -> None:
        await release.wait()

    task = asyncio.create_task(query())
    await asyncio.sleep(0)
    for _ in range(3):
        with pytest.raises(BulkheadFullError):
            await query()
    breaker = query.breaker  # type: ignore[attr-defined]
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics()["ignored_calls"] == 3
    release.set()
    await task


# -- the whole stack -------------------------------------------------------------------------


async def test_the_whole_stack_degrades_step_by_step(reg: Registry, fake_sleep: FakeSleep) -> None:
    """Primary blip retried; primary dead -> replica; both dead -> cache; cache empty -> error."""
    state = {"primary": "up", "replica": "up"}
    calls = {"primary": 0, "replica": 0}

    def member(name: str) -> Any:
        @retry(attempts=2, wait=0.1, sleep=fake_sleep)
        @circuit(name, registry=reg, failure_threshold=3)
        @timeout(1.0)
        @bulkhead(10)
        async def fetch(x: int) -> str:
            calls[name] += 1
            await asyncio.sleep(0)
            if state[name] == "blip":
                state[name] = "up"
                raise ConnectionError("blip")
            if state[name] == "down":
                raise ConnectionError(f"{name} down")
            return f"{name}:{x}"

        return fetch

    cache = CountingCache()
    fetch = fallback(cache)(chain.of(member("primary"), member("replica")))

    state["primary"] = "blip"
    assert await fetch(1) == "primary:1"  # retried on the primary
    state["primary"] = "down"
    assert await fetch(1) == "replica:1"  # failed over
    state["replica"] = "down"
    with degradation_scope():
        assert await fetch(1) == "replica:1"  # served stale
        assert is_degraded()
    assert reg.get("primary").state is CircuitState.OPEN  # type: ignore[union-attr]
    before = calls["primary"]
    await fetch(1)
    assert calls["primary"] == before  # an open primary costs no call
    with pytest.raises(ChainExhaustedError):
        await fetch(2)  # nothing cached for 2: the chain's error, unchanged
