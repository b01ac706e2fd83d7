"""The breaker's rules as DESIGN.md states them, one regression test per
defect found from outside (issue 11): nesting, failure counts, no-op
transitions, strict slow calls, loud misuse, listener order, bounded memory,
validation."""

from __future__ import annotations

import asyncio
import gc
import itertools
import linecache
import math
import random
import threading
import warnings
from typing import Any

import pytest

from resilience import (
    CircuitBreaker,
    CircuitConfig,
    CircuitOpenError,
    CircuitState,
    Registry,
    circuit,
)
from resilience.testing import FakeClock


class Down(ConnectionError):
    """The dependency is down."""


# -- nesting -------------------------------------------------------------------


def _nested_pair(reg: Registry, **fields: Any) -> tuple[Any, Any]:
    """Two repository functions on one breaker, the outer calling the inner."""

    @circuit("users-db", registry=reg, **fields)
    async def inner(fail: bool) -> int:
        if fail:
            raise Down("users-db is down")
        return 1

    @circuit("users-db", registry=reg, **fields)
    async def outer(fail: bool) -> int:
        return await inner(fail) + 1

    return outer, inner


async def test_a_nested_failure_counts_once(fake_clock: FakeClock) -> None:
    """Two @circuit("users-db") functions, one calling the other: one failure is one failure."""
    reg = Registry(clock=fake_clock)
    outer, _ = _nested_pair(reg, failure_threshold=3)
    for _ in range(2):
        with pytest.raises(Down):
            await outer(True)
    b = reg.get("users-db")
    assert b is not None
    assert b.state is CircuitState.CLOSED
    assert b.status()["failure_count"] == 2
    assert b.metrics()["failed_calls"] == 2


async def test_a_nested_failure_counts_once_in_a_settled_window(fake_clock: FakeClock) -> None:
    """The same once the window is settled and calls are admitted without the lock."""
    reg = Registry(clock=fake_clock)
    outer, inner = _nested_pair(reg, failure_threshold=2, window_size=10)
    for _ in range(20):
        assert await inner(False) == 1  # not nested: the window settles
    b = reg.get("users-db")
    assert b is not None and b._m.lane > 0  # settled: the lock-free lane
    with pytest.raises(Down):
        await outer(True)
    assert b.state is CircuitState.CLOSED  # 1 failure, not 2
    assert b.status()["failure_count"] == 1


async def test_a_nested_call_passes_straight_through(fake_clock: FakeClock) -> None:
    """A nested call is not admitted again and not counted again."""
    reg = Registry(clock=fake_clock)
    outer, _ = _nested_pair(reg)
    assert await outer(False) == 2
    b = reg.get("users-db")
    assert b is not None
    assert b.metrics()["total_calls"] == 1


async def test_nested_calls_close_a_half_open_circuit_with_one_permit(
    fake_clock: FakeClock,
) -> None:
    """With one half-open permit, the nested call is not rejected: the probe closes the circuit."""
    reg = Registry(clock=fake_clock)
    outer, _ = _nested_pair(
        reg, failure_threshold=1, recovery_timeout=10, success_threshold=1, half_open_max_calls=1
    )
    with pytest.raises(Down):
        await outer(True)
    b = reg.get("users-db")
    assert b is not None and b.state is CircuitState.OPEN
    fake_clock.advance(10)
    assert await outer(False) == 2
    assert b.state is CircuitState.CLOSED


def test_nesting_holds_for_sync_code_in_threads(fake_clock: FakeClock) -> None:
    """Sync nested calls in several threads: each thread's nesting is its own."""
    reg = Registry(clock=fake_clock)

    @circuit("sync-db", registry=reg, failure_threshold=1000)
    def inner() -> int:
        return 1

    @circuit("sync-db", registry=reg, failure_threshold=1000)
    def outer() -> int:
        return inner() + 1

    def work() -> None:
        for _ in range(200):
            assert outer() == 2

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b = reg.get("sync-db")
    assert b is not None
    assert b.metrics()["total_calls"] == 800


async def test_concurrent_tasks_are_not_nested(fake_clock: FakeClock) -> None:
    """Nesting is per task: a concurrent caller still needs its own half-open permit."""
    b = CircuitBreaker("per-task", clock=fake_clock, failure_threshold=1, recovery_timeout=1,
                       half_open_max_calls=1)  # fmt: skip
    permit = b.try_acquire()
    assert permit is not None
    permit.failure(Down())
    fake_clock.advance(1)
    gate = asyncio.Event()

    async def probe() -> int:
        await gate.wait()
        return 1

    first = asyncio.create_task(b.call(probe))
    await asyncio.sleep(0)  # the first caller takes the only permit
    with pytest.raises(CircuitOpenError):
        await b.call(probe)
    gate.set()
    assert await first == 1


