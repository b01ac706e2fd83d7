from __future__ import annotations

__all__ = ("FakeClock",)


class FakeClock:
    """A clock that only moves when told to; it never sleeps.

    Args:
        start: the initial monotonic reading, in seconds (default 0.0).
        wall_start: the wall-clock epoch seconds matching ``start``
            (default 1_700_000_000.0, a fixed date so reports are repeatable).

    Example:
        >>> clock = FakeClock()
        >>> clock.advance(30)
        >>> clock.monotonic()
        30.0
    """

    __slots__ = ("_now", "_wall_offset")

    def __init__(self, start: float = 0.0, *, wall_start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._wall_offset = float(wall_start) - self._now

    def monotonic(self) -> float:
        """The current fake monotonic reading."""
        return self._now

    def time(self) -> float:
        """The wall-clock time matching the current monotonic reading."""
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (>= 0)."""
        if seconds < 0:
            raise ValueError(f"FakeClock.advance: seconds must be >= 0, got {seconds!r}")
        self._now += seconds

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"
