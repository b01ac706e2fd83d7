"""Named breakers: the same name always means the same breaker."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._breaker import CircuitBreaker
from ._categories import ErrorCategory
from ._clock import Clock, check_clock
from ._config import CircuitConfig, make_config
from ._store import StateStore

__all__ = ("Registry", "registry")


class Registry:
    """A set of circuit breakers identified by name.

    Args:
        clock: passed to every breaker this registry creates (default: system clock).
        store: a :class:`StateStore` every created breaker shares its
            transitions through (default: none, in-process only); or later,
            :meth:`use_store`.
        rng: a ``random.Random`` for every created breaker's random draws.

    ``resilience.registry`` is the process-wide default; build your own for
    isolation (tests, or one per tenant).
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        store: StateStore | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if clock is not None:
            check_clock(clock)
        self._clock = clock
        self._rng = rng
        self._store = store
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}

    def use_store(self, store: StateStore) -> None:
        """Share every breaker of this registry through ``store``: those
        already created (``@circuit`` creates them at import time, before an
        app connects to Redis) and every later one. Call it once, at startup.

        Raises:
            TypeError: ``store`` is not a :class:`StateStore`.
            RuntimeError: the registry already shares through another store.
        """
        if not isinstance(store, StateStore):
            raise TypeError(f"use_store needs a StateStore, got {store!r}")
        with self._lock:
            if self._store is not None and self._store is not store:
                raise RuntimeError("this registry already shares its breakers through a store")
            self._store = store
            breakers = list(self._breakers.values())
        for breaker in breakers:
            if breaker._store is not store:
                breaker._use_store(store)
                store.attach(breaker)

    @property
    def store(self) -> StateStore | None:
        """The store breakers share their state through, or ``None``."""
        return self._store

    @property
    def clock(self) -> Clock | None:
        """The clock given to created breakers (``None``: the system clock)."""
        return self._clock

    def get_or_create(
        self,
        name: str,
        config: CircuitConfig | None = None,
        *,
        classifier: Callable[[BaseException], ErrorCategory] | None = None,
        **fields: Any,
    ) -> CircuitBreaker:
        """The breaker called ``name``, created with these settings if new.

        Raises:
            ValueError: ``name`` exists with different explicit settings (use
                :meth:`reconfigure` to change them).
            TypeError: an unknown setting.
        """
        for wrong in ("clock", "store", "rng"):
            if wrong in fields:
                raise TypeError(
                    f"get_or_create({name!r}): {wrong}= is the registry's, not a breaker "
                    f"setting: use Registry({wrong}=...) for breakers that need their own"
                )
        with self._lock:
            existing = self._breakers.get(name)
            if existing is None:
                breaker = CircuitBreaker(
                    name,
                    config,
                    clock=self._clock,
                    classifier=classifier,
                    store=self._store,
                    rng=self._rng,
                    **fields,
                )
                self._breakers[name] = breaker
                store = self._store
        if existing is None:
            # Outside the registry's lock: a store may read its row (I/O), and
            # a remote state it applies reaches listeners.
            if store is not None:
                store.attach(breaker)
            return breaker
        if config is not None or fields or classifier is not None:
            wanted = make_config(config if config is not None else existing.config, fields)
            differ = existing._same_settings(wanted, classifier)
            if differ:
                details = ", ".join(
                    f"{f}={getattr(wanted, f, classifier)!r} "
                    f"(has {getattr(existing.config, f, existing.classifier)!r})"
                    for f in differ
                )
                raise ValueError(
                    f"circuit {name!r} already exists with other settings: {details}; "
                    "use registry.reconfigure() to change them"
                )
        return existing

    def register(self, breaker: CircuitBreaker) -> CircuitBreaker:
        """Add a breaker built directly (shared through the registry's store,
        if it has one). Raises ``ValueError`` if the name is taken."""
        with self._lock:
            if breaker.name in self._breakers and self._breakers[breaker.name] is not breaker:
                raise ValueError(f"a circuit named {breaker.name!r} is already registered")
            self._breakers[breaker.name] = breaker
            store = self._store
        if store is not None and breaker._store is not store:
            breaker._use_store(store)
            store.attach(breaker)
        return breaker

    def unregister(self, name: str) -> CircuitBreaker | None:
        """Remove and return the breaker called ``name`` (``None`` if absent)."""
        with self._lock:
            return self._breakers.pop(name, None)

    def get(self, name: str) -> CircuitBreaker | None:
        """The breaker called ``name``, or ``None``."""
        return self._breakers.get(name)

    def __getitem__(self, name: str) -> CircuitBreaker:
        return self._breakers[name]

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __len__(self) -> int:
        return len(self._breakers)

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(self.all())

    def all(self) -> list[CircuitBreaker]:
        """Every breaker, in creation order."""
        with self._lock:
            return list(self._breakers.values())

    def snapshot(self) -> list[dict[str, Any]]:
        """``status()`` of every breaker."""
        return [b.status() for b in self.all()]

    def reset_all(self) -> None:
        """``reset()`` every breaker."""
        for b in self.all():
            b.reset()

    def _select(self, names: Iterable[str] | None) -> list[CircuitBreaker]:
        if names is None:
            return self.all()
        if isinstance(names, str):
            raise TypeError("names must be an iterable of names, not a single string")
        chosen = []
        for name in names:
            breaker = self._breakers.get(name)
            if breaker is None:
                raise KeyError(f"no circuit named {name!r}")
            chosen.append(breaker)
        return chosen

    def force_open_all(
        self, reason: str = "forced open", *, names: Iterable[str] | None = None
    ) -> None:
        """Force open every breaker, or only ``names`` (isolate a group)."""
        for b in self._select(names):
            b.force_open(reason)

    def reconfigure(self, name: str, **fields: Any) -> CircuitConfig:
        """Change the settings of ``name`` in place (state and counters kept)."""
        breaker = self._breakers.get(name)
        if breaker is None:
            raise KeyError(f"no circuit named {name!r}")
        return breaker.reconfigure(**fields)

    def __repr__(self) -> str:
        return f"<Registry of {len(self._breakers)} circuits>"


registry = Registry()
"""The process-wide default registry."""
