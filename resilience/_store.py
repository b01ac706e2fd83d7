"""The seam for sharing breaker state between processes.

A :class:`StateStore` sees every transition of the breakers it is attached to
(``publish``, called after the change is committed, outside the breaker's lock,
never on the hot path) and may feed remote transitions back (``attach`` gives
it each breaker a registry creates). The default, :class:`LocalStore`, keeps
everything in-process. A Redis store plugs in here without touching the core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker
    from ._machine import Transition

__all__ = ("LocalStore", "StateStore")


@runtime_checkable
class StateStore(Protocol):
    """Where breakers publish their transitions to share them."""

    def attach(self, breaker: CircuitBreaker) -> None:
        """Start sharing ``breaker`` (called once, when a registry creates it)."""
        ...

    def publish(self, breaker: CircuitBreaker, transition: Transition) -> None:
        """Share a committed transition; must not block."""
        ...


class LocalStore:
    """The in-process default: nothing is shared."""

    __slots__ = ()

    def attach(self, breaker: CircuitBreaker) -> None:
        """Nothing to do in-process."""

    def publish(self, breaker: CircuitBreaker, transition: Transition) -> None:
        """Nothing to share in-process."""
