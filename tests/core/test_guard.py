"""The function @circuit generates for a plain function: same parameters,
lock-free settled successes and rejections, sampled timing."""

from __future__ import annotations

import asyncio
import contextlib
import dis
import functools
import gc
import inspect
import math
import pickle
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from resilience import CircuitBreaker, CircuitOpenError, CircuitState, Registry, circuit
from resilience._latency import EXACT as _HIST_EXACT
from resilience._latency import RUN, RUN_MAX, RUN_MIN, SAMPLE_WEIGHT, SKIP
from resilience._machine import LANE_LOCKED as FAST_NONE
from resilience._machine import LANE_OPEN as FAST_OPEN
from resilience._machine import LANE_TIMED as FAST_SETTLED
from resilience._machine import LANE_TIMED as FAST_TIME
from resilience._machine import LANE_UNTIMED as FAST_UNTIMED
from resilience._machine import LaneToken
from resilience.testing import FakeClock


class CountingClock(FakeClock):
    """A FakeClock that counts its monotonic() reads."""

    __slots__ = ("reads",)

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def monotonic(self) -> float:
        self.reads += 1
        return super().monotonic()


# -- parameters --------------------------------------------------------------


def test_parameters_defaults_and_kinds_bind_as_in_a_direct_call(
    isolated_registry: Registry,
) -> None:
    """Positional-only, defaults, *args, keyword-only and **kwargs pass through unchanged."""
    shared: list[int] = []

    def target(
        a: int, b: int = 2, /, c: int = 3, *rest: int, d: int, e: list[int] = shared, **extra: Any
    ) -> tuple[Any, ...]:
        return a, b, c, rest, d, e, extra

    guarded = circuit("p", registry=isolated_registry)(target)
    assert guarded(1, d=4) == target(1, d=4)
    assert guarded(1, 5, 6, 7, 8, d=9, z=0) == target(1, 5, 6, 7, 8, d=9, z=0)
    assert guarded(1, d=4)[5] is shared  # the default object itself, not a copy
    assert inspect.signature(guarded) == inspect.signature(target)
    code = guarded.__code__
    assert code.co_posonlyargcount == 2 and code.co_kwonlyargcount == 2


async def test_a_bad_call_raises_typeerror_naming_the_function_and_is_not_counted(
    isolated_registry: Registry,
) -> None:
    """Binding fails before the breaker sees the call, as a direct call would."""

    @circuit("bad", registry=isolated_registry, failure_threshold=1)
    async def fetch(user_id: int) -> int:
        return user_id

    with pytest.raises(TypeError, match=r"fetch\(\) missing 1 required positional argument"):
        await fetch()  # type: ignore[call-arg]
    assert fetch.breaker.metrics()["total_calls"] == 0  # type: ignore[attr-defined]
    assert fetch.breaker.state is CircuitState.CLOSED  # type: ignore[attr-defined]


async def test_parameters_named_like_the_template_keep_the_signature(
    isolated_registry: Registry,
) -> None:
    """A parameter called ``_rp_m`` cannot shadow the generated code's names,
    and a bad call is still not counted."""

    @circuit("clash", registry=isolated_registry, failure_threshold=1)
    async def target(_rp_m: int, _rp_fn: int = 1) -> int:
        return _rp_m + _rp_fn

    assert await target(1) == 2 and await target(_rp_m=2, _rp_fn=3) == 5
    assert inspect.signature(target) == inspect.signature(target.__wrapped__)  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="target"):
        await target()  # type: ignore[call-arg]
    metrics = target.breaker.metrics()  # type: ignore[attr-defined]
    assert (metrics["successful_calls"], metrics["failed_calls"]) == (2, 0)


def test_lambdas_and_closures_are_guarded(isolated_registry: Registry) -> None:
    """A function whose name is not an identifier still gets a generated guard."""
    offset = 10
    add = circuit("lambda", registry=isolated_registry)(lambda x: x + offset)
    assert add(1) == 11
    assert add.__name__ == "<lambda>"


def test_the_guard_runs_with_the_functions_globals_and_reads_none(
    isolated_registry: Registry,
) -> None:
    """String annotations resolve through ``__globals__``; the code reads no global."""

    def target(x: Registry) -> None: ...

    guarded = circuit("g", registry=isolated_registry)(target)
    assert guarded.__globals__ is target.__globals__
    opnames = {i.opname for i in dis.get_instructions(guarded)}
    assert "LOAD_GLOBAL" not in opnames and "LOAD_NAME" not in opnames


async def test_methods_bind_self_through_the_generated_function(
    isolated_registry: Registry,
) -> None:
    """A method defined with def binds like any function; .breaker is on the bound method."""

    class Repo:
        def __init__(self) -> None:
            self.calls = 0

        @circuit("repo", registry=isolated_registry)
        async def get(self, key: str, *, default: str = "-") -> str:
            self.calls += 1
            return key + default

    repo = Repo()
    assert await repo.get("a") == "a-"
    assert await repo.get("b", default="!") == "b!"
    assert repo.calls == 2
    assert repo.get.breaker is isolated_registry.get("repo")  # type: ignore[attr-defined]


# -- the fast paths ----------------------------------------------------------


def _breaker_and_guard(clock: FakeClock, **fields: Any) -> tuple[Any, Any]:
    reg = Registry(clock=clock, rng=random.Random(2026))

    @circuit("fast", registry=reg, **fields)
    async def call(x: int) -> int:
        return x

    return call.breaker, call  # type: ignore[attr-defined]


# The three windows that count successes without the lock, and the mode each
# settles in: no rule that needs durations, a slow-call rule, a time window.
EVERY_LOCK_FREE_WINDOW = pytest.mark.parametrize(
    ("settings", "fast"),
    [
        ({}, FAST_UNTIMED),
        ({"slow_call_duration": 10.0}, FAST_SETTLED),
        ({"window_duration": 60, "slow_call_duration": 10.0}, FAST_TIME),
    ],
    ids=["untimed", "count-window-timed", "time-window-timed"],
)


def _unfolded(m: Any) -> int:
    """Successes counted without the lock and not yet folded in."""
    return int(m.issued - m.left - m.lockfree_folded)


