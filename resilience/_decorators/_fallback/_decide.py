"""What a failed call leads to: the decision, as pure functions of the
rules, the error's verdict, the cache entry at hand and the time.

No I/O, no awaiting, no state: the drivers (:mod:`._async`, :mod:`._sync`)
carry the decisions out. An entry is ``(value, stored_at)``, where
``stored_at`` is the clock's wall time when the value was produced.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

__all__ = (
    "MISSING",
    "UNREAD",
    "Entry",
    "Rules",
    "Step",
    "after_failure",
    "is_fresh",
    "live",
    "serve",
)

Entry = tuple[Any, float]
"""A cache entry: ``(value, stored_at)``."""


class _Missing:
    """The type of :data:`MISSING`."""

    __slots__ = ()
    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""``fallback(default=MISSING)``: no default value (``None`` is a value)."""


class _Unread(enum.Enum):
    UNREAD = "unread"


UNREAD: Final = _Unread.UNREAD
"""The cache has not been read for this call."""


class Step(enum.Enum):
    """What to do after a failed call."""

    RAISE = "raise"  # nothing to serve: re-raise the original error
    READ = "read"  # read the cache (pending writes first), then serve() the entry
    SOURCE = "source"  # call the callable source
    SERVE = "serve"  # serve the value that comes with this step


@dataclass(frozen=True, slots=True)
class Rules:
    """What ``@fallback`` was told at decoration time.

    Attributes:
        ttl: seconds an entry may be served for, or ``None`` (no limit).
        fresh_ttl: seconds an entry is served without calling, or ``None``.
        default: the value served when nothing else can be, or ``MISSING``.
        cache: values come from a cache.
        source: values come from a callable source.
    """

    ttl: float | None
    fresh_ttl: float | None
    default: Any
    cache: bool
    source: bool


def live(rules: Rules, cached: Entry | None, now: float) -> bool:
    """Whether ``cached`` exists and is no older than ``ttl`` at ``now``."""
    if cached is None:
        return False
    ttl = rules.ttl
    return ttl is None or now - cached[1] <= ttl


def serve(rules: Rules, cached: Entry | None, now: float) -> tuple[Step, Any]:
    """What to serve in place of an answer at ``now``: the entry's value
    unless it is older than ``ttl`` by then, else the default, else nothing
    (``Step.RAISE``). The age is taken now, not when the entry was read."""
    if live(rules, cached, now):
        assert cached is not None
        return Step.SERVE, cached[0]
    if rules.default is not MISSING:
        return Step.SERVE, rules.default
    return Step.RAISE, None


def is_fresh(rules: Rules, cached: Entry | None, now: float) -> bool:
    """Whether ``cached`` may be served at ``now`` without calling (younger
    than ``fresh_ttl``; a clock gone backwards counts as age 0)."""
    fresh_ttl = rules.fresh_ttl
    return cached is not None and fresh_ttl is not None and now - cached[1] <= fresh_ttl


def after_failure(
    rules: Rules, triggered: bool, cached: Entry | _Unread | None, now: float
) -> tuple[Step, Any]:
    """What a failed call leads to at ``now``.

    Args:
        rules: the decorator's rules.
        triggered: whether the error triggers the fallback (``on=``).
        cached: the entry read before the call, ``None`` for a miss, or
            :data:`UNREAD` when the cache was not read.
        now: the clock's wall time.

    Returns:
        ``(Step.RAISE, None)``, ``(Step.READ, None)``, ``(Step.SOURCE, None)``
        or ``(Step.SERVE, value)``.
    """
    if not triggered:
        return Step.RAISE, None
    if not rules.cache:
        return (Step.SOURCE, None) if rules.source else (Step.SERVE, rules.default)
    if cached is UNREAD:
        return Step.READ, None
    return serve(rules, cached, now)