async def test_nesting_that_starts_after_settling_is_found_and_then_counted_exactly(
    fake_clock: FakeClock,
) -> None:
    """Successful nested calls on the lock-free lane are found by the latency
    sample within a few hundred calls; from then on each counts once."""
    reg = Registry(clock=fake_clock)
    outer, inner = _nested_pair(reg, window_size=10)
    for _ in range(2000):
        await inner(False)  # settles, and passes the 1,024 timed calls
    b = reg.get("users-db")
    assert b is not None and b._m.lane > 0
    for _ in range(1000):  # a look up the stack at every other run's end: every 400 calls or so
        await outer(False)
    assert b._m.nested and b._m.lane == 0
    before = b.metrics()["total_calls"]
    for _ in range(100):
        await outer(False)
    assert b.metrics()["total_calls"] == before + 100


async def test_a_task_started_inside_a_call_is_not_nested_in_it(fake_clock: FakeClock) -> None:
    """A task created inside an admitted call (a background refresh) has its own calls counted."""
    reg = Registry(clock=fake_clock)

    @circuit("spawn-db", registry=reg)
    async def read() -> int:
        return 1

    @circuit("spawn-db", registry=reg)
    async def handler() -> asyncio.Task[list[int]]:
        async def background() -> list[int]:
            return [await read() for _ in range(3)]

        return asyncio.create_task(background())

    b = reg.get_or_create("spawn-db")
    task = await handler()
    assert await task == [1, 1, 1]
    assert b.metrics()["total_calls"] == 4  # the handler and the task's three reads


async def test_a_block_nested_in_a_guarded_call_passes_through(fake_clock: FakeClock) -> None:
    """`async with breaker:` inside a call the breaker admitted records nothing more."""
    reg = Registry(clock=fake_clock)

    @circuit("block-db", registry=reg)
    async def outer() -> int:
        async with b:
            return 1

    b = reg.get_or_create("block-db")
    assert await outer() == 1
    assert b.metrics()["total_calls"] == 1


# -- counts and transitions -----------------------------------------------------


def test_failure_count_includes_failed_half_open_probes(fake_clock: FakeClock) -> None:
    """status()["failure_count"] is the consecutive failures, failed probes included."""
    b = CircuitBreaker("fc", clock=fake_clock, failure_threshold=2, recovery_timeout=1)
    for _ in range(2):
        permit = b.try_acquire()
        assert permit is not None
        permit.failure(Down())
    assert b.status()["failure_count"] == 2
    fake_clock.advance(1)
    permit = b.try_acquire()
    assert permit is not None
    permit.failure(Down())  # the probe fails
    assert b.state is CircuitState.OPEN
    assert b.status()["failure_count"] == 3


@pytest.mark.parametrize(
    "state",
    [CircuitState.FORCED_OPEN, CircuitState.DISABLED, CircuitState.METRICS_ONLY],
)
async def test_a_transition_to_the_current_state_is_a_no_op(
    fake_clock: FakeClock, state: CircuitState
) -> None:
    """force_open() twice, transition_to(X) in X: no event, no counter."""
    b = CircuitBreaker("noop", clock=fake_clock)
    events: list[tuple[CircuitState, CircuitState]] = []
    b.add_listener(lambda old, new, reason: events.append((old, new)))
    await b.transition_to(state)
    changes = b.metrics()["state_changes"]
    await b.transition_to(state)
    if state is CircuitState.FORCED_OPEN:
        b.force_open()
    assert events == [(CircuitState.CLOSED, state)]
    assert b.metrics()["state_changes"] == changes


async def test_closing_a_closed_breaker_sends_no_event(fake_clock: FakeClock) -> None:
    """transition_to(CLOSED) while CLOSED is a no-op too."""
    b = CircuitBreaker("noop-closed", clock=fake_clock)
    events: list[CircuitState] = []
    b.add_listener(lambda old, new, reason: events.append(new))
    await b.transition_to(CircuitState.CLOSED)
    assert events == []
    assert b.metrics()["state_changes"] == 0


def test_slow_means_strictly_slower_than_the_duration(fake_clock: FakeClock) -> None:
    """A call exactly as slow as slow_call_duration is not slow; a hair slower is."""
    b = CircuitBreaker("slow", clock=fake_clock, slow_call_duration=0.5)

    def take(seconds: float) -> None:
        fake_clock.advance(seconds)

    b.call_sync(take, 0.5)
    assert b.metrics()["slow_calls"] == 0
    b.call_sync(take, 0.5 + 1e-9)
    assert b.metrics()["slow_calls"] == 1


# -- misuse is loud ---------------------------------------------------------------


async def _coro() -> int:
    return 1


def test_call_sync_of_an_async_function_is_a_type_error(fake_clock: FakeClock) -> None:
    """call_sync(async_fn) raises TypeError naming the function and records nothing."""
    b = CircuitBreaker("misuse-sync", clock=fake_clock)
    with pytest.raises(TypeError, match="_coro"):
        b.call_sync(_coro)
    assert b.metrics()["total_calls"] == 0