async def test_a_settled_count_window_skips_the_clock_on_most_calls() -> None:
    """Past 1,024 timed successes, one call per run (128 to 255 calls) reads the
    clock, the run's latency sample; the rest read no clock at all."""
    clock = CountingClock()
    breaker, call = _breaker_and_guard(clock)
    for i in range(_HIST_EXACT):
        await call(i)
    assert breaker._m.lane == FAST_UNTIMED
    clock.reads = 0
    calls = RUN * 1_000
    for i in range(calls):
        await call(i)
    # Two reads per timed call; runs average 63.5 calls.
    assert clock.reads % 2 == 0
    assert clock.reads // 2 == pytest.approx(calls / (RUN - 0.5), rel=0.1)
    assert breaker.metrics()["successful_calls"] == _HIST_EXACT + calls


async def test_a_slow_call_rule_keeps_every_call_timed() -> None:
    """With slow_call_duration set, every call is timed (the rule needs it)."""
    clock = CountingClock()
    breaker, call = _breaker_and_guard(clock, slow_call_duration=1.0)
    for i in range(2 * _HIST_EXACT):
        await call(i)
    assert breaker._m.lane == FAST_SETTLED
    clock.reads = 0
    unfolded = _unfolded(breaker._m)
    for i in range(100):
        await call(i)
    assert clock.reads == 200
    assert _unfolded(breaker._m) == unfolded + 100  # all counted without the lock
    assert breaker.metrics()["successful_calls"] == 2 * _HIST_EXACT + 100


async def test_a_clean_time_window_counts_like_the_locked_path() -> None:
    """With no failure in a time window, successes are counted without the
    lock and folded into the newest bucket; the window and the counters read
    exactly as if every call had gone through the lock, across bucket
    boundaries and expiry."""
    clock = CountingClock()
    reg = Registry(clock=clock, rng=random.Random(2026))

    @circuit("fast", registry=reg, window_duration=10)
    async def call() -> None: ...

    locked = CircuitBreaker("locked", clock=clock, window_duration=10)
    for _ in range(300):  # 30 s in steps of 0.1 s
        await call()
        await locked.call(call.__wrapped__)  # type: ignore[attr-defined]
        clock.advance(0.1)
    assert call.breaker._m.lane == FAST_TIME  # type: ignore[attr-defined]
    assert _unfolded(call.breaker._m) > 0  # type: ignore[attr-defined]
    fast_status, locked_status = call.breaker.status(), locked.status()  # type: ignore[attr-defined]
    # The clock now reads 30 s: buckets 21..30 hold the calls of [21 s, 30 s).
    assert fast_status["calls_in_window"] == locked_status["calls_in_window"] == 90
    counted = call.breaker.metrics()["successful_calls"]  # type: ignore[attr-defined]
    assert counted == locked.metrics()["successful_calls"] == 300
    clock.reads = 0
    await call()
    assert clock.reads == 2  # timed: a time window needs each call's time


async def test_a_failure_in_a_time_window_is_recorded_and_rates_stay_exact() -> None:
    """A failure clears the lock-free path at once; later successes are recorded."""
    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(2026))
    fail = False

    @circuit("tw", registry=reg, window_duration=10, failure_threshold=100, error_rate=0.9)
    async def call() -> None:
        if fail:
            raise ConnectionError("down")

    for _ in range(9):
        await call()
        clock.advance(0.5)
    assert call.breaker._m.lane == FAST_TIME  # type: ignore[attr-defined]
    fail = True
    with pytest.raises(ConnectionError):
        await call()
    assert call.breaker._m.lane == FAST_NONE  # type: ignore[attr-defined]
    fail = False
    for _ in range(10):
        await call()
    status = call.breaker.status()  # type: ignore[attr-defined]
    assert status["calls_in_window"] == 20
    assert status["error_rate"] == pytest.approx(1 / 20)
    clock.advance(11)  # everything ages out
    await call()
    assert call.breaker.status()["error_rate"] == 0.0  # type: ignore[attr-defined]
    await call()
    assert call.breaker._m.lane == FAST_TIME  # type: ignore[attr-defined]


@EVERY_LOCK_FREE_WINDOW
async def test_sampled_latency_stands_for_every_call(settings: dict[str, Any], fast: int) -> None:
    """Mean and p99 stay right past the first 1,024 calls, when one call in a
    run of about 192 feeds the latency metrics (and, untimed, the others skip
    the clock): a
    sample is weighted for the calls it stands for (slow warm-up, fast steady
    state)."""
    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(2026))
    latency = 0.5

    @circuit("lat", registry=reg, **settings)
    async def call() -> None:
        clock.advance(latency)

    for _ in range(_HIST_EXACT):
        await call()
    latency = 0.001
    steady = 32 * 4_000
    for _ in range(steady):
        await call()
    assert call.breaker._m.lane == fast  # type: ignore[attr-defined]
    metrics = call.breaker.metrics()  # type: ignore[attr-defined]
    assert metrics["successful_calls"] == _HIST_EXACT + steady
    true_mean = (_HIST_EXACT * 0.5 + steady * 0.001) / (_HIST_EXACT + steady)
    assert metrics["avg_latency_ms"] == pytest.approx(true_mean * 1000, rel=0.02)
    # Fewer than 1% of the calls were slow, so p99 is a fast call's latency.
    assert metrics["p99_latency_ms"] == pytest.approx(1.0, rel=0.2)


