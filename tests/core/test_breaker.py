"""The breaker's rules, driven with a fake clock (no real sleeps)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from resilience import CircuitBreaker, CircuitOpenError, CircuitState, ErrorCategory, Outcome
from resilience.testing import FakeClock, capture_events

from .conftest import Down, down, fail, ok, succeed

Make = Callable[..., CircuitBreaker]


class SqlError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


# -- tripping ---------------------------------------------------------------


async def test_consecutive_failures_open_from_the_first_call(make: Make) -> None:
    """failure_threshold applies from call one (the seed waited for 10 calls)."""
    b = make(failure_threshold=3)
    await fail(b, 2)
    assert b.state is CircuitState.CLOSED
    await fail(b)
    assert b.state is CircuitState.OPEN


async def test_a_success_resets_the_consecutive_count(make: Make) -> None:
    """Failures must be consecutive."""
    b = make(failure_threshold=3, error_rate=None)
    await fail(b, 2)
    await succeed(b)
    await fail(b, 2)
    assert b.state is CircuitState.CLOSED


async def test_error_rate_waits_for_minimum_calls(make: Make) -> None:
    """The rate rule is gated by minimum_calls."""
    b = make(failure_threshold=100, error_rate=0.5, minimum_calls=10)
    for _ in range(4):
        await succeed(b)
        await fail(b)
    assert b.state is CircuitState.CLOSED  # 4/8 failed, but only 8 calls
    await succeed(b)
    await fail(b)
    assert b.state is CircuitState.OPEN  # 5/10


async def test_error_rate_reason_names_the_rate(make: Make) -> None:
    """Transitions carry a human reason."""
    b = make(failure_threshold=100, error_rate=0.5, minimum_calls=4)
    with capture_events() as events:
        for _ in range(2):
            await succeed(b)
            await fail(b)
    assert events[-1].reason == "error rate 0.50 >= 0.50 over 4 calls"


async def test_consecutive_reason(make: Make) -> None:
    """The consecutive rule says how many failures tripped it."""
    b = make(failure_threshold=2)
    with capture_events() as events:
        await fail(b, 2)
    assert [(e.old, e.new, e.reason) for e in events] == [
        (CircuitState.CLOSED, CircuitState.OPEN, "2 consecutive failures")
    ]


async def test_slow_calls_trip_on_the_slow_rate(make: Make, fake_clock: FakeClock) -> None:
    """A slow success counts towards slow_call_rate."""
    b = make(slow_call_duration=1.0, slow_call_rate=0.5, minimum_calls=4, error_rate=None)

    async def slow() -> str:
        fake_clock.advance(2.0)
        return "late"

    for _ in range(2):
        await succeed(b)
        await b.call(slow)
    assert b.state is CircuitState.OPEN
    assert b.metrics()["slow_calls"] == 2


async def test_slow_failures_count_as_slow_too(make: Make, fake_clock: FakeClock) -> None:
    """Slowness is counted whether the call succeeds or fails."""
    b = make(slow_call_duration=1.0, failure_threshold=100, error_rate=None, minimum_calls=100)

    async def slow_fail() -> None:
        fake_clock.advance(1.5)
        raise Down()

    with pytest.raises(Down):
        await b.call(slow_fail)
    assert b.metrics()["slow_calls"] == 1 and b.status()["slow_call_rate"] == 1.0


async def test_time_window_forgets_old_failures(make: Make, fake_clock: FakeClock) -> None:
    """With window_duration, failures older than the window stop counting."""
    b = make(window_duration=10, minimum_calls=4, failure_threshold=100, error_rate=0.5)
    await fail(b, 3)
    fake_clock.advance(11)
    await succeed(b, 3)
    assert b.status()["calls_in_window"] == 3
    await fail(b, 1)
    assert b.state is CircuitState.CLOSED  # 1/4; with the aged-out failures 4/7 would trip
    await fail(b, 2)
    assert b.state is CircuitState.OPEN  # 3/6


async def test_trip_outcome_opens_at_once(make: Make) -> None:
    """A category with Outcome.TRIP opens on its first occurrence."""
    b = make(category_policy={ErrorCategory.RESOURCE_ERROR: Outcome.TRIP})
    with pytest.raises(SqlError):
        await b.call(_raise, SqlError("53300"))
    assert b.state is CircuitState.OPEN


async def _raise(exc: BaseException) -> None:
    raise exc


async def test_bad_sql_and_auth_never_trip(make: Make) -> None:
    """QUERY and AUTHENTICATION errors are raised but not counted."""
    b = make(failure_threshold=1)
    for code in ("42601", "23505", "28P01"):
        with pytest.raises(SqlError):
            await b.call(_raise, SqlError(code))
    assert b.state is CircuitState.CLOSED
    assert b.metrics()["ignored_calls"] == 3


async def test_metrics_only_records_but_never_trips(make: Make) -> None:
    """METRICS_ONLY is a shadow mode."""
    b = make(failure_threshold=1)
    b.metrics_only()
    await fail(b, 5)
    assert b.state is CircuitState.METRICS_ONLY
    assert b.status()["calls_in_window"] == 5 and b.status()["error_rate"] == 1.0


async def test_disabled_admits_everything_and_records_nothing(make: Make) -> None:
    """DISABLED keeps call counters but an empty window."""
    b = make(failure_threshold=1)
    b.disable()
    await fail(b, 3)
    assert b.state is CircuitState.DISABLED
    assert b.status()["calls_in_window"] == 0
    assert b.metrics()["failed_calls"] == 3 and b.metrics()["total_calls"] == 3


# -- open -------------------------------------------------------------------


async def test_open_rejects_without_calling(make: Make) -> None:
    """An open circuit does not call the function."""
    b = make(failure_threshold=1)
    await fail(b)
    called = []

    async def f() -> None:
        called.append(1)

    with pytest.raises(CircuitOpenError):
        await b.call(f)
    assert called == [] and b.metrics()["rejected_calls"] == 1


async def test_rejection_carries_retry_after_and_category(
    make: Make, fake_clock: FakeClock
) -> None:
    """retry_after is the open deadline minus now."""
    b = make(failure_threshold=1, recovery_timeout=30)
    await fail(b)
    fake_clock.advance(12)
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)
    err = info.value
    assert err.name == "dep" and err.state is CircuitState.OPEN
    assert err.retry_after == pytest.approx(18.0)
    assert err.last_failure_category is ErrorCategory.CONNECTION_ERROR


async def test_each_rejection_is_a_fresh_exception(make: Make) -> None:
    """No exception object (and traceback) is reused between rejections."""
    b = make(failure_threshold=1)
    await fail(b)
    seen = []
    for _ in range(3):
        try:
            await b.call(ok)
        except CircuitOpenError as e:
            seen.append(e)
    assert len({id(e) for e in seen}) == 3


async def test_forced_open_has_no_retry_after(make: Make) -> None:
    """FORCED_OPEN rejects with retry_after None."""
    b = make()
    b.force_open()
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)
    assert info.value.retry_after is None and b.status()["retry_after"] is None


async def test_open_moves_to_half_open_lazily_at_the_deadline(
    make: Make, fake_clock: FakeClock
) -> None:
    """No timers: the first read after the period sees HALF_OPEN."""
    b = make(failure_threshold=1, recovery_timeout=10)
    await fail(b)
    fake_clock.advance(9.999)
    assert b.state is CircuitState.OPEN
    fake_clock.advance(0.001)
    assert b.state is CircuitState.HALF_OPEN


async def test_backoff_grows_the_open_period_up_to_the_cap(
    make: Make, fake_clock: FakeClock
) -> None:
    """recovery_timeout * backoff**(n-1), capped by max_recovery_timeout."""
    b = make(
        failure_threshold=1,
        success_threshold=1,
        recovery_timeout=10,
        recovery_backoff=2,
        max_recovery_timeout=35,
    )
    periods = []
    await fail(b)
    for _ in range(4):
        periods.append(b.status()["retry_after"])
        fake_clock.advance(periods[-1])
        await fail(b)  # the probe fails: re-open
    assert periods == [10, 20, 35, 35]


async def test_a_close_resets_the_backoff(make: Make, fake_clock: FakeClock) -> None:
    """n counts consecutive openings without a close."""
    b = make(failure_threshold=1, success_threshold=1, recovery_timeout=10, recovery_backoff=3)
    await fail(b)
    fake_clock.advance(10)
    await fail(b)
    assert b.status()["retry_after"] == 30
    fake_clock.advance(30)
    await succeed(b)
    await fail(b)
    assert b.status()["retry_after"] == 10


async def test_jitter_stays_within_its_bounds(make: Make, fake_clock: FakeClock) -> None:
    """Each open period is within [1 - j, 1 + j] of the base."""
    b = make(failure_threshold=1, recovery_timeout=100, jitter=0.2)
    seen = set()
    for _ in range(50):
        await fail(b)
        period = b.status()["retry_after"]
        assert 80.0 <= period <= 120.0
        seen.add(period)
        b.reset()
    assert len(seen) > 1


# -- half-open --------------------------------------------------------------


async def _open_then_half_open(b: CircuitBreaker, clock: FakeClock) -> None:
    await fail(b, b.config.failure_threshold)
    clock.advance(b.config.recovery_timeout)
    assert b.state is CircuitState.HALF_OPEN


async def test_success_threshold_probes_close(make: Make, fake_clock: FakeClock) -> None:
    """success_threshold successes in HALF_OPEN close the circuit."""
    b = make(failure_threshold=1, recovery_timeout=5, success_threshold=2)
    await _open_then_half_open(b, fake_clock)
    await succeed(b)
    assert b.state is CircuitState.HALF_OPEN
    await succeed(b)
    assert b.state is CircuitState.CLOSED


async def test_a_failed_probe_reopens(make: Make, fake_clock: FakeClock) -> None:
    """Any failure in HALF_OPEN re-opens."""
    b = make(failure_threshold=1, recovery_timeout=5, success_threshold=2)
    await _open_then_half_open(b, fake_clock)
    await succeed(b)
    await fail(b)
    assert b.state is CircuitState.OPEN


async def test_half_open_admits_at_most_max_calls_at_a_time(
    make: Make, fake_clock: FakeClock
) -> None:
    """Extra callers are rejected while the probes are in flight."""
    b = make(failure_threshold=1, recovery_timeout=5, success_threshold=2)
    await _open_then_half_open(b, fake_clock)
    gate = asyncio.Event()

    async def probe() -> str:
        await gate.wait()
        return "ok"

    probes = [asyncio.create_task(b.call(probe)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError) as info:
        await b.call(ok)
    assert info.value.state is CircuitState.HALF_OPEN
    assert 0.0 < info.value.retry_after <= 1.0
    gate.set()
    assert await asyncio.gather(*probes) == ["ok", "ok"]
    assert b.state is CircuitState.CLOSED


async def test_cancelled_probe_returns_its_permit(make: Make, fake_clock: FakeClock) -> None:
    """A cancelled probe is ignored and frees its permit (never stuck)."""
    b = make(failure_threshold=1, recovery_timeout=5, success_threshold=1)
    await _open_then_half_open(b, fake_clock)
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(b.call(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b.state is CircuitState.HALF_OPEN
    await succeed(b)
    assert b.state is CircuitState.CLOSED


async def test_cancellation_is_never_a_failure(make: Make) -> None:
    """Three cancelled calls do not trip a threshold of 3."""
    b = make(failure_threshold=3)

    async def hang() -> None:
        await asyncio.Event().wait()

    for _ in range(3):
        task = asyncio.create_task(b.call(hang))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert b.state is CircuitState.CLOSED
    assert b.metrics()["ignored_calls"] == 3 and b.metrics()["failed_calls"] == 0


async def test_half_open_timeout_reopens_at_its_deadline(make: Make, fake_clock: FakeClock) -> None:
    """An undecided HALF_OPEN re-opens at the deadline; its open period counts from there."""
    b = make(failure_threshold=1, recovery_timeout=10, half_open_timeout=4, success_threshold=1)
    await _open_then_half_open(b, fake_clock)  # t=10, half-open until 14
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(b.call(hang))
    await started.wait()
    fake_clock.advance(6)  # t=16: re-opened at 14, open until 24
    assert b.state is CircuitState.OPEN
    assert b.status()["retry_after"] == pytest.approx(8.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_late_result_of_an_earlier_generation_is_dropped(
    make: Make, fake_clock: FakeClock
) -> None:
    """A slow call admitted while CLOSED cannot close a HALF_OPEN circuit."""
    b = make(failure_threshold=1, recovery_timeout=5, success_threshold=1)
    gate = asyncio.Event()

    async def slow_ok() -> str:
        await gate.wait()
        return "late"

    late = asyncio.create_task(b.call(slow_ok))
    await asyncio.sleep(0)
    await fail(b)
    fake_clock.advance(5)
    assert b.state is CircuitState.HALF_OPEN
    gate.set()
    assert await late == "late"
    assert b.state is CircuitState.HALF_OPEN
    assert b.metrics()["successful_calls"] == 1  # counted in metrics, not in the decision


async def test_half_open_max_calls_can_differ_from_success_threshold(
    make: Make, fake_clock: FakeClock
) -> None:
    """half_open_max_calls limits concurrent probes independently."""
    b = make(failure_threshold=1, recovery_timeout=1, success_threshold=3, half_open_max_calls=1)
    await _open_then_half_open(b, fake_clock)
    assert b.try_acquire() is not None
    assert b.try_acquire() is None


# -- close, reset, manual control -------------------------------------------


async def test_close_starts_with_a_clean_window(make: Make, fake_clock: FakeClock) -> None:
    """After closing, old failures are forgotten."""
    b = make(failure_threshold=2, recovery_timeout=1, success_threshold=1)
    await fail(b, 2)
    fake_clock.advance(1)
    await succeed(b)
    s = b.status()
    assert (s["state"], s["failure_count"], s["calls_in_window"], s["error_rate"]) == (
        "closed",
        0,
        0,
        0.0,
    )
    await fail(b)
    assert b.state is CircuitState.CLOSED


async def test_transition_to_awaits_async_listeners(make: Make) -> None:
    """The seed's `await breaker._transition_to(CircuitState.OPEN)` works."""
    b = make()
    seen: list[tuple[CircuitState, CircuitState, str]] = []

    async def listener(old: CircuitState, new: CircuitState, reason: str) -> None:
        await asyncio.sleep(0)
        seen.append((old, new, reason))

    b.add_listener(listener)
    await b._transition_to(CircuitState.OPEN)
    assert seen == [(CircuitState.CLOSED, CircuitState.OPEN, "manual")]
    with pytest.raises(CircuitOpenError):
        await b.call(ok)
    await b.transition_to("closed", reason="fixed")
    assert seen[-1] == (CircuitState.OPEN, CircuitState.CLOSED, "fixed")


