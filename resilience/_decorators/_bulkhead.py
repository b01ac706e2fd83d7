"""``@bulkhead``: a cap on concurrent calls, so one slow dependency cannot
take every worker with it.

One compartment serves async callers (waiting on futures) and sync callers
in threads (waiting on locks) alike: a ``threading.Lock`` guards the
counters, never held across an ``await`` or a wait. A slot is handed
directly to the next waiter in FIFO order, so a newcomer cannot overtake
the queue. A full bulkhead raises ``BulkheadFullError``, which an outer
circuit breaker ignores: load shedding says nothing about the dependency.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import wrapt

from .._errors import BulkheadFullError
from ._common import fast_wrapper_class, is_async_callable, qualified_name, reject_generators

__all__ = ("Bulkhead", "bulkhead")

P = ParamSpec("P")
R = TypeVar("R")


class _AsyncWaiter:
    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()


class _SyncWaiter:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = threading.Event()


def _grant(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Bulkhead:
    """A compartment of ``max_concurrent`` slots and ``max_waiting`` places
    in a queue; use it as a decorator (``@bulkhead(10)``).

    Every function decorated with the same ``Bulkhead`` shares its slots:
    ``db = bulkhead(10)`` then ``@db`` on each repository method caps them
    together. Sync functions are supported too: their callers (threads)
    block for a slot while ``max_waiting`` allows.

    Args:
        max_concurrent: calls running at once; an int >= 1.
        max_waiting: callers that may wait for a slot; an int >= 0. Default
            0: a call that finds every slot taken is rejected at once.
        name: the name in ``BulkheadFullError``; default the decorated
            function's ``module.qualname``.

    Raises:
        TypeError: a setting that is not an int (or a ``name`` that is not a str).
        ValueError: ``max_concurrent`` < 1 or ``max_waiting`` < 0.
    """

    __slots__ = ("_active", "_lock", "_waiters", "max_concurrent", "max_waiting", "name")

    def __init__(
        self, max_concurrent: int, max_waiting: int = 0, *, name: str | None = None
    ) -> None:
        for label, value, minimum in (
            ("max_concurrent", max_concurrent, 1),
            ("max_waiting", max_waiting, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"@bulkhead: {label} must be an int, got {value!r}")
            if value < minimum:
                raise ValueError(f"@bulkhead: {label} must be >= {minimum}, got {value!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"@bulkhead: name must be a non-empty string, got {name!r}")
        self.max_concurrent = max_concurrent
        self.max_waiting = max_waiting
        self.name = name
        self._lock = threading.Lock()
        self._active = 0
        self._waiters: collections.deque[_AsyncWaiter | _SyncWaiter] = collections.deque()

    def __repr__(self) -> str:
        return (
            f"<Bulkhead {self.name or ''} {self._active}/{self.max_concurrent} running, "
            f"{len(self._waiters)}/{self.max_waiting} waiting>"
        )

    @property
    def active(self) -> int:
        """Calls holding a slot now."""
        return self._active

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot now."""
        return len(self._waiters)

    def _full(self, name: str) -> BulkheadFullError:
        return BulkheadFullError(self.name or name, self.max_concurrent, self.max_waiting)

    def _release(self) -> None:
        """Give the slot to the first waiter, or free it. Popping a waiter is
        granting it the slot: a waiter that was cancelled meanwhile passes it on."""
        with self._lock:
            waiter = self._waiters.popleft() if self._waiters else None
            if waiter is None:
                self._active -= 1
                return
        if isinstance(waiter, _SyncWaiter):
            waiter.event.set()
            return
        loop = waiter.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            _grant(waiter.future)
            return
        try:
            loop.call_soon_threadsafe(_grant, waiter.future)
        except RuntimeError:  # its loop is closed: nobody will take the slot
            self._release()

    async def _acquire_async(self, name: str) -> None:
        lock = self._lock
        lock.acquire()
        if self._active < self.max_concurrent and not self._waiters:
            self._active += 1
            lock.release()
            return
        if len(self._waiters) >= self.max_waiting:
            lock.release()
            raise self._full(name)
        try:
            waiter = _AsyncWaiter(asyncio.get_running_loop())
            self._waiters.append(waiter)
        finally:
            lock.release()
        try:
            await waiter.future
        except BaseException:
            with lock:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    granted = True  # popped by _release: the slot is ours to pass on
                else:
                    granted = False
            if granted:
                self._release()
            raise

    def _acquire_sync(self, name: str) -> None:
        lock = self._lock
        with lock:
            if self._active < self.max_concurrent and not self._waiters:
                self._active += 1
                return
            if len(self._waiters) >= self.max_waiting:
                raise self._full(name)
            waiter = _SyncWaiter()
            self._waiters.append(waiter)
        try:
            waiter.event.wait()
        except BaseException:  # KeyboardInterrupt while waiting
            with lock:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    granted = True
                else:
                    granted = False
            if granted:
                self._release()
            raise

    async def call_async(
        self,
        name: str,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        await self._acquire_async(name)
        try:
            return await fn(*args, **kwargs)
        finally:
            self._release()

    def call_sync(
        self, name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        self._acquire_sync(name)
        try:
            return fn(*args, **kwargs)
        finally:
            self._release()

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async function or method with this compartment."""
        target: Any = fn
        if not callable(target) and not isinstance(target, classmethod | staticmethod):
            raise TypeError(f"@bulkhead needs a callable, got {fn!r}")
        reject_generators(fn, "bulkhead")
        name = qualified_name(fn)
        if is_async_callable(fn):
            call_async = self.call_async

            def run_async(
                wrapped: Callable[..., Awaitable[Any]],
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
            ) -> Awaitable[Any]:
                return call_async(name, wrapped, args, kwargs)

            run: Callable[..., Any] = run_async
        else:
            call_sync = self.call_sync

            def run_sync(
                wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> Any:
                return call_sync(name, wrapped, args, kwargs)

            run = run_sync

        def wrapper(
            wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            return run(wrapped, args, kwargs)

        cls = fast_wrapper_class(_BulkheadWrapper, fn, run)
        wrapped: Any = cls(fn, wrapper)
        wrapped._self_bulkhead = self
        return wrapped  # type: ignore[no-any-return]


class _BulkheadWrapper(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """A function behind a bulkhead; ``.bulkhead`` is the compartment."""

    @property
    def bulkhead(self) -> Bulkhead:
        """The compartment this function's calls take slots from."""
        return self._self_bulkhead  # type: ignore[no-any-return]


def bulkhead(max_concurrent: int, max_waiting: int = 0, *, name: str | None = None) -> Bulkhead:
    """Cap concurrent calls: ``@bulkhead(10)``, or ``@bulkhead(10, max_waiting=50)``.

    Returns a :class:`Bulkhead`; reuse it to share the cap between functions.
    A call beyond ``max_concurrent`` running and ``max_waiting`` waiting
    raises :class:`resilience.BulkheadFullError` without running. Waiters get
    slots in arrival order; a cancelled waiter leaves the queue (put a
    ``@timeout`` outside to bound the wait). Sync functions are supported
    (threads block while waiting), so one compartment can cap a dependency
    used from both worlds.

    Args:
        max_concurrent: calls running at once; an int >= 1. Required.
        max_waiting: callers allowed to wait for a slot; an int >= 0.
            Default 0 (reject at once when full).
        name: the name in ``BulkheadFullError``; default the decorated
            function's ``module.qualname``.

    Raises:
        TypeError: a non-int setting. ValueError: out of range.
    """
    return Bulkhead(max_concurrent, max_waiting, name=name)