async def test_a_time_windows_lock_free_successes_are_in_it_whenever_it_is_read() -> None:
    """Successes counted without the lock in the newest bucket are folded into
    the window before a failure is recorded, the window is reported, or a
    reconfigure keeps it; a reconfigure that replaces it keeps the counters."""
    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(2026))
    fail = False

    @circuit(
        "tw",
        registry=reg,
        window_duration=10,
        failure_threshold=100,
        error_rate=0.5,
        minimum_calls=2,
    )
    async def call() -> None:
        if fail:
            raise ConnectionError("down")

    m = call.breaker._m  # type: ignore[attr-defined]
    for _ in range(20):  # one bucket: the first is recorded under the lock
        await call()
    assert (m.lane, _unfolded(m)) == (FAST_TIME, 19)
    fail = True
    with pytest.raises(ConnectionError):
        await call()
    # Judged against all 20 successes (1 call in 21 failed), not against the
    # one recorded under the lock (1 in 2, which would trip).
    assert call.breaker.state is CircuitState.CLOSED  # type: ignore[attr-defined]
    status = call.breaker.status()  # type: ignore[attr-defined]
    assert (status["calls_in_window"], status["error_rate"]) == (21, pytest.approx(1 / 21))
    fail = False
    clock.advance(20)
    for _ in range(20):
        await call()
    assert _unfolded(m) == 19
    histogram = call.breaker.latency_histogram()  # type: ignore[attr-defined]
    assert sum(n for _, n in histogram) == 41  # every finished call
    clock.advance(20)  # everything ages out; calls land in a new bucket
    for _ in range(10):
        await call()
    assert _unfolded(m) == 9
    call.breaker.reconfigure(failure_threshold=50)  # type: ignore[attr-defined]
    assert call.breaker.status()["calls_in_window"] == 10  # type: ignore[attr-defined]
    for _ in range(10):
        await call()
    assert _unfolded(m) == 9
    call.breaker.reconfigure(window_duration=30)  # type: ignore[attr-defined]
    assert call.breaker.status()["calls_in_window"] == 0  # type: ignore[attr-defined]
    assert call.breaker.metrics()["successful_calls"] == 60  # type: ignore[attr-defined]


async def _low_rate_time_window(clock: FakeClock, reg: Registry) -> tuple[float, Any]:
    """20 calls/s in a time window, status() read every 0.5 s, 1 ms calls and a
    2 s timeout every 30 s: few lock-free successes between two folds."""
    slow = False

    @circuit(
        "low",
        registry=reg,
        window_duration=10,
        slow_call_duration=1.0,
        failure_threshold=10**6,
        minimum_calls=10**6,
    )
    async def call() -> None:
        if slow:
            clock.advance(2.0)
            raise TimeoutError
        clock.advance(0.001)

    total = 0.0
    for i in range(20 * 600):
        slow = i % (20 * 30) == 0
        with contextlib.suppress(TimeoutError):
            await call()
        total += 2.0 if slow else 0.001
        clock.advance(0.049 if not slow else 0.0)
        if i % 10 == 0:
            call.breaker.status()  # type: ignore[attr-defined]
    return total / (20 * 600), call.breaker  # type: ignore[attr-defined]


async def _locked_calls_between(clock: FakeClock, reg: Registry) -> tuple[float, Any]:
    """A time window: 20 decorated 1 ms calls, then a 50 ms block under
    ``async with`` (recorded under the lock), over and over."""

    @circuit("mixed", registry=reg, window_duration=60)
    async def fast() -> None:
        clock.advance(0.001)

    for _ in range(3000):
        for _ in range(20):
            await fast()
        async with fast.breaker:  # type: ignore[attr-defined]
            clock.advance(0.050)
        clock.advance(0.01)
    return (20 * 0.001 + 0.050) / 21, fast.breaker  # type: ignore[attr-defined]


async def _in_step_with_32(
    clock: FakeClock, reg: Registry, lock_free: int = 31, rounds: int = 3000
) -> tuple[float, Any]:
    """A count window with a slow-call rule: ``lock_free`` decorated 1 ms
    calls, then a 20 ms call through ``async with`` (under the lock), over
    and over, in step with 32."""

    @circuit("aligned", registry=reg, slow_call_duration=1.0)
    async def read() -> None:
        clock.advance(0.001)

    breaker = read.breaker  # type: ignore[attr-defined]
    for _ in range(rounds):
        for _ in range(lock_free):
            await read()
        async with breaker:
            clock.advance(0.020)
    return (lock_free * 0.001 + 0.020) / (lock_free + 1), breaker


@EVERY_LOCK_FREE_WINDOW
async def test_a_rhythm_in_the_traffic_does_not_pick_the_sample(
    settings: dict[str, Any], fast: int
) -> None:
    """Two queries per request on one breaker, 1 ms and 10 ms: runs have
    random lengths, so the sample sees both, and the mean and the histogram
    describe both (every n-th call, n even, would always be the same query)."""
    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(2026))

    @circuit("db", registry=reg, **settings)
    async def user() -> None:
        clock.advance(0.001)

    @circuit("db", registry=reg, **settings)
    async def orders() -> None:
        clock.advance(0.010)

    for _ in range(_HIST_EXACT):
        await user()
    breaker = user.breaker  # type: ignore[attr-defined]
    assert breaker._m.lane == fast
    m0 = breaker.metrics()
    requests = SAMPLE_WEIGHT * 4_000
    for _ in range(requests):
        await user()
        await orders()
    m = breaker._m
    breaker.metrics()  # folds
    mean = (m.latency.total - m0["avg_latency_ms"] / 1000 * _HIST_EXACT) / (
        m.latency.timed - _HIST_EXACT
    )
    assert mean == pytest.approx(0.0055, rel=0.05)
    slow_bucket = max(i for i, n in enumerate(m.latency._hist or ()) if n)
    share = m.latency._hist[slow_bucket] / sum(m.latency._hist)  # type: ignore[index]
    assert share == pytest.approx(0.5 * 2 * requests / (2 * requests + _HIST_EXACT), rel=0.05)


class TaskClock:
    """A fake clock per asyncio task: a call's duration is what its own task
    advanced, however the calls of a gather interleave."""

    def __init__(self) -> None:
        self._now: dict[int, float] = {}

    def monotonic(self) -> float:
        return self._now.get(id(asyncio.current_task()), 0.0)

    def time(self) -> float:
        return 0.0

    def advance(self, seconds: float) -> None:
        task = id(asyncio.current_task())
        self._now[task] = self._now.get(task, 0.0) + seconds