def test_a_sync_guard_returning_an_awaitable_is_a_type_error(fake_clock: FakeClock) -> None:
    """A sync-decorated lambda that returns a coroutine raises TypeError and records nothing."""
    b = CircuitBreaker("misuse-lambda", clock=fake_clock)
    guarded = b(lambda: _coro())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited"
        with pytest.raises(TypeError, match="lambda"):
            guarded()
        gc.collect()
    assert b.metrics()["total_calls"] == 0
    assert b.metrics()["successful_calls"] == 0


async def test_awaiting_call_of_a_sync_function_is_a_type_error_before_admission(
    fake_clock: FakeClock,
) -> None:
    """await breaker.call(sync_fn) raises TypeError without taking a permit or counting."""
    b = CircuitBreaker("misuse-call", clock=fake_clock, failure_threshold=1, recovery_timeout=1,
                       half_open_max_calls=1)  # fmt: skip
    permit = b.try_acquire()
    assert permit is not None
    permit.failure(Down())
    fake_clock.advance(1)

    def sync_fn() -> int:
        return 1

    with pytest.raises(TypeError, match="sync_fn"):
        await b.call(sync_fn)  # type: ignore[arg-type]
    assert b.metrics()["failed_calls"] == 1  # only the failure above
    assert await b.call(_coro) == 1  # the permit is still there


# -- listeners under threads ---------------------------------------------------------


def test_listeners_see_transitions_in_commit_order_under_threads() -> None:
    """Threads flipping a breaker while a listener does I/O: every event follows the last."""
    b = CircuitBreaker("order")
    seen: list[tuple[CircuitState, CircuitState]] = []

    def listener(old: CircuitState, new: CircuitState, reason: str) -> None:
        with open(__file__, "rb") as f:  # a little real I/O
            f.read(64)
        seen.append((old, new))

    b.add_listener(listener)

    def flip() -> None:
        for _ in range(250):
            b.force_open()
            b.reset()

    threads = [threading.Thread(target=flip) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) >= 2
    assert seen[0][0] is CircuitState.CLOSED
    for (_, prev_new), (old, _) in itertools.pairwise(seen):
        assert old is prev_new


# -- memory ----------------------------------------------------------------------------


def test_generated_guards_leave_nothing_in_linecache(fake_clock: FakeClock) -> None:
    """Thousands of distinctly named decorated functions add no linecache entry each."""
    reg = Registry(clock=fake_clock)
    before = len(linecache.cache)
    for i in range(2000):
        namespace: dict[str, Any] = {}
        exec(f"async def repo_fn_{i}(x):\n    return x\n", namespace)
        circuit("mem-db", registry=reg)(namespace[f"repo_fn_{i}"])
    assert len(linecache.cache) < before + 10


# -- validation ---------------------------------------------------------------------------


def test_window_size_has_an_upper_bound() -> None:
    """A window_size that would allocate too much is refused at construction."""
    with pytest.raises(ValueError, match="window_size"):
        CircuitConfig(window_size=10**8)
    assert CircuitConfig(window_size=1_000_000).window_size == 1_000_000


def test_an_empty_record_is_refused() -> None:
    """record=() means "never trips": a ValueError naming record."""
    with pytest.raises(ValueError, match="record"):
        CircuitConfig(record=())


def test_negative_zero_is_normalised() -> None:
    """-0.0 seconds becomes 0.0."""
    cfg = CircuitConfig(recovery_timeout=-0.0)
    assert cfg.recovery_timeout == 0.0
    assert math.copysign(1.0, cfg.recovery_timeout) == 1.0


def test_any_integral_number_is_an_integer_setting() -> None:
    """numpy integers (any numbers.Integral) are accepted and stored as int."""
    np = pytest.importorskip("numpy")
    cfg = CircuitConfig(failure_threshold=np.int64(3), window_size=np.int32(50))
    assert cfg.failure_threshold == 3 and type(cfg.failure_threshold) is int
    assert type(cfg.window_size) is int


def test_a_registry_checks_its_clock_at_construction() -> None:
    """Registry(clock=5) is a TypeError naming the clock."""
    with pytest.raises(TypeError, match="clock"):
        Registry(clock=5)  # type: ignore[arg-type]


def test_get_or_create_with_a_clock_is_a_clear_error() -> None:
    """get_or_create(name, clock=...) says the clock is the registry's."""
    with pytest.raises(TypeError, match="clock= is the registry's"):
        Registry().get_or_create("x", clock=FakeClock())


def test_an_injected_rng_makes_jitter_repeatable(fake_clock: FakeClock) -> None:
    """rng= drives the breaker's random draws (jitter), like clock= drives time."""
    periods = []
    for _ in range(2):
        b = CircuitBreaker("rng", clock=fake_clock, failure_threshold=1, jitter=0.5,
                           rng=random.Random(7))  # fmt: skip
        permit = b.try_acquire()
        assert permit is not None
        permit.failure(Down())
        periods.append(b.status()["retry_after"])
    assert periods[0] == periods[1] != 60.0
