"""Counters of one decorated function's cache side."""

from __future__ import annotations

from typing import Any

__all__ = ("FallbackMetrics",)


class FallbackMetrics:
    """Plain counters, bumped where things happen (no locks: an increment lost
    to a thread race costs a count, never a decision).

    Attributes:
        writes: values written to the cache.
        coalesced: successes whose pending write was replaced by a newer one
            before it was written (only the newest value of a key is written).
        skipped: writes left out because an equal value (same pickled bytes)
            was written for the key within the refresh interval.
        dropped: pending writes dropped because the queue was full (oldest first).
        cache_errors: cache reads and writes that failed (timeouts included;
            not the calls refused while the cache's breaker is open).
        rejected: cache reads and writes not tried because the cache's
            breaker was open.
        served_stale: failures answered with a cached value (or a pending one).
        served_default: failures answered with the default.
        last_served_age / max_served_age: the age in seconds of the cached
            value most recently served, and of the oldest ever served.
    """

    __slots__ = (
        "cache_errors",
        "coalesced",
        "dropped",
        "last_served_age",
        "max_served_age",
        "rejected",
        "served_default",
        "served_stale",
        "skipped",
        "writes",
    )

    def __init__(self) -> None:
        self.writes = 0
        self.coalesced = 0
        self.skipped = 0
        self.dropped = 0
        self.cache_errors = 0
        self.rejected = 0
        self.served_stale = 0
        self.served_default = 0
        self.last_served_age: float | None = None
        self.max_served_age: float | None = None

    def served(self, age: float) -> None:
        """Count a stale value served at ``age`` seconds."""
        self.served_stale += 1
        age = max(age, 0.0)
        self.last_served_age = age
        if self.max_served_age is None or age > self.max_served_age:
            self.max_served_age = age

    def snapshot(self, pending: int) -> dict[str, Any]:
        """The counters as a dict, with ``pending`` (writes not yet done)."""
        return {
            "writes": self.writes,
            "coalesced": self.coalesced,
            "skipped": self.skipped,
            "dropped": self.dropped,
            "pending": pending,
            "cache_errors": self.cache_errors,
            "rejected": self.rejected,
            "served_stale": self.served_stale,
            "served_default": self.served_default,
            "last_served_age": self.last_served_age,
            "max_served_age": self.max_served_age,
        }