@pytest.mark.parametrize(
    ("settings", "fast"),
    [({}, FAST_UNTIMED), ({"slow_call_duration": 1.0}, FAST_SETTLED)],
    ids=["untimed", "count-window-timed"],
)
async def test_calls_finishing_out_of_order_do_not_pick_the_sample(
    settings: dict[str, Any], fast: int
) -> None:
    """Batches of 64 concurrent calls, the last of each slow (it finishes
    last): the sample's place in each run is drawn when the run before is
    sampled, not by which call finishes first, so the slow calls are seen at
    their share."""
    clock = TaskClock()
    reg = Registry(clock=clock, rng=random.Random(2026))

    @circuit("db", registry=reg, **settings)
    async def fetch(i: int) -> None:
        clock.advance(0.010 if i == 63 else 0.001)
        for _ in range(5 if i == 63 else 1):
            await asyncio.sleep(0)

    for _ in range(2 * _HIST_EXACT):
        await fetch(0)
    breaker = fetch.breaker  # type: ignore[attr-defined]
    assert breaker._m.lane == fast
    breaker.metrics()
    m = breaker._m
    latency, timed = m.latency.total, m.latency.timed
    for _ in range(4_000):
        await asyncio.gather(*(fetch(i) for i in range(64)))
    breaker.metrics()
    mean = (m.latency.total - latency) / (m.latency.timed - timed)
    # Sampling every first-to-finish (or first-to-start) call would read
    # 1.000 ms; the noise of about 1,300 samples is about 2.5%.
    assert mean == pytest.approx((63 * 0.001 + 0.010) / 64, rel=0.05)


@pytest.mark.parametrize("through", ["guard", "breaker.call"])
async def test_each_run_is_sampled_once_by_its_last_call(through: str) -> None:
    """Past the first 1,024, a breaker that times every call feeds the
    metrics one call per run, the run's last, weighted for the run's length:
    lengths drawn from 128 to 255 (a fixed length would keep to one place in a
    rhythm of the traffic), adding up to every call, whether the calls come
    through the generated guard or through ``breaker.call``."""
    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(2026))

    @circuit("db", registry=reg, slow_call_duration=1.0)
    async def read() -> None:
        clock.advance(0.001)

    breaker = read.breaker  # type: ignore[attr-defined]
    call = read if through == "guard" else functools.partial(breaker.call, read.__wrapped__)  # type: ignore[attr-defined]
    m = breaker._m
    for _ in range(2 * _HIST_EXACT):
        await call()
    assert m.lane == FAST_SETTLED
    weights: list[int] = []
    since = None  # calls since the last sample, from the first one seen
    for _ in range(RUN * 100):
        timed = m.latency.timed
        await call()
        if since is not None:
            since += 1
        if m.latency.timed != timed:
            weights.append(m.latency.timed - timed)
            assert since is None or weights[-1] == since  # the run's last call, for the run
            since = 0
    assert len(weights) >= 80
    assert min(weights) >= RUN_MIN and max(weights) <= RUN_MAX
    assert len(set(weights)) >= 30  # lengths spread over the range
    assert sum(weights) / len(weights) == pytest.approx(RUN - 0.5, rel=0.1)


async def test_an_untimed_breaker_samples_a_random_admission_after_each_run() -> None:
    """With no rule that needs durations, the sample of a run is the 1st to
    64th admission after it ends (drawn), standing for the run's length (and
    for the next run's too if that ends first)."""
    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(2026))

    @circuit("db", registry=reg)
    async def read() -> None:
        clock.advance(0.001)

    m = read.breaker._m  # type: ignore[attr-defined]
    for _ in range(2 * _HIST_EXACT):  # past the runs of one call
        await read()
    assert m.lane == FAST_UNTIMED
    skips: list[int] = []
    weights: list[int] = []
    armed_for = 0
    for _ in range(RUN * 150):
        timed = m.latency.timed
        armed = m.fast is None
        await read()
        if armed:
            armed_for += 1
        if m.latency.timed != timed:
            weights.append(m.latency.timed - timed)
            skips.append(armed_for)
            armed_for = 0
    assert len(weights) >= 80
    assert min(skips) >= 1 and max(skips) <= SKIP  # admissions while armed, the sample's included
    assert len(set(skips)) >= 30
    # Whole runs: one, or two when the next run ended before the sample came.
    assert min(weights[1:]) >= RUN_MIN and max(weights[1:]) <= 2 * RUN_MAX


def test_breakers_sample_different_calls(fake_clock: FakeClock) -> None:
    """Breakers share one random generator (unless given their own), so
    breakers given the same traffic draw different runs: they do not all
    sample the same calls."""
    places = set()
    for i in range(8):
        breaker = CircuitBreaker(f"b{i}", clock=fake_clock, window_size=5, slow_call_duration=9)
        one = breaker(lambda: 1)
        for _ in range(_HIST_EXACT + 40):
            one()
        places.add((breaker._m.run, breaker._m.left))
    assert len(places) > 1


async def test_untimed_samples_add_up_to_the_calls_they_stand_for() -> None:
    """Once no rule needs durations, the samples' weights add up to the calls
    made, from the first untimed sample on (the lock-free count may not have
    reached 1,024 when the lane changes)."""
    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(2026))

    @circuit("db", registry=reg)
    async def read() -> None:
        clock.advance(0.001)

    breaker = read.breaker  # type: ignore[attr-defined]
    m = breaker._m
    for _ in range(_HIST_EXACT):
        await read()
    assert m.lane == FAST_UNTIMED
    timed = m.latency.timed
    for _ in range(RUN * 200):
        await read()
    # Every call but those of the runs whose sample has not come yet.
    owed = m.unsampled + (m.run - m.left)
    assert m.latency.timed - timed + owed == pytest.approx(RUN * 200, abs=2 * RUN)
    assert breaker.metrics()["avg_latency_ms"] == pytest.approx(1.0)


async def test_a_sample_in_flight_across_a_reset_counts_once() -> None:
    """A call picked to stand for its run that finishes after a reset is
    recorded in the fresh metrics as itself, not as the run."""
    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(2026))
    gate = asyncio.Event()

    @circuit("db", registry=reg)
    async def read(wait: bool = False) -> None:
        if wait:
            await gate.wait()
            clock.advance(0.5)
        else:
            clock.advance(0.001)

    breaker = read.breaker  # type: ignore[attr-defined]
    for _ in range(2 * _HIST_EXACT):
        await read()
    while not (breaker._m.fast is None and breaker._m.skip == 1):
        await read()  # until the next admission is a sample
    in_flight = asyncio.create_task(read(wait=True))
    await asyncio.sleep(0)
    breaker.reset()
    gate.set()
    await in_flight
    for _ in range(100):
        await read()
    metrics = breaker.metrics()
    assert metrics["successful_calls"] == 101
    assert metrics["avg_latency_ms"] == pytest.approx((500 + 100 * 1) / 101, rel=0.01)