async def test_reset_clears_state_counters_and_metrics(make: Make) -> None:
    """reset() returns a fresh CLOSED breaker."""
    b = make(failure_threshold=1)
    await fail(b)
    b.reset()
    assert b.state is CircuitState.CLOSED
    assert b.metrics()["total_calls"] == 0 and b.status()["last_failure_time"] is None


async def test_reconfigure_keeps_state_and_counters(make: Make) -> None:
    """reconfigure changes settings in place."""
    b = make(failure_threshold=5, error_rate=None)
    await fail(b, 3)
    b.reconfigure(failure_threshold=4)
    assert b.status()["failure_count"] == 3
    await fail(b)
    assert b.state is CircuitState.OPEN and b.config.failure_threshold == 4


async def test_reconfigure_validates(make: Make) -> None:
    """Bad settings are rejected and the old config stays."""
    b = make()
    with pytest.raises(ValueError, match="jitter"):
        b.reconfigure(jitter=2)
    with pytest.raises(TypeError, match="nope"):
        b.reconfigure(nope=1)
    assert b.config.jitter == 0.0


async def test_reconfigure_rederives_half_open_max_calls(make: Make, fake_clock: FakeClock) -> None:
    """half_open_max_calls=None follows success_threshold after reconfigure."""
    b = make(failure_threshold=1, recovery_timeout=1, success_threshold=1)
    b.reconfigure(success_threshold=2)
    await _open_then_half_open(b, fake_clock)
    assert b.try_acquire() is not None and b.try_acquire() is not None
    assert b.try_acquire() is None


