"""The seam for sharing breaker state between processes.

Outcomes are counted in each process; *transitions* are shared. A
:class:`StateStore` is attached to breakers (by a registry: ``Registry(store=...)``
or ``registry.use_store(store)``) and

- hears every transition a breaker commits (``publish``: after the change,
  outside the breaker's lock, never on the hot path; it must not block);
- feeds transitions made elsewhere back (``SharedBreaker.apply_remote``),
  which the breaker applies without publishing them again;
- decides, when an open period ends, whether *this* process may probe
  (``may_probe``, consulted under the breaker's lock at the lazy
  OPEN -> HALF_OPEN move; it must answer from memory): one process of the
  fleet probes while the others stay OPEN until they hear the result.

A store sees a breaker only through :class:`SharedBreaker`, the narrow view
below, not the concrete :class:`resilience.CircuitBreaker`. The default,
:class:`LocalStore`, shares nothing and always lets the process probe; the
Redis store is ``resilience.integrations.redis.RedisStore``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ._config import CircuitConfig
    from ._machine import Transition
    from ._states import CircuitState

__all__ = ("LocalStore", "RemoteState", "SharedBreaker", "StateStore")


class RemoteState(NamedTuple):
    """A breaker's shared state as the fleet knows it.

    ``remaining`` is seconds until the open period ends (OPEN) or until the
    probe lease held elsewhere expires (HALF_OPEN), measured by the store's
    clock at the moment it read the row and applied to the local monotonic
    clock: no wall clock crosses processes.
    """

    state: CircuitState  # CLOSED, OPEN or HALF_OPEN (probing elsewhere)
    remaining: float
    reason: str
    epoch: int  # the fleet's generation of this breaker's row


@runtime_checkable
class SharedBreaker(Protocol):
    """What a :class:`StateStore` may use of a breaker."""

    @property
    def name(self) -> str:
        """The breaker's name: its identity across the fleet."""
        ...

    @property
    def config(self) -> CircuitConfig:
        """The breaker's settings (open periods, half-open limits)."""
        ...

    def shared_state(self) -> tuple[CircuitState, float]:
        """``(state, seconds left in the open period)`` now, after any lazy
        move that is due; 0.0 when not OPEN."""
        ...

    def apply_remote(self, remote: RemoteState, *, deliver: bool = True) -> None:
        """Adopt a transition made elsewhere; it is not published again.
        ``deliver=False``: listeners hear it at the next :meth:`deliver`
        (a store applies under its own lock and delivers after releasing it)."""
        ...

    def deliver(self) -> None:
        """Deliver the transitions committed so far to listeners, in commit order."""
        ...


@runtime_checkable
class StateStore(Protocol):
    """Where breakers share their transitions."""

    def attach(self, breaker: SharedBreaker) -> None:
        """Start sharing ``breaker`` (once per breaker; may read its row)."""
        ...

    def publish(self, breaker: SharedBreaker, transition: Transition) -> None:
        """Share a committed local transition; must not block."""
        ...

    def may_probe(self, breaker: SharedBreaker) -> bool:
        """Whether this process may probe now that the open period ended;
        from memory, never waiting (``False``: stay OPEN, ask again soon)."""
        ...


class LocalStore:
    """The in-process default: nothing is shared, every process probes."""

    __slots__ = ()

    def attach(self, breaker: SharedBreaker) -> None:
        """Nothing to do in-process."""

    def publish(self, breaker: SharedBreaker, transition: Transition) -> None:
        """Nothing to share in-process."""

    def may_probe(self, breaker: SharedBreaker) -> bool:
        """Always: there is no one else to probe."""
        return True