async def test_failures_in_a_rhythm_reach_the_histogram_at_their_share() -> None:
    """Calls recorded under the lock (here, failures: 1 ms and 10 ms in turn)
    feed the histogram by a random draw, not every 32nd call."""
    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(2026))

    @circuit("db", registry=reg, failure_threshold=10**9, error_rate=None)
    async def call(slow: bool) -> None:
        clock.advance(0.010 if slow else 0.001)
        raise ConnectionError("down")

    for i in range(2 * SAMPLE_WEIGHT * 2_000):
        with contextlib.suppress(ConnectionError):
            await call(i % 2 == 1)
    hist = call.breaker._m.latency._hist  # type: ignore[attr-defined]
    slow_bucket = max(i for i, n in enumerate(hist) if n)
    assert hist[slow_bucket] / sum(hist) == pytest.approx(0.5, rel=0.1)


async def test_locked_calls_in_step_with_32_do_not_fill_the_histogram() -> None:
    """127 lock-free 1 ms calls, then one 20 ms call under the lock, over and
    over: the locked calls are sampled at random too, so the slow 0.8% stays
    below p99 (sampling every 32nd success would count each of them 32 times)."""
    clock = FakeClock()
    _, breaker = await _in_step_with_32(
        clock, Registry(clock=clock, rng=random.Random(2026)), 127, 8_000
    )
    assert breaker.metrics()["p99_latency_ms"] == pytest.approx(1.0, rel=0.2)


async def test_a_reset_starts_the_counts_and_the_exact_timings_again() -> None:
    """After a reset, lock-free successes count from zero and the first 1,024
    are all timed again, each at weight 1."""
    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(2026))

    @circuit("db", registry=reg, slow_call_duration=1.0, window_size=10)
    async def read() -> None:
        clock.advance(0.001)

    breaker = read.breaker  # type: ignore[attr-defined]
    for _ in range(2 * _HIST_EXACT):
        await read()
    breaker.reset()
    for _ in range(30):
        await read()
    assert _unfolded(breaker._m) == 20  # the window (10) filled under the lock
    metrics = breaker.metrics()
    assert metrics["successful_calls"] == 30
    assert breaker._m.latency.timed == 30
    assert sum(n for _, n in breaker.latency_histogram()) == 30


def test_a_sample_of_an_older_generation_is_dropped(fake_clock: FakeClock) -> None:
    """A lock-free success sampled after a reset (another thread's) adds
    nothing to the fresh metrics."""
    breaker = CircuitBreaker("db", clock=fake_clock)
    m = breaker._m
    gen = m.gen
    breaker.reset()
    m.lockfree_step(LaneToken(gen, True), 0, 0.5, 5)
    assert m.latency is None  # nothing timed since the reset


@pytest.mark.parametrize(
    "scenario", [_low_rate_time_window, _locked_calls_between, _in_step_with_32]
)
async def test_the_latency_sample_is_fair_whatever_the_traffic(scenario: Any) -> None:
    """Lock-free calls are sampled on a count only they move, which no fold
    resets: reads of the breaker, locked calls and a rhythm of 32 calls do not
    skew the mean latency."""
    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(2026))
    true_mean, breaker = await scenario(clock, reg)
    assert breaker.metrics()["avg_latency_ms"] == pytest.approx(true_mean * 1000, rel=0.05)


async def test_concurrent_timed_calls_all_reach_the_histogram() -> None:
    """A call picked for timing feeds the histogram whatever order calls finish in."""
    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(2026))

    @circuit("concurrent", registry=reg)
    async def call() -> None:
        await asyncio.sleep(0)

    for _ in range(_HIST_EXACT):
        await call()
    assert call.breaker._m.lane == FAST_UNTIMED  # type: ignore[attr-defined]
    for _ in range(500):
        await asyncio.gather(*(call() for _ in range(64)))
    finished = call.breaker.metrics()["successful_calls"]  # type: ignore[attr-defined]
    m = call.breaker._m  # type: ignore[attr-defined]
    assert sum(m.latency._hist) == pytest.approx(finished, rel=0.1)
    assert m.latency.timed == pytest.approx(finished, rel=0.1)


async def test_a_failure_after_settling_still_counts_and_trips() -> None:
    """An untimed call that fails is recorded as a failure (no duration) and can trip."""
    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(2026))
    fail = False

    @circuit("trip", registry=reg, failure_threshold=3)
    async def call() -> None:
        if fail:
            raise ConnectionError("down")

    for _ in range(_HIST_EXACT + 5):
        await call()
    assert call.breaker._m.lane == FAST_UNTIMED  # type: ignore[attr-defined]
    fail = True
    for _ in range(3):
        with pytest.raises(ConnectionError):
            await call()
    assert call.breaker.state is CircuitState.OPEN  # type: ignore[attr-defined]
    assert call.breaker.metrics()["failed_calls"] == 3  # type: ignore[attr-defined]


async def test_a_success_after_a_failure_is_recorded_in_the_window() -> None:
    """A failure unsettles the window at once: the next successes are recorded, not skipped."""
    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(2026))
    fail = False

    @circuit("window", registry=reg, window_size=10, failure_threshold=100, error_rate=0.5)
    async def call() -> None:
        if fail:
            raise ConnectionError("down")

    for _ in range(_HIST_EXACT):
        await call()
    fail = True
    with pytest.raises(ConnectionError):
        await call()
    fail = False
    for _ in range(9):
        await call()
    assert call.breaker.status()["error_rate"] == pytest.approx(0.1)  # type: ignore[attr-defined]
    await call()  # the failure leaves the 10-call window
    assert call.breaker.status()["error_rate"] == 0.0  # type: ignore[attr-defined]


# -- rejections --------------------------------------------------------------


