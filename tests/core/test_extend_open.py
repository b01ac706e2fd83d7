"""CircuitBreaker.extend_open: an upstream may ask for a longer open period."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from resilience import CircuitBreaker, CircuitOpenError, CircuitState
from resilience.testing import FakeClock

from .conftest import fail


async def _noop() -> None:
    return None


async def opened(make: Callable[..., CircuitBreaker], **fields: float) -> CircuitBreaker:
    breaker = make(failure_threshold=1, recovery_timeout=10, **fields)
    await fail(breaker)
    assert breaker.state is CircuitState.OPEN
    return breaker


async def test_extend_open_moves_the_deadline_later(
    make: Callable[..., CircuitBreaker], fake_clock: FakeClock
) -> None:
    """30 s asked at t=0 keeps the circuit open past its 10 s period."""
    breaker = await opened(make)
    assert breaker.extend_open(30) == pytest.approx(30)
    fake_clock.advance(29)
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError) as info:
        await breaker.call(_noop)
    assert info.value.retry_after == pytest.approx(1)
    fake_clock.advance(1)
    assert breaker.state is CircuitState.HALF_OPEN


async def test_extend_open_never_shortens(
    make: Callable[..., CircuitBreaker], fake_clock: FakeClock
) -> None:
    """Asking for less than what is left changes nothing."""
    breaker = await opened(make)
    assert breaker.extend_open(2) == pytest.approx(10)
    fake_clock.advance(9.9)
    assert breaker.state is CircuitState.OPEN


async def test_extend_open_is_capped_by_max_recovery_timeout(
    make: Callable[..., CircuitBreaker], fake_clock: FakeClock
) -> None:
    """The whole open period stays within max_recovery_timeout."""
    breaker = await opened(make, max_recovery_timeout=60)
    fake_clock.advance(5)
    assert breaker.extend_open(3600) == pytest.approx(55)
    assert breaker.extend_open(math.inf) == pytest.approx(55)
    fake_clock.advance(55)
    assert breaker.state is CircuitState.HALF_OPEN


async def test_extend_open_leaves_a_closed_breaker_alone(
    make: Callable[..., CircuitBreaker],
) -> None:
    """Only an OPEN circuit is held: a CLOSED one stays CLOSED."""
    breaker = make()
    assert breaker.extend_open(30) is None
    assert breaker.state is CircuitState.CLOSED


async def test_extend_open_after_the_deadline_does_not_reopen(
    make: Callable[..., CircuitBreaker], fake_clock: FakeClock
) -> None:
    """Past the deadline the circuit is HALF_OPEN, and extend_open does nothing."""
    breaker = await opened(make)
    fake_clock.advance(10)
    assert breaker.extend_open(30) is None
    assert breaker.state is CircuitState.HALF_OPEN


async def test_extend_open_leaves_forced_open_alone(
    make: Callable[..., CircuitBreaker],
) -> None:
    """FORCED_OPEN has no deadline to move."""
    breaker = make()
    breaker.force_open()
    assert breaker.extend_open(30) is None
    assert breaker.state is CircuitState.FORCED_OPEN


@pytest.mark.parametrize("bad", [-1, math.nan])
def test_extend_open_rejects_negative_or_nan(
    make: Callable[..., CircuitBreaker], bad: float
) -> None:
    """A bad value is a ValueError naming it."""
    with pytest.raises(ValueError, match="seconds"):
        make().extend_open(bad)


@pytest.mark.parametrize("bad", ["30", True, None])
def test_extend_open_rejects_non_numbers(make: Callable[..., CircuitBreaker], bad: object) -> None:
    """A non-number is a TypeError naming it."""
    with pytest.raises(TypeError, match="seconds"):
        make().extend_open(bad)  # type: ignore[arg-type]


async def test_a_later_backoff_opening_starts_from_the_configured_base(
    make: Callable[..., CircuitBreaker], fake_clock: FakeClock
) -> None:
    """An extension lengthens this opening only: the next uses recovery_timeout."""
    breaker = await opened(make)
    breaker.extend_open(40)
    fake_clock.advance(40)
    assert breaker.state is CircuitState.HALF_OPEN
    await fail(breaker)
    assert breaker.status()["retry_after"] == pytest.approx(10)
