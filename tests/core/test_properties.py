"""Concurrency, threads, memory and long outages."""

from __future__ import annotations

import asyncio
import gc
import math
import threading
import tracemalloc

import pytest

from resilience import CircuitBreaker, CircuitOpenError, CircuitState
from resilience.testing import FakeClock

from .conftest import Down, fail


async def test_1000_concurrent_callers_in_half_open_let_through_exactly_the_permits() -> None:
    """Every asyncio peer let 1,000 of 1,000 through; we admit half_open_max_calls."""
    clock = FakeClock()
    b = CircuitBreaker("dep", clock=clock, failure_threshold=1, recovery_timeout=5,
                       success_threshold=3)  # fmt: skip
    await fail(b)
    clock.advance(5)
    reached = 0
    gate = asyncio.Event()

    async def backend() -> None:
        nonlocal reached
        reached += 1
        await gate.wait()
        raise Down("still down")

    calls = [asyncio.create_task(b.call(backend)) for _ in range(1000)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert reached == 3
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 997
    assert sum(isinstance(r, Down) for r in results) == 3
    assert b.state is CircuitState.OPEN


async def test_probe_cancelled_by_a_caller_timeout_frees_the_permit() -> None:
    """asyncio.timeout around a probe never locks HALF_OPEN (the seed's bug)."""
    clock = FakeClock()
    b = CircuitBreaker("dep", clock=clock, failure_threshold=1, recovery_timeout=1,
                       success_threshold=1)  # fmt: skip
    await fail(b)
    clock.advance(1)

    async def hang() -> None:
        await asyncio.Event().wait()

    for _ in range(5):  # more than the permits: each one came back
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.001):
                await b.call(hang)
    assert b.state is CircuitState.HALF_OPEN

    async def fine() -> str:
        return "ok"

    assert await b.call(fine) == "ok"
    assert b.state is CircuitState.CLOSED


def test_threads_share_one_breaker_consistently() -> None:
    """Sync calls from 8 threads: every call is counted, the window stays exact."""
    b = CircuitBreaker("threads", failure_threshold=10**9, error_rate=None, window_size=64)
    per_thread = 2000
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for n in range(per_thread):
                if (n + i) % 4 == 0:
                    with pytest.raises(Down):
                        b.call_sync(_boom)
                else:
                    b.call_sync(_fine)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    m = b.metrics()
    assert m["total_calls"] == 8 * per_thread
    assert m["failed_calls"] == 8 * per_thread // 4
    window = b._m.window
    assert window.calls == 64
    assert window.failures == sum(1 for slot in window._ring or b"" if slot & 1)  # type: ignore[union-attr]


def _boom() -> None:
    raise Down()


def _fine() -> int:
    return 1


def test_threads_trip_and_reject_without_errors() -> None:
    """Under contention the breaker opens once and rejects the rest cleanly."""
    b = CircuitBreaker("trip", failure_threshold=50, error_rate=None, recovery_timeout=3600)
    outcomes: dict[str, int] = {"down": 0, "open": 0}
    lock = threading.Lock()

    def work() -> None:
        for _ in range(500):
            try:
                b.call_sync(_boom)
            except Down:
                key = "down"
            except CircuitOpenError:
                key = "open"
            with lock:
                outcomes[key] += 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.state is CircuitState.OPEN
    assert b.metrics()["open_count"] == 1
    assert outcomes["down"] >= 50 and outcomes["down"] + outcomes["open"] == 2000


async def test_100000_rejections_retain_nothing() -> None:
    """Rejections allocate a fresh error each time and keep none of them."""
    b = CircuitBreaker("mem", failure_threshold=1, recovery_timeout=3600)
    await fail(b)

    async def f() -> None: ...

    async def reject(n: int) -> None:
        for _ in range(n):
            try:
                await b.call(f)
            except CircuitOpenError:
                pass

    await reject(1000)  # warm caches
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    await reject(100_000)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(
        s.size_diff
        for s in after.compare_to(before, "filename")
        if s.traceback[0].filename.endswith(("_breaker.py", "_machine.py", "_errors.py"))
    )
    assert grown < 1024
    assert b.metrics()["rejected_calls"] == 101_000