async def test_an_open_rejection_counts_and_tells_the_time_left() -> None:
    """Rejected while OPEN: counted, retry_after from the deadline, no call made."""
    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(2026))
    calls = 0

    @circuit("open", registry=reg, failure_threshold=1, recovery_timeout=30, jitter=0)
    async def call() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        await call()
    clock.advance(10)
    with pytest.raises(CircuitOpenError) as info:
        await call()
    err = info.value
    assert (err.name, err.state, err.retry_after) == ("open", CircuitState.OPEN, 20.0)
    assert err.last_failure_category is not None
    assert calls == 1
    assert call.breaker.metrics()["rejected_calls"] == 1  # type: ignore[attr-defined]


async def test_a_forced_open_rejection_has_no_retry_after() -> None:
    """FORCED_OPEN rejects every call, counted, with retry_after None (no deadline)."""
    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(2026))

    @circuit("forced", registry=reg)
    async def call() -> None: ...

    call.breaker.force_open()  # type: ignore[attr-defined]
    with pytest.raises(CircuitOpenError) as info:
        await call()
    assert (info.value.state, info.value.retry_after) == (CircuitState.FORCED_OPEN, None)
    assert call.breaker.try_acquire() is None  # type: ignore[attr-defined]
    assert call.breaker.metrics()["rejected_calls"] == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize("state", [CircuitState.OPEN, CircuitState.FORCED_OPEN])
async def test_rejections_leave_no_garbage_cycles(state: CircuitState) -> None:
    """A rejection's error is not held by its own frame: nothing for the GC to collect."""
    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(2026))

    @circuit("cycles", registry=reg, recovery_timeout=3600)
    async def call() -> None: ...

    await call.breaker.transition_to(state)  # type: ignore[attr-defined]
    gc.collect()
    gc.disable()
    try:
        for _ in range(200):
            try:
                await call()
            except CircuitOpenError:
                pass
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_open_error_fields_pickle_and_keywords() -> None:
    """CircuitOpenError keeps its fields through keywords, pickling and copies."""
    err = CircuitOpenError(name="db", state=CircuitState.OPEN, retry_after=1.5)
    assert (err.name, err.state, err.retry_after, err.last_failure_category) == (
        "db",
        CircuitState.OPEN,
        1.5,
        None,
    )
    back = pickle.loads(pickle.dumps(err))
    assert (back.name, back.retry_after, str(back)) == ("db", 1.5, str(err))


# -- threads -----------------------------------------------------------------


def test_settled_successes_from_threads_are_all_counted(isolated_registry: Registry) -> None:
    """Lock-free counting loses no success when threads share a breaker."""

    @circuit("threads", registry=isolated_registry)
    def call() -> None: ...

    per_thread = 20_000

    def work() -> None:
        for _ in range(per_thread):
            call()

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch in the middle of everything
    try:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(previous)
    metrics = call.breaker.metrics()  # type: ignore[attr-defined]
    assert metrics["successful_calls"] == 4 * per_thread
    # The latency samples stand for about as many calls: a race may cost a
    # sample or share one, never inflate them.
    m = call.breaker._m  # type: ignore[attr-defined]
    assert m.latency.timed == pytest.approx(4 * per_thread, rel=0.1)


# -- races the lock-free paths must see --------------------------------------


class HookedClock(FakeClock):
    """A FakeClock that runs a hook on its next monotonic() read."""

    __slots__ = ("hook",)

    def __init__(self) -> None:
        super().__init__()
        self.hook: Any = None

    def monotonic(self) -> float:
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        return super().monotonic()


async def test_a_reset_during_a_rejection_admits_the_call() -> None:
    """The lock-free OPEN rejection re-checks the generation after reading the clock."""
    clock = HookedClock()
    reg = Registry(clock=clock, rng=random.Random(2026))

    @circuit("race", registry=reg, recovery_timeout=60)
    async def call() -> str:
        return "ran"

    await call.breaker.transition_to(CircuitState.OPEN)  # type: ignore[attr-defined]
    clock.hook = call.breaker.reset  # type: ignore[attr-defined]
    assert await call() == "ran"
    assert call.breaker.metrics()["rejected_calls"] == 0  # type: ignore[attr-defined]
    assert call.breaker.try_acquire() is not None  # type: ignore[attr-defined]


async def test_a_slow_call_rule_added_mid_call_applies_to_later_calls() -> None:
    """Calls in flight when a slow-call rule arrives were not timed: they count in
    the metrics only, and every later call is timed and judged."""
    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(2026))
    gate = asyncio.Event()

    @circuit("straddle", registry=reg)
    async def call(wait: bool = False, seconds: float = 0.0) -> None:
        if wait:
            await gate.wait()
        clock.advance(seconds)

    for _ in range(_HIST_EXACT + 1):
        await call()
    breaker = call.breaker  # type: ignore[attr-defined]
    assert breaker._m.lane == FAST_UNTIMED
    while breaker._m.fast is None:
        await call()  # until the next admission is untimed
    in_flight = asyncio.create_task(call(wait=True))
    await asyncio.sleep(0)
    breaker.reconfigure(slow_call_duration=0.1, slow_call_rate=0.5, minimum_calls=1)
    gate.set()
    clock.advance(5)
    await in_flight
    assert breaker.metrics()["slow_calls"] == 0  # not timed, so not judged
    assert breaker._m.lane == FAST_NONE
    await call(seconds=5)
    assert breaker.metrics()["slow_calls"] == 1
    assert breaker.status()["slow_call_rate"] == pytest.approx(0.01)


def test_a_code_object_named_by_a_keyword_still_gets_a_guard(
    isolated_registry: Registry,
) -> None:
    """A hand-built code object's name need not be valid source."""

    def target(x: int) -> int:
        return x

    target.__code__ = target.__code__.replace(co_name="class")
    guarded = circuit("kw", registry=isolated_registry)(target)
    assert guarded(3) == 3


def test_open_error_fields_can_be_set(isolated_registry: Registry) -> None:
    """Handlers that adjust a rejection (say, its retry_after) still can."""
    err = CircuitOpenError("db", CircuitState.OPEN, 1.5)
    err.retry_after = 3.0
    err.name = "db-replica"
    assert (err.name, err.retry_after, err.args[1]) == ("db-replica", 3.0, CircuitState.OPEN)


