"""Clocks: the only way the library reads time.

A clock is any object with ``monotonic() -> float`` (drives every decision)
and ``time() -> float`` (wall clock, used only to report times such as
``last_failure_time``). Tests pass :class:`resilience.testing.FakeClock`.
"""

from __future__ import annotations

import time as _time
from typing import Protocol, runtime_checkable

__all__ = ("Clock", "SystemClock")


@runtime_checkable
class Clock(Protocol):
    """What the library needs from a clock."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; drives every decision."""
        ...

    def time(self) -> float:
        """Wall-clock epoch seconds; used only for reporting."""
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic` and :func:`time.time`."""

    __slots__ = ()

    monotonic = staticmethod(_time.monotonic)
    time = staticmethod(_time.time)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


def check_clock(clock: object) -> None:
    """Raise ``TypeError`` unless ``clock`` has ``monotonic()`` and ``time()``."""
    if not (callable(getattr(clock, "monotonic", None)) and callable(getattr(clock, "time", None))):
        raise TypeError(f"clock must have monotonic() and time() methods, got {clock!r}")
