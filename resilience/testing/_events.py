from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .._breaker import CircuitBreaker, add_global_observer
from .._config import CircuitState
from .._machine import Transition

__all__ = ("CapturedEvent", "capture_events")


@dataclass(frozen=True, slots=True)
class CapturedEvent:
    """One transition seen by :func:`capture_events`."""

    name: str
    old: CircuitState
    new: CircuitState
    reason: str
    at: float  # monotonic time on the breaker's clock


@contextmanager
def capture_events() -> Iterator[list[CapturedEvent]]:
    """Record every transition of every breaker while the block runs.

    Example:
        >>> with capture_events() as events:
        ...     breaker.force_open()
        >>> events[-1].new
        <CircuitState.FORCED_OPEN: 'forced_open'>
    """
    events: list[CapturedEvent] = []

    def observe(breaker: CircuitBreaker, t: Transition) -> None:
        events.append(CapturedEvent(breaker.name, t.old, t.new, t.reason, t.at))

    stop = add_global_observer(observe)
    try:
        yield events
    finally:
        stop()