def test_a_full_histogram_bucket_halves_instead_of_overflowing(fake_clock: FakeClock) -> None:
    """Counts near 2**32 halve every bucket, keeping the shape (and the quantiles)."""
    from resilience import CircuitBreaker
    from resilience._latency import Latency

    breaker = CircuitBreaker("hist", clock=fake_clock)
    m = breaker._m
    m.latency = Latency()
    m.latency.add(1.0, 1)
    m.latency.add(0.001, 1)
    assert m.latency._hist is not None
    slow, fast = sorted((i for i, n in enumerate(m.latency._hist) if n), reverse=True)
    m.latency._hist[fast] = 0xFFFFFFFF - 10
    m.latency.add(0.001, SAMPLE_WEIGHT)
    assert m.latency._hist[fast] == (0xFFFFFFFF - 10) // 2 + SAMPLE_WEIGHT
    assert m.latency._hist[slow] == 0  # 1 // 2: halved with the rest


def test_lock_free_paths_hold_their_invariants_under_thread_chaos() -> None:
    """Four threads call through a guard while another fails calls, reconfigures
    and moves the state, with the GIL switching every microsecond: under the
    lock, ``fast`` only ever describes the state and window it claims, and
    every call is counted exactly once."""
    from resilience._windows import CountWindow, TimeWindow

    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(2026))
    rng = random.Random(7)
    failing = [False]

    @circuit("chaos", registry=reg, window_size=20, failure_threshold=5, jitter=0)
    def call() -> None:
        if failing[0] and rng.random() < 0.5:
            raise ConnectionError("down")

    breaker = call.breaker  # type: ignore[attr-defined]
    stop = threading.Event()
    totals = [0, 0, 0]  # succeeded, failed, rejected
    totals_lock = threading.Lock()
    broken: list[tuple[Any, ...]] = []
    seen: set[int] = set()  # the lock-free modes the checks found in force

    def worker() -> None:
        ok = failed = rejected = 0
        while not stop.is_set():
            try:
                call()
                ok += 1
            except ConnectionError:
                failed += 1
            except CircuitOpenError:
                rejected += 1
        with totals_lock:
            totals[0] += ok
            totals[1] += failed
            totals[2] += rejected

    def check() -> None:
        with breaker._lock:
            m = breaker._m
            w = m.window
            f = m.lane
            seen.add(f)
            if f == FAST_OPEN:
                good = m.state is CircuitState.OPEN
            elif f > 0:
                good = (
                    m.state in (CircuitState.CLOSED, CircuitState.METRICS_ONLY)
                    and w.failures == 0
                    and w.slow == 0
                )
                if isinstance(w, TimeWindow):
                    # A lock-free success ends in the newest bucket (or, after
                    # a read moved the window on, one bucket older).
                    good = good and f == FAST_TIME and m.lockfree_until <= w.newest_end
                else:
                    good = good and isinstance(w, CountWindow) and w.calls == w.size
                    good = good and m.lockfree_until == math.inf
                if f == FAST_UNTIMED:
                    good = good and m.untimed_ok
                # The lane's token: of this generation, timed as the lane
                # says, and the untimed shortcut only ever that token.
                t = m.valid
                good = good and t is not None and t.gen == m.gen
                good = good and t.timed == (f == FAST_TIME) and m.fast in (None, t)
            else:
                good = m.valid is None and m.fast is None
            if not good:
                broken.append((m.state, f, w.calls, w.failures))

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    threads = [threading.Thread(target=worker) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for _ in range(400):
            step = rng.random()
            if step < 0.3:
                failing[0] = not failing[0]
            elif step < 0.4:
                breaker.reconfigure(window_size=rng.choice([20, 30]))
            elif step < 0.5:
                breaker.reconfigure(window_duration=rng.choice([None, 5.0]))
            elif step < 0.55:
                breaker.metrics_only()
            elif step < 0.6:
                breaker.disable()
            elif step < 0.75:
                breaker._control_sync(CircuitState.CLOSED, "chaos")
            else:
                clock.advance(rng.choice([0.5, 31.0]))  # within or past the open period
            check()
            time.sleep(0)
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(previous)
    assert broken == []
    metrics = breaker.metrics()
    assert (metrics["successful_calls"], metrics["failed_calls"], metrics["rejected_calls"]) == (
        totals[0],
        totals[1],
        totals[2],
    )
    assert sum(totals) > 1000
    # Every lock-free mode this configuration can reach was in force at times.
    assert {FAST_OPEN, FAST_UNTIMED, FAST_TIME} <= seen


async def test_breaker_call_counts_settled_successes_without_the_lock() -> None:
    """breaker.call takes the lock-free lane of a settled window too, and counts exactly."""
    clock = FakeClock()
    breaker = CircuitBreaker("call-lane", clock=clock, window_size=10)

    async def read() -> int:
        return 1

    for _ in range(10):
        await breaker.call(read)
    m = breaker._m
    assert m.lane > 0
    before = _unfolded(m)
    for _ in range(50):
        assert await breaker.call(read) == 1
    assert _unfolded(m) == before + 50
    assert breaker.metrics()["successful_calls"] == 60


# -- latency weights: every lock-free success is stood for, once ---------------


def _owed(m: Any) -> int:
    """Lock-free successes no latency sample stands for yet."""
    return int(m.unsampled + (m.run - m.left))


async def test_breaker_call_keeps_sampling_latency_in_the_untimed_lane() -> None:
    """A breaker used only through ``breaker.call`` (which times every call)
    whose lane reopened untimed still feeds its latency metrics: the call
    that ends a run is its sample, in either lane."""
    clock = FakeClock()
    breaker = CircuitBreaker("db", clock=clock, rng=random.Random(1), window_size=10)

    async def fast() -> None:
        clock.advance(0.001)

    async def slow() -> None:
        clock.advance(0.100)

    for _ in range(_HIST_EXACT + 100):
        await breaker.call(fast)
    breaker.reconfigure(minimum_calls=5)  # closes the lane; the next success reopens it
    await breaker.call(fast)
    assert breaker._m.lane == FAST_UNTIMED
    timed, owed = breaker._m.latency.timed, _owed(breaker._m)
    for _ in range(20_000):
        await breaker.call(slow)
    assert breaker._m.latency.timed - timed + _owed(breaker._m) - owed == 20_000
    assert breaker.metrics()["avg_latency_ms"] == pytest.approx(95.0, rel=0.02)


async def test_a_cancelled_latency_sample_hands_its_weight_on() -> None:
    """LANE_UNTIMED: the admission picked as the sample takes the weight of
    the runs not sampled yet; if its call is cancelled (or raises), the next
    sample stands for them instead."""
    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(3))
    gate = asyncio.Event()

    @circuit("db", registry=reg)
    async def read(wait: bool = False) -> None:
        if wait:
            await gate.wait()
        clock.advance(0.001)

    m = read.breaker._m  # type: ignore[attr-defined]
    for _ in range(2 * _HIST_EXACT):
        await read()
    for _ in range(20):
        while not (m.fast is None and m.skip == 1):
            await read()
        sample = asyncio.create_task(read(wait=True))  # this admission is the sample
        await asyncio.sleep(0)
        assert m.unsampled == 0 and m.fast is not None  # taken, and the lane handed back
        sample.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sample
    for _ in range(300):
        await read()
    read.breaker.metrics()  # type: ignore[attr-defined]
    assert m.latency.timed + _owed(m) == m.successful_calls


