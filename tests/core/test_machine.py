"""The rules, driven on the sans-I/O Machine with plain ``now`` values: no
clock, no lock, no breaker around it."""

from __future__ import annotations

import random

import pytest

from resilience import CircuitConfig, CircuitState, ErrorCategory
from resilience._machine import REJECTED, Machine

CONN = ErrorCategory.CONNECTION_ERROR


def machine(**fields: object) -> Machine:
    return Machine(CircuitConfig(**fields), random.Random(1))  # type: ignore[arg-type]


def fail(m: Machine, now: float) -> None:
    gen = m.admit(now)
    assert gen != REJECTED
    m.on_failure(gen, now, 0.001, CONN)


def states(m: Machine) -> list[tuple[str, str, float]]:
    out = [(t.old.value, t.new.value, t.at) for t in m.pending or ()]
    m.pending = None
    return out


def test_consecutive_failures_trip_at_the_threshold() -> None:
    """failure_threshold consecutive failures open the circuit, with a reason."""
    m = machine(failure_threshold=3)
    for now in (1.0, 2.0):
        fail(m, now)
    assert m.state is CircuitState.CLOSED
    fail(m, 3.0)
    assert m.state is CircuitState.OPEN
    assert m.pending is not None and m.pending[-1].reason == "3 consecutive failures"


def test_the_error_rate_waits_for_minimum_calls() -> None:
    """The rate rule is evaluated only once the window holds minimum_calls."""
    m = machine(failure_threshold=100, minimum_calls=4, error_rate=0.5)
    for now, ok in ((1.0, True), (2.0, False), (3.0, False)):
        gen = m.admit(now)
        if ok:
            m.on_success(gen, now, 0.001)
        else:
            m.on_failure(gen, now, 0.001, CONN)
    assert m.state is CircuitState.CLOSED  # 2/3 failed, but only 3 calls
    gen = m.admit(4.0)
    m.on_success(gen, 4.0, 0.001)
    assert m.state is CircuitState.OPEN  # 2/4 >= 0.5


def test_open_moves_to_half_open_at_the_deadline_lazily() -> None:
    """OPEN rejects until recovery_timeout; the first admission after it is a probe."""
    m = machine(failure_threshold=1, recovery_timeout=10)
    fail(m, 0.0)
    states(m)
    assert m.admit(9.999) == REJECTED
    assert m.rejected_retry_after == pytest.approx(0.001)
    gen = m.admit(25.0)
    assert gen != REJECTED
    assert states(m) == [("open", "half_open", 10.0)]  # at the deadline, not at 25


def test_an_idle_half_open_has_no_deadline() -> None:
    """half_open_timeout starts at the first probe: an idle HALF_OPEN never re-opens."""
    m = machine(failure_threshold=1, recovery_timeout=1, half_open_timeout=2)
    fail(m, 0.0)
    assert m.current_state(1e9) is CircuitState.HALF_OPEN
    assert m.open_count == 1
    gen = m.admit(1e9)
    assert gen != REJECTED
    assert m.current_state(1e9 + 2) is CircuitState.OPEN  # the probe did not decide in time
    assert m.open_until == pytest.approx(1e9 + 2 + 1)  # its open period counts from the deadline


def test_half_open_limits_probes_and_closes_after_success_threshold() -> None:
    """At most half_open_max_calls probes at once; success_threshold successes close."""
    m = machine(failure_threshold=1, recovery_timeout=1, success_threshold=2)
    fail(m, 0.0)
    a, b = m.admit(1.0), m.admit(1.0)
    assert REJECTED not in (a, b)
    assert m.admit(1.0) == REJECTED
    m.on_success(a, 1.1, 0.1)
    m.on_success(b, 1.2, 0.1)
    assert m.state is CircuitState.CLOSED
    assert (m.window.calls, m.consecutive_failures) == (0, 0)  # clean on close


def test_a_failed_probe_reopens_with_backoff() -> None:
    """A failed probe re-opens; the open period grows by recovery_backoff, capped."""
    m = machine(failure_threshold=1, recovery_timeout=10, recovery_backoff=2,
                max_recovery_timeout=30)  # fmt: skip
    fail(m, 0.0)
    periods = []
    now = 0.0
    for _ in range(4):
        now = m.open_until
        fail(m, now)
        periods.append(m.open_period)
    assert periods == [20.0, 30.0, 30.0, 30.0]
    assert m.consecutive_failures == 5  # failed probes included


def test_a_result_from_an_older_generation_is_only_counted() -> None:
    """A slow call admitted while CLOSED cannot close a later HALF_OPEN."""
    m = machine(failure_threshold=1, recovery_timeout=1, success_threshold=1)
    old = m.admit(0.0)
    fail(m, 0.0)
    m.admit(1.0)  # a probe; HALF_OPEN
    m.on_success(old, 1.5, 1.5)
    assert m.state is CircuitState.HALF_OPEN
    assert m.successful_calls == 1


def test_ignored_returns_the_permit_and_counts_nothing_else() -> None:
    """An ignored outcome returns the probe permit."""
    m = machine(failure_threshold=1, recovery_timeout=1, half_open_max_calls=1)
    fail(m, 0.0)
    gen = m.admit(1.0)
    assert m.admit(1.0) == REJECTED
    m.on_ignored(gen, 1.0, 0.0)
    assert m.admit(1.0) != REJECTED
    assert m.failed_calls == 1


def test_slow_calls_are_strictly_slower() -> None:
    """A call exactly slow_call_duration long is not slow."""
    m = machine(slow_call_duration=1.0)
    gen = m.admit(0.0)
    m.on_success(gen, 1.0, 1.0)
    assert m.slow_calls == 0
    gen = m.admit(1.0)
    m.on_success(gen, 2.0, 1.0000001)
    assert m.slow_calls == 1


def test_manual_moves_to_the_current_state_queue_nothing() -> None:
    """transition_to the current state is a no-op."""
    m = machine()
    m.transition_to(CircuitState.FORCED_OPEN, "x", 0.0)
    states(m)
    gen = m.gen
    m.transition_to(CircuitState.FORCED_OPEN, "again", 1.0)
    assert states(m) == []
    assert m.gen == gen


def test_catch_up_is_bounded_below_the_clock_resolution() -> None:
    """Periods too small to move a huge clock value: each read makes at most two moves."""
    m = machine(failure_threshold=1, recovery_timeout=1e-12, half_open_timeout=1e-12,
                max_recovery_timeout=1.0)  # fmt: skip
    fail(m, 1e6)
    for i in range(5):
        before = m.state_changes
        m.admit(1e6 + i * 1e17)
        assert m.state_changes - before <= 2