# -- listeners --------------------------------------------------------------


async def test_listener_exceptions_never_reach_the_caller(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing listener is logged; the call's own error propagates."""
    b = make(failure_threshold=1)

    def broken(old: CircuitState, new: CircuitState, reason: str) -> None:
        raise RuntimeError("listener bug")

    b.add_listener(broken)
    await fail(b)
    assert b.state is CircuitState.OPEN
    assert "a listener failed" in caplog.text


async def test_listener_may_call_back_into_the_breaker(make: Make) -> None:
    """Listeners run outside the lock: reset() from a listener does not deadlock."""
    b = make(failure_threshold=1)
    b.add_listener(lambda old, new, reason: b.reset() if new is CircuitState.OPEN else None)
    await fail(b)
    assert b.state is CircuitState.CLOSED


async def test_async_listener_runs_as_a_task(make: Make) -> None:
    """Async listeners are scheduled and their references kept until done."""
    b = make(failure_threshold=1)
    release = asyncio.Event()
    seen: list[CircuitState] = []

    async def listener(old: CircuitState, new: CircuitState, reason: str) -> None:
        await release.wait()
        seen.append(new)

    b.add_listener(listener)
    await fail(b)  # returns at once: the listener runs as a task
    assert seen == [] and len(b._tasks) == 1
    release.set()
    await asyncio.wait_for(asyncio.gather(*b._tasks), 1)
    assert seen == [CircuitState.OPEN] and b._tasks == set()


async def test_a_failing_async_listener_is_logged(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """An async listener's exception is logged, never raised to a caller."""
    b = make(failure_threshold=1)

    async def listener(old: CircuitState, new: CircuitState, reason: str) -> None:
        raise RuntimeError("async listener bug")

    b.add_listener(listener)
    await fail(b)
    await asyncio.sleep(0)  # let the listener task run (no time passes)
    await asyncio.sleep(0)
    assert "an async listener failed" in caplog.text
    assert b._tasks == set()


async def test_reconfigured_half_open_timeout_applies_to_the_current_half_open(
    make: Make, fake_clock: FakeClock
) -> None:
    """reconfigure(half_open_timeout=...) while HALF_OPEN re-dates its deadline."""
    b = make(failure_threshold=1, recovery_timeout=10, success_threshold=1)
    await _open_then_half_open(b, fake_clock)
    held = b.try_acquire()
    assert held is not None
    b.reconfigure(half_open_timeout=3)
    fake_clock.advance(3)
    assert b.state is CircuitState.OPEN
    held.success()  # late: dropped
    assert b.state is CircuitState.OPEN


async def test_unsubscribe_removes_the_listener(make: Make) -> None:
    """The function add_listener returns removes it."""
    b = make(failure_threshold=1)
    seen: list[Any] = []
    stop = b.add_listener(lambda *a: seen.append(a))
    stop()
    await fail(b)
    assert seen == []


def test_async_listener_without_a_loop_is_skipped_with_one_warning(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """From a thread with no loop, async listeners are skipped and logged once."""
    b = make()

    async def listener(old: CircuitState, new: CircuitState, reason: str) -> None:
        raise AssertionError("must not run")

    b.add_listener(listener)
    b.force_open()
    b.reset()
    assert caplog.text.count("async listeners skipped") == 1


async def test_async_listener_runs_on_its_loop_when_another_thread_delivers(make: Make) -> None:
    """An async listener added on a running loop hears transitions committed
    in a worker thread (sync code, a fleet store): it runs on that loop."""
    b = make()
    heard: list[tuple[CircuitState, str]] = []
    loop = asyncio.get_running_loop()

    async def listener(old: CircuitState, new: CircuitState, reason: str) -> None:
        assert asyncio.get_running_loop() is loop
        heard.append((new, threading.current_thread().name))

    b.add_listener(listener)
    await asyncio.to_thread(b.force_open)
    for _ in range(100):
        if heard:
            break
        await asyncio.sleep(0.01)
    assert heard == [(CircuitState.FORCED_OPEN, threading.current_thread().name)]


# -- guards and permits -----------------------------------------------------


async def test_async_with_guards_a_block(make: Make) -> None:
    """`async with breaker:` records the block's outcome."""
    b = make(failure_threshold=1)
    async with b:
        pass
    with pytest.raises(Down):
        async with b:
            raise Down()
    with pytest.raises(CircuitOpenError):
        async with b:
            raise AssertionError("not admitted")


def test_with_guards_sync_code(make: Make) -> None:
    """`with breaker:` works for sync code."""
    b = make(failure_threshold=1)
    with b:
        pass
    with pytest.raises(Down), b:
        raise Down()
    assert b.state is CircuitState.OPEN


async def test_nested_guards_of_concurrent_tasks_do_not_mix(make: Make) -> None:
    """Guard bookkeeping is per task."""
    b = make(failure_threshold=10)

    async def use(fail_it: bool) -> None:
        async with b:
            await asyncio.sleep(0)
            if fail_it:
                raise Down()

    results = await asyncio.gather(use(False), use(True), use(False), return_exceptions=True)
    assert [type(r) for r in results] == [type(None), Down, type(None)]
    m = b.metrics()
    assert (m["successful_calls"], m["failed_calls"]) == (2, 1)


async def test_try_acquire_returns_none_when_open(make: Make) -> None:
    """Non-raising admission."""
    b = make(failure_threshold=1)
    permit = b.try_acquire()
    assert permit is not None
    permit.failure(Down())
    assert b.try_acquire() is None
    assert b.metrics()["rejected_calls"] == 1


async def test_permit_settles_once(make: Make) -> None:
    """Settling a permit twice is a RuntimeError."""
    b = make()
    permit = b.try_acquire()
    assert permit is not None
    permit.success()
    with pytest.raises(RuntimeError, match="already settled"):
        permit.ignore()


async def test_permit_failure_is_judged_like_a_raise(make: Make) -> None:
    """permit.failure(exc) honours the category policy."""
    b = make(failure_threshold=1)
    p = b.try_acquire()
    assert p is not None
    p.failure(SqlError("42601"))
    assert b.state is CircuitState.CLOSED
    p = b.try_acquire()
    assert p is not None
    p.failure()
    assert b.state is CircuitState.OPEN


def test_call_sync_records_sync_functions(make: Make) -> None:
    """call_sync guards a plain function."""
    b = make(failure_threshold=1)
    assert b.call_sync(lambda x: x * 2, 21) == 42

    def boom() -> None:
        raise Down()

    with pytest.raises(Down):
        b.call_sync(boom)
    assert b.state is CircuitState.OPEN


# -- reporting --------------------------------------------------------------


async def test_status_has_the_documented_keys(make: Make, fake_clock: FakeClock) -> None:
    """status() keys and wall-clock times."""
    b = make(failure_threshold=1)
    await fail(b)
    s = b.status()
    assert set(s) == {
        "name",
        "state",
        "failure_count",
        "success_count",
        "last_failure_time",
        "last_failure_category",
        "error_rate",
        "slow_call_rate",
        "calls_in_window",
        "opened_at",
        "retry_after",
        "open_count",
        "sharing",
        "config",
    }
    assert s["last_failure_time"] == fake_clock.time()
    assert s["opened_at"] == fake_clock.time()
    assert s["last_failure_category"] == "CONNECTION_ERROR"
    assert s["state"] == "open" and s["open_count"] == 1


async def test_metrics_have_the_documented_keys(make: Make, fake_clock: FakeClock) -> None:
    """metrics() keys and latency figures."""
    b = make()

    async def takes(seconds: float) -> None:
        fake_clock.advance(seconds)

    for _ in range(99):
        await b.call(takes, 0.010)
    await b.call(takes, 1.0)
    m = b.metrics()
    assert set(m) == {
        "open_count",
        "total_calls",
        "successful_calls",
        "failed_calls",
        "ignored_calls",
        "rejected_calls",
        "slow_calls",
        "failures_by_category",
        "state",
        "state_changes",
        "sharing",
        "avg_latency_ms",
        "p99_latency_ms",
    }
    assert m["avg_latency_ms"] == pytest.approx((99 * 10 + 1000) / 100)
    assert 8.0 <= m["p99_latency_ms"] <= 12.5  # within the histogram's resolution


async def test_failures_by_category(make: Make) -> None:
    """Failures are counted per category value."""
    b = make(failure_threshold=100)
    await fail(b, 2)
    with pytest.raises(TimeoutError):
        await b.call(_raise, TimeoutError())
    assert b.metrics()["failures_by_category"] == {"CONNECTION_ERROR": 2, "TIMEOUT_ERROR": 1}


def test_name_must_be_a_non_empty_string() -> None:
    """Bad names fail at construction."""
    with pytest.raises(ValueError, match="name"):
        CircuitBreaker("")


def test_clock_must_have_monotonic_and_time() -> None:
    """A bad clock fails at construction."""
    with pytest.raises(TypeError, match="clock"):
        CircuitBreaker("x", clock=object())  # type: ignore[arg-type]


async def test_down_helper_raises_connection_errors() -> None:
    """The test double's failure is a ConnectionError (sanity of the fixture)."""
    with pytest.raises(ConnectionError):
        await down()


async def test_acquire_returns_a_permit_or_raises_a_fresh_rejection(make: Make) -> None:
    """acquire() is the raising twin of try_acquire()."""
    b = make(failure_threshold=1)
    b.acquire().failure(Down())
    with pytest.raises(CircuitOpenError) as first:
        b.acquire()
    with pytest.raises(CircuitOpenError) as second:
        b.acquire()
    assert first.value is not second.value
    assert b.metrics()["rejected_calls"] == 2


async def test_rejection_peeks_without_admitting_or_counting(
    make: Make, fake_clock: FakeClock
) -> None:
    """rejection() says what a call would get now, and changes nothing."""
    b = make(failure_threshold=1, recovery_timeout=10, success_threshold=1)
    assert b.rejection() is None
    await fail(b)
    fake_clock.advance(4)
    error = b.rejection()
    assert error is not None and error.retry_after == pytest.approx(6.0)
    assert b.metrics()["rejected_calls"] == 0
    fake_clock.advance(6)
    assert b.rejection() is None  # half-open with a free permit
    held = b.acquire()
    assert b.rejection() is not None  # every permit taken
    held.success()
    assert b.state is CircuitState.CLOSED