def test_latency_weights_add_up_under_threads_while_runs_are_one_call_long() -> None:
    """window_size=2,000: the lane opens untimed with runs of one call, each
    ending in ``arm_sample``; eight threads switching every microsecond lose
    no weight and count none twice."""

    def trial(seed: int) -> int:
        reg = Registry(rng=random.Random(seed))

        @circuit("db", registry=reg, window_size=2000)
        def call() -> int:
            return 1

        b = call.breaker  # type: ignore[attr-defined]
        m = b._m
        for _ in range(2001):
            call()
        assert m.lane == FAST_UNTIMED and m.issued < _HIST_EXACT
        with b._lock:
            m.fold()
            calls, weight, owed = m.successful_calls, m.latency.timed, _owed(m)

        def work() -> None:
            for _ in range(2000):
                call()

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with b._lock:
            m.fold()
            return (m.successful_calls - calls) - (m.latency.timed - weight) - (_owed(m) - owed)

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        drift = [trial(seed) for seed in range(20)]
    finally:
        sys.setswitchinterval(previous)
    assert drift == [0] * 20


def test_a_lane_reopened_while_a_run_end_is_pending_keeps_the_runs_weight() -> None:
    """Thread A has counted the last success of a run and is parked before
    starting the next; thread B closes the lane (reconfigure) and reopens it
    with one call. The run that ended keeps its weight, and A, resuming,
    starts no second run."""
    clock = FakeClock()
    reg = Registry(clock=clock, rng=random.Random(9))

    @circuit("db", registry=reg, slow_call_duration=1.0, window_size=10)  # LANE_TIMED
    def call() -> None:
        clock.advance(0.001)

    b = call.breaker  # type: ignore[attr-defined]
    m = b._m
    for _ in range(3000):
        call()
    assert m.lane == FAST_SETTLED
    while m.left != 1:
        call()
    with b._lock:
        m.fold()
        calls, weight, owed = m.successful_calls, m.latency.timed, _owed(m)
    parked, go = threading.Event(), threading.Event()

    def hook(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_name == "_run_done":
            sys.setprofile(None)
            parked.set()
            go.wait()

    def end_the_run() -> None:
        sys.setprofile(hook)
        call()  # the run's last success; parks before starting the next run
        sys.setprofile(None)

    a = threading.Thread(target=end_the_run)
    a.start()
    assert parked.wait(10)
    b.reconfigure(minimum_calls=5)
    call()  # reopens the lane under the lock
    go.set()
    a.join()
    for _ in range(2000):
        call()
    with b._lock:
        m.fold()
        drift = (m.successful_calls - calls) - (m.latency.timed - weight) - (_owed(m) - owed)
    assert drift == 0


def _in_bare_threads(fn: Callable[[], None], n: int, done: Callable[[], bool]) -> list[str]:
    """Run ``fn`` as the first frame of ``n`` threads (``_thread``: nothing
    above it) until ``done()``; the names of the exceptions that escaped."""
    import _thread

    errors: list[str] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda args: errors.append(type(args.exc_value).__name__)
    try:
        for _ in range(n):
            _thread.start_new_thread(fn, ())
        deadline = time.monotonic() + 10
        while not done() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # the last threads' exceptions, if any, reported
    finally:
        sys.unraisablehook = previous
    return errors


def test_a_guard_that_is_the_first_frame_of_its_thread_counts_its_successes() -> None:
    """A sync guard started with ``_thread.start_new_thread`` has no caller
    frame: the look up the stack for nested calls (at a run's end) finds
    nothing, instead of raising ``ValueError`` out of a call that succeeded."""
    reg = Registry(rng=random.Random(1))

    @circuit("db", registry=reg, window_size=10)
    def call() -> None: ...

    for _ in range(2000):
        call()
    assert call.breaker._m.lane == FAST_UNTIMED  # type: ignore[attr-defined]
    metrics = call.breaker.metrics  # type: ignore[attr-defined]
    errors = _in_bare_threads(call, 1000, lambda: metrics()["total_calls"] >= 3000)
    assert errors == []
    assert metrics()["successful_calls"] == 3000


def test_a_guard_that_is_the_first_frame_of_its_thread_records_its_failure() -> None:
    """The same for a failure on the lock-free lane: the look up the stack
    for an enclosing call finds nothing, and the failure is recorded (and
    raised as itself, not as a ``ValueError``)."""
    reg = Registry(rng=random.Random(1))
    fail = [False]

    @circuit("db", registry=reg, window_size=10, failure_threshold=100)
    def call() -> None:
        if fail[0]:
            raise ConnectionError("down")

    for _ in range(2000):
        call()
    assert call.breaker._m.lane == FAST_UNTIMED  # type: ignore[attr-defined]
    fail[0] = True
    metrics = call.breaker.metrics  # type: ignore[attr-defined]
    errors = _in_bare_threads(call, 1, lambda: metrics()["failed_calls"] >= 1)
    assert errors == ["ConnectionError"]
    assert metrics()["failed_calls"] == 1
