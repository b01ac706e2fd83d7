"""A test switch for application code decorated at import time.

``@circuit`` binds its breaker from ``resilience.registry`` when the module is
imported, and ``@retry`` sleeps between attempts: a test suite of the
application would share breaker state between tests and wait for backoffs.
:func:`set_testing` turns both off for tests, the way stamina's
``set_testing`` does for retries::

    from resilience.testing import set_testing

    with set_testing(attempts=1):
        ...  # fresh breakers, and @retry makes one attempt, no waiting

The pytest plugin has it as the fixture ``resilience_testing``.
"""

from __future__ import annotations

import dataclasses
from types import TracebackType

from .._breaker import CircuitBreaker
from .._config import CircuitConfig
from .._decorators._retry import TESTING
from .._registry import Registry

__all__ = ("TestingSwitch", "is_testing", "set_testing")

# The registry and settings captured by the newest activation, restored when
# testing is switched off.
_Snapshot = tuple[Registry, dict[CircuitBreaker, CircuitConfig]]
_snapshot: _Snapshot | None = None


def is_testing() -> bool:
    """Whether :func:`set_testing` has switched testing mode on."""
    return TESTING.active


class TestingSwitch:
    """Returned by :func:`set_testing`; as a context manager, its exit puts
    back what was in force before (and cleans the breakers again)."""

    __slots__ = ("_previous",)
    __test__ = False  # not a pytest test class

    def __init__(self, previous: tuple[bool, int | None, _Snapshot | None]) -> None:
        self._previous = previous

    def __enter__(self) -> TestingSwitch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _snapshot
        if TESTING.active:
            _leave()
        TESTING.active, TESTING.attempts, _snapshot = self._previous

    def __repr__(self) -> str:
        return f"<TestingSwitch active={TESTING.active} attempts={TESTING.attempts}>"


def _clean(registry: Registry, settings: dict[CircuitBreaker, CircuitConfig]) -> None:
    for breaker in registry.all():
        saved = settings.get(breaker)
        if saved is not None and breaker.config != saved:
            breaker.reconfigure(
                **{f.name: getattr(saved, f.name) for f in dataclasses.fields(saved)}
            )
        breaker.reset("testing")


def _leave() -> None:
    global _snapshot
    TESTING.active = False
    TESTING.attempts = None
    if _snapshot is not None:
        _clean(*_snapshot)
        _snapshot = None


def set_testing(
    testing: bool = True, *, attempts: int | None = None, registry: Registry | None = None
) -> TestingSwitch:
    """Switch testing mode on (or off) for code decorated at import time.

    On: every breaker of ``registry`` is reset (CLOSED, clean window and
    counters) and its settings are remembered; ``@retry`` no longer waits
    between attempts, and makes at most ``attempts`` attempts when that is
    given. Off: each remembered breaker gets its settings back (undoing a
    test's ``reconfigure``), every breaker is reset again, and ``@retry``
    waits as configured. Breakers created while on are kept (functions
    decorated then still hold them), reset too. Call it plainly, or use the
    result as a context manager that restores the previous mode on exit.
    The hot path is untouched: ``@retry`` reads the switch only after a
    failure, ``@circuit`` never.

    Args:
        testing: on (default ``True``) or off.
        attempts: cap on every ``@retry``'s attempts while on, an int >= 1
            (1 = no retry). Default ``None``: each decorator's own.
        registry: whose breakers are cleaned. Default ``resilience.registry``,
            where ``@circuit`` puts them.

    Raises:
        TypeError: ``attempts`` is not an int, or ``registry`` not a Registry.
        ValueError: ``attempts`` < 1.
    """
    global _snapshot
    if attempts is not None:
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise TypeError(f"set_testing: attempts must be an int >= 1, got {attempts!r}")
        if attempts < 1:
            raise ValueError(f"set_testing: attempts must be >= 1, got {attempts!r}")
    if registry is None:
        from .._registry import registry as default_registry

        registry = default_registry
    elif not isinstance(registry, Registry):
        raise TypeError(f"set_testing: registry must be a Registry, got {registry!r}")
    switch = TestingSwitch((TESTING.active, TESTING.attempts, _snapshot))
    if not testing:
        _leave()
        return switch
    _snapshot = (registry, {b: b.config for b in registry.all()})
    TESTING.active = True
    TESTING.attempts = attempts
    _clean(*_snapshot)
    return switch