async def test_long_outage_with_backoff_never_overflows() -> None:
    """Thousands of open cycles: capped periods, no OverflowError (the seed broke at 1,025)."""
    clock = FakeClock()
    b = CircuitBreaker("outage", clock=clock, failure_threshold=1, recovery_timeout=60,
                       recovery_backoff=2.0, success_threshold=1)  # fmt: skip
    await fail(b)
    for _ in range(5000):
        clock.advance(b.status()["retry_after"])
        await fail(b)  # the probe fails
    assert b.status()["retry_after"] == 600.0  # the default cap
    assert b.metrics()["open_count"] == 5001
    with pytest.raises(CircuitOpenError):
        await b.call(_async_fine)


async def _async_fine() -> int:
    return 1


async def test_an_idle_half_open_waits_for_its_first_caller() -> None:
    """Idle with half_open_timeout set: no phantom OPEN/HALF_OPEN cycles, no open_count growth."""
    clock = FakeClock()
    b = CircuitBreaker("idle", clock=clock, failure_threshold=1, recovery_timeout=1,
                       half_open_timeout=1)  # fmt: skip
    await fail(b)
    events: list[CircuitState] = []
    b.add_listener(lambda old, new, reason: events.append(new))
    clock.advance(10_000_000)
    assert b.state is CircuitState.HALF_OPEN
    assert b.metrics()["open_count"] == 1
    assert events == [CircuitState.HALF_OPEN]
    assert await b.call(_async_fine) == 1  # the caller after the quiet period is a probe


async def test_a_slow_success_in_a_full_clean_window_is_evicted_in_turn() -> None:
    """The count window's fast path stays exact around slow calls (review finding)."""
    clock = FakeClock()
    b = CircuitBreaker("slow-evict", clock=clock, window_size=10, minimum_calls=10,
                       slow_call_duration=1.0, slow_call_rate=0.5, failure_threshold=100,
                       error_rate=None)  # fmt: skip

    def fast() -> int:
        return 1

    def slow() -> int:
        clock.advance(2.0)
        return 1

    for _ in range(10):
        b.call_sync(fast)
    for _ in range(6):
        b.call_sync(slow)
        for _ in range(9):
            b.call_sync(fast)
        assert b.status()["slow_call_rate"] == pytest.approx(0.1)
    assert b.state is CircuitState.CLOSED


async def test_half_open_timeout_counts_from_the_first_probe() -> None:
    """The half-open deadline starts when the first probe is admitted, not at HALF_OPEN."""
    clock = FakeClock()
    b = CircuitBreaker("ho-first-probe", clock=clock, failure_threshold=1, recovery_timeout=1,
                       half_open_timeout=5, success_threshold=2)  # fmt: skip
    await fail(b)
    clock.advance(100)  # HALF_OPEN since t=1, idle for 99 s
    permit = b.try_acquire()
    assert permit is not None  # the first probe: its clock starts now
    clock.advance(4.9)
    assert b.state is CircuitState.HALF_OPEN
    clock.advance(0.2)  # 5.1 s after the first probe, undecided
    assert b.state is CircuitState.OPEN
    assert b.metrics()["open_count"] == 2
    permit.success()  # a result of the old round: dropped
    assert b.status()["success_count"] == 0


@pytest.mark.parametrize(
    ("start", "advance", "period"),
    [(1e6, 1e17, 1e-12), (0.0, 1e17, 1e-300), (1e15, 1e300, 5e-324), (0.0, math.inf, 1.0)],
)
async def test_catching_up_never_loops_whatever_the_clock(
    start: float, advance: float, period: float
) -> None:
    """Huge clock values and periods below the clock's resolution catch up in bounded steps."""
    clock = FakeClock(start)
    b = CircuitBreaker("no-loop", clock=clock, failure_threshold=1, recovery_timeout=period,
                       half_open_timeout=period, max_recovery_timeout=max(period, 1.0))  # fmt: skip
    await fail(b)
    permit = b.try_acquire()  # the deadline is at (or within float rounding of) now
    if permit is not None:
        permit.ignore()
    clock.advance(advance)
    for _ in range(3):
        assert b.state in (CircuitState.OPEN, CircuitState.HALF_OPEN)
        b.try_acquire()
    assert b.metrics()["state_changes"] <= 2 + 2 * 7  # at most two moves per read or call
