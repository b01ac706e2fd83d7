"""`CircuitBreaker`: the decision engine (`_machine.Machine`) plus a lock, a
clock, listeners and the ways to guard code with it.

The lock-free part of ``@circuit``'s hot path is the guard in
``resilience._guard``: admission and a success in a settled window take no
lock, and most calls read no clock. Everything else (``call``,
``call_sync``, ``with breaker:``, permits, and whatever a guard cannot do
without the lock) goes through the generic drivers here: admission and the
result under the lock, the call marked in the context so that a call nested
in it passes straight through. No lock is ever held across an ``await`` or
while a listener runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import random
import sys
import threading
import types
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

from ._categories import judge_for
from ._clock import SYSTEM_CLOCK, Clock, check_clock
from ._config import CircuitConfig, make_config
from ._errors import CircuitOpenError
from ._guard import GUARD_FILE, guard, guard_frame_breaker, is_async_callable
from ._machine import LOCK_FREE, LaneToken, Machine, Transition
from ._states import CircuitState, ErrorCategory, Outcome

if TYPE_CHECKING:
    from ._store import RemoteState, StateStore

__all__ = ("CircuitBreaker", "Listener", "Permit")

logger = logging.getLogger("resilience")

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

Listener = Callable[[CircuitState, CircuitState, str], Any]
"""``fn(old_state, new_state, reason)``, sync or async."""

_CLOSED: Final = CircuitState.CLOSED
_OPEN: Final = CircuitState.OPEN
_HALF_OPEN: Final = CircuitState.HALF_OPEN
_FORCED_OPEN: Final = CircuitState.FORCED_OPEN
_FAILURE: Final = Outcome.FAILURE
_TRIP: Final = Outcome.TRIP
_SUCCESS: Final = Outcome.SUCCESS

# Observers of every breaker's transitions (``resilience.testing.capture_events``
# and the metrics integrations): ``fn(breaker, transition)``, sync only.
_global_observers: list[Callable[[CircuitBreaker, Transition], None]] = []


# What a context holds for each call this breaker admitted in it: the
# admission (generation, start) of a ``with breaker:`` block, or a marker.
# An entry is (running, generation, start): ``running`` is a one-item list,
# true while the call runs (a task created inside a call inherits the entry
# with its context; it is inside that call while the call runs, not after,
# so a background task that outlives the call has its calls counted). For a
# ``with`` block, its admission; generation -1: a call of a generic driver;
# -2: a nested ``with`` block, passed straight through.
_Admitted = tuple[list[bool], int, float]
_DRIVER = -1
_PASSED = -2
_COROUTINE = types.CoroutineType


_LOOK_UP_EVERY = 2


def _guard_above(frame: Any, breaker: CircuitBreaker) -> bool:
    """Whether one of the few frames from ``frame`` up runs a generated guard
    of ``breaker`` (kept short: it runs on some of the hot path's samples)."""
    depth = 6
    while frame is not None and depth:
        if frame.f_code.co_filename == GUARD_FILE and guard_frame_breaker(frame) is breaker:
            return True
        frame = frame.f_back
        depth -= 1
    return False


def _frame_above(depth: int) -> Any:
    """The frame ``depth`` levels above the caller, or ``None`` when the stack
    is not that deep (a guard run as the first frame of a thread)."""
    try:
        return sys._getframe(depth + 1)
    except ValueError:
        return None


def _since(start: float | None, now: float) -> float | None:
    return None if start is None else now - start


def _fn_name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _discard(awaitable: Any) -> None:
    """Close a coroutine that will never be awaited (no "never awaited" warning)."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()


def add_global_observer(fn: Callable[[CircuitBreaker, Transition], None]) -> Callable[[], None]:
    """Observe every breaker's transitions; returns the function that stops it."""
    _global_observers.append(fn)

    def remove() -> None:
        try:
            _global_observers.remove(fn)
        except ValueError:
            pass

    return remove


class CircuitBreaker:
    """A circuit breaker: stops calling a dependency that keeps failing.

    Args:
        name: the breaker's identity (a non-empty string). A breaker built
            directly is not registered; ``registry.get_or_create`` registers.
        config: a :class:`CircuitConfig`; keyword settings override its fields.
        clock: an object with ``monotonic()`` and ``time()``; default the system clock.
        classifier: replaces :func:`resilience.classify` for this breaker.
        store: shares transitions with other processes (see ``StateStore``);
            default none (in-process only).
        **config_fields: any :class:`CircuitConfig` field.

    Use it as ``await breaker.call(fn, ...)``, ``breaker.call_sync(fn, ...)``,
    ``@breaker``, ``async with breaker:``, ``with breaker:``, or
    ``breaker.try_acquire()`` for admission without an exception.
    """

    __slots__ = (
        "__weakref__",
        "_classifier",
        "_clock",
        "_config",
        "_delivering",
        "_inside",
        "_judge",
        "_listeners",
        "_lock",
        "_look_up_in",
        "_m",
        "_name",
        "_no_loop_warned",
        "_now",
        "_outbox",
        "_store",
        "_tasks",
    )

    def __init__(
        self,
        name: str,
        config: CircuitConfig | None = None,
        *,
        clock: Clock | None = None,
        classifier: Callable[[BaseException], ErrorCategory] | None = None,
        store: StateStore | None = None,
        rng: random.Random | None = None,
        **config_fields: Any,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if clock is None:
            clock = SYSTEM_CLOCK
        else:
            check_clock(clock)
        if classifier is not None and not callable(classifier):
            raise TypeError(f"classifier must be callable, got {classifier!r}")
        if rng is not None and not callable(getattr(rng, "random", None)):
            raise TypeError(f"rng must be a random.Random, got {rng!r}")
        self._name = name
        self._config = make_config(config, config_fields)
        self._clock = clock
        self._now = clock.monotonic
        self._classifier = classifier
        self._judge = judge_for(self._config, classifier)
        self._m = Machine(self._config, rng)
        self._lock = threading.Lock()
        # (listener, is async, the loop an async one was added on)
        self._listeners: tuple[tuple[Listener, bool, asyncio.AbstractEventLoop | None], ...] = ()
        # Async listeners' tasks, kept until they finish (a set is 216 bytes:
        # made on the first one).
        self._tasks: set[asyncio.Task[Any]] | None = None
        # The calls this breaker has admitted in the current task or thread
        # (see _inside_var); created on first use.
        self._inside: contextvars.ContextVar[tuple[_Admitted, ...]] | None = None
        # Transitions committed but not yet delivered, in commit order, and
        # the lock of whoever is delivering them (see _deliver).
        self._outbox: list[Transition] | None = None
        self._delivering: threading.RLock | None = None
        self._no_loop_warned = False
        self._look_up_in = 1  # samples until the next look up the stack (see _maybe_look_up)
        self._store: StateStore | None = None
        if store is not None:
            self._use_store(store)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self._name!r} {self._m.state.value}>"

    # -- admission and results ----------------------------------------------
    #
    # The generated guards (resilience._guard) do the lock-free part of the
    # hot path themselves and call the methods below for everything else.
    # Everything commits to the machine under the lock; the transitions it
    # queued are delivered after the lock is released (_deliver).

    def _admit_slow(self) -> int:
        """Admit a call under the lock, or raise :class:`CircuitOpenError`."""
        with self._lock:
            m = self._m
            gen = m.admit(self._now())
            pending = self._take_pending(m)
            if gen < 0:
                state, retry_after = m.state, m.rejected_retry_after
        if pending:
            self._deliver()
        if gen < 0:
            # Built in the raise statement, never held in a local: a local
            # would tie the error to this frame through its traceback, a
            # cycle only the garbage collector frees.
            raise CircuitOpenError(self._name, state, retry_after, m.last_failure_category)
        return gen

    def _admit(self) -> int:
        m = self._m
        gen = m.gen  # read before the state: a stale pair only drops the result
        if m.state is _CLOSED:
            return gen
        return self._admit_slow()

    def _finish(self, gen: int, end: float | None, duration: float | None, weight: int) -> None:
        """Record a success under the lock (``end`` None: read the clock)."""
        with self._lock:
            m = self._m
            m.on_success(gen, self._now() if end is None else end, duration, weight)
            pending = self._take_pending(m)
        if pending:
            self._deliver()

    def _settle_error(self, gen: int, start: float | None, exc: BaseException) -> None:
        """Record a call admitted under ``gen`` that raised ``exc``, as its
        outcome says (``start`` None: the call was not timed)."""
        outcome, category = self._judge.judge_and_mark(exc)
        if outcome is _FAILURE or outcome is _TRIP:
            trip = outcome is _TRIP
            cat = category or ErrorCategory.UNKNOWN_ERROR
            self._commit(lambda m, now: m.on_failure(gen, now, _since(start, now), cat, trip))
        elif outcome is _SUCCESS:
            self._commit(lambda m, now: m.on_success(gen, now, _since(start, now)))
        else:
            self._commit(lambda m, now: m.on_ignored(gen, now, _since(start, now)))

    def _fast_error(self, gen: int, start: float | None) -> None:
        """:meth:`_settle_error` for the exception a generated guard is
        handling, unless its call is nested in another call of this breaker
        (that call records the outcome)."""
        exc = sys.exc_info()[1]
        assert exc is not None
        if not self._nested_in_guard(_frame_above(2)):
            self._settle_error(gen, start, exc)

    def _nested_in_guard(self, frame: Any, depth: int = 1 << 30) -> bool:
        """Whether ``frame`` runs inside a call admitted by this breaker: one
        admitted under the lock (marked in this context), or a generated
        guard of this breaker up to ``depth`` frames up the stack (admitted
        without the lock, and so unmarked). Seeing one closes the lock-free
        lane for good (``Machine.note_nested``)."""
        nested = self._is_inside()
        while not nested and frame is not None and depth > 0:
            nested = guard_frame_breaker(frame) is self
            frame = frame.f_back
            depth -= 1
        if nested and not self._m.nested:
            with self._lock:
                self._m.note_nested()
        return nested

    def _note_nested(self) -> None:
        if not self._m.nested:
            with self._lock:
                self._m.note_nested()

    # Every other end of a run of the lock-free lane (runs are 128 to 255
    # calls long past the first 1,024) also looks a few frames up for a
    # guard of this breaker, so a nested call that only ever succeeds is
    # found within a few hundred calls. (Walking frames costs about 100 ns a
    # frame: not on every call.)

    def _run_over(self, t: LaneToken) -> None:
        """A guard's untimed lock-free success ended its run: one of the next
        admissions is the run's latency sample (``Machine.arm_sample``)."""
        self._m.arm_sample(t)
        self._maybe_look_up()

    def _run_done(self, t: LaneToken, n: int, duration: float, weight: int) -> None:
        """A guard's timed lock-free success that ended its run or is a
        latency sample (``Machine.lockfree_step``)."""
        if self._m.lockfree_step(t, n, duration, weight):
            with self._lock:
                self._m.promote(t)
        self._maybe_look_up()

    def _maybe_look_up(self) -> None:
        left = self._look_up_in - 1
        if left > 0:
            self._look_up_in = left
            return
        self._look_up_in = _LOOK_UP_EVERY
        if _guard_above(_frame_above(3), self):
            self._note_nested()

    # Everything but the hot path commits to the machine through these two.

    def _control(self, action: Callable[[Machine, float], T]) -> T:
        """Run ``action(machine, now)`` under the lock; queue the transitions
        it made for delivery (not yet delivered)."""
        with self._lock:
            m = self._m
            result = action(m, self._now())
            self._take_pending(m)
        return result

    def _commit(self, action: Callable[[Machine, float], T]) -> T:
        """:meth:`_control`, then deliver the transitions; return the result."""
        result = self._control(action)
        self.deliver()
        return result

    def _is_inside(self) -> bool:
        """Whether the current task or thread is inside a call this breaker
        admitted under the lock."""
        var = self._inside
        if var is None:
            return False
        for running, _, _ in var.get(()):  # noqa: SIM110 - any() would build a generator
            if running[0]:
                return True
        return False

    def _inside_var(self) -> contextvars.ContextVar[tuple[_Admitted, ...]]:
        var = self._inside
        if var is None:
            var = self._inside = contextvars.ContextVar(f"resilience-inside-{self._name}")
        return var

    # The generic drivers: ``call``, ``call_sync``, the wrapt-wrapped
    # callables, and every call a generated guard cannot settle without the
    # lock. One awaits and one does not (tenacity's shape). Each marks its
    # call in the context, so a call nested in it passes straight through.

    async def _call_async(
        self, fn: Callable[..., Awaitable[R]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> R:
        # Made before admission (a coroutine runs nothing until awaited), so
        # that a function that returns no awaitable is refused before it counts.
        awaitable = fn(*args, **kwargs)
        if type(awaitable) is not _COROUTINE and not inspect.isawaitable(awaitable):
            raise TypeError(
                f"circuit {self._name!r}: {_fn_name(fn)} returned {type(awaitable).__name__}, "
                "not an awaitable: use call_sync() or a sync guard for sync functions"
            )
        var = self._inside
        if var is None:
            var = self._inside_var()
        else:
            for running, _, _ in var.get(()):
                if running[0]:
                    self._note_nested()
                    return await awaitable  # nested: not admitted again, not counted again
        try:
            gen = self._admit()
        except BaseException:
            _discard(awaitable)
            raise
        now = self._now
        start = now()
        # Marked for the call's length. Left in the context afterwards (not
        # reset: a finished mark says nothing), so a task created during the
        # call is inside it only while it runs.
        running = [True]
        var.set(((running, _DRIVER, 0.0),))
        try:
            result = await awaitable
        except BaseException as exc:
            running[0] = False
            self._settle_error(gen, start, exc)
            raise
        running[0] = False
        end = now()
        d = end - start
        if not self._m.count_lockfree(gen, end, d):
            self._finish(gen, end, d, 0)
        return result

    def _call_sync(self, fn: Callable[..., R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        if self._is_inside():
            self._note_nested()
            return fn(*args, **kwargs)  # nested: not admitted again, not counted again
        var = self._inside_var()
        gen = self._admit()
        now = self._now
        start = now()
        running = [True]
        var.set(((running, _DRIVER, 0.0),))  # left afterwards, finished (see _call_async)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            running[0] = False
            self._settle_error(gen, start, exc)
            raise
        running[0] = False
        if inspect.isawaitable(result):
            # A sync guard around something that returns an awaitable (a
            # lambda, a naive wrapper): its work has not even started, and
            # its failures would never be counted. Loud, and nothing recorded.
            self._commit(lambda m, now: m.release(gen, now))
            _discard(result)
            raise TypeError(
                f"circuit {self._name!r}: {_fn_name(fn)} returned an awaitable from a sync "
                "guard: await breaker.call(...) or decorate an async def"
            )
        end = now()
        self._finish(gen, end, end - start, 0)
        return result

    # -- ways to guard code ------------------------------------------------

    def call(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, R]:
        """Await ``fn(*args, **kwargs)`` through the breaker.

        Raises:
            CircuitOpenError: the breaker rejected the call; ``fn``'s
                coroutine was closed without running.
            TypeError: ``fn`` returned no awaitable (a sync function); nothing
                was admitted or recorded.
        """
        return self._call_async(fn, args, kwargs)

    def call_sync(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the sync ``fn(*args, **kwargs)`` through the breaker (thread-safe).

        Raises:
            CircuitOpenError: the breaker rejected the call; ``fn`` was not called.
            TypeError: ``fn`` is async, or returned an awaitable; nothing was recorded.
        """
        if is_async_callable(fn):
            raise TypeError(
                f"circuit {self._name!r}: call_sync() of the async function {_fn_name(fn)}: "
                "use await breaker.call(...)"
            )
        return self._call_sync(fn, args, kwargs)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async function or method with this breaker."""
        return guard(fn, self)  # type: ignore[no-any-return]

    def acquire(self) -> Permit:
        """Admit a call or raise: a :class:`Permit` to settle exactly once.
        Inside a call this breaker admitted (same task or thread), the permit
        passes through: settling it records nothing.

        Raises:
            CircuitOpenError: the breaker rejected the call (a fresh error).
        """
        if self._is_inside():
            return Permit(self, -1, 0.0)
        gen = self._admit()
        return Permit(self, gen, self._now())

    def rejection(self) -> CircuitOpenError | None:
        """The error a call would be rejected with now, or ``None`` if it would
        be admitted. Admits nothing and counts nothing (a due OPEN -> HALF_OPEN
        move is applied, as on any read)."""

        def peek(m: Machine, now: float) -> CircuitOpenError | None:
            if m.would_admit(now):
                return None
            return CircuitOpenError(
                self._name, m.state, m.retry_after(now), m.last_failure_category
            )

        return self._commit(peek)

    def try_acquire(self) -> Permit | None:
        """Admit a call without raising: a :class:`Permit`, or ``None`` if rejected.

        The caller must settle the permit (``success()``, ``failure(exc)`` or
        ``ignore()``) exactly once, in a ``finally`` block if it can be
        cancelled. Inside a call this breaker admitted (same task or thread),
        the permit passes through: settling it records nothing.
        """
        m = self._m
        gen = m.gen
        s = m.state
        if self._is_inside():
            return Permit(self, -1, 0.0)
        if s is not _CLOSED:
            # Lock-free rejection, as in resilience._guard.
            if s is _OPEN and LOCK_FREE and self._now() < m.open_until and gen == m.gen:
                m.rejected_calls += 1
                return None
            gen = self._commit(lambda m, now: m.admit(now))
            if gen < 0:
                return None
        return Permit(self, gen, self._now())

    def __enter__(self) -> CircuitBreaker:
        var = self._inside_var()
        stack = var.get(())
        if self._is_inside():
            self._note_nested()
            entry: _Admitted = ([True], _PASSED, 0.0)  # nested: passes straight through
        else:
            gen = self._admit()
            entry = ([True], gen, self._now())
        var.set((*stack, entry))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        var = self._inside_var()
        stack = var.get(())
        if not stack:
            raise RuntimeError(f"circuit {self._name!r}: __exit__ without a matching __enter__")
        running, gen, start = stack[-1]
        running[0] = False
        var.set(stack[:-1])
        if gen == _PASSED:
            return
        if exc is None:
            end = self._now()
            self._finish(gen, end, end - start, 0)
        else:
            self._settle_error(gen, start, exc)

    async def __aenter__(self) -> CircuitBreaker:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- state and control -------------------------------------------------

    @property
    def name(self) -> str:
        """The breaker's name (its identity in a registry)."""
        return self._name

    @property
    def config(self) -> CircuitConfig:
        """The current settings."""
        return self._config

    @property
    def clock(self) -> Clock:
        """The clock every decision reads."""
        return self._clock

    @property
    def classifier(self) -> Callable[[BaseException], ErrorCategory] | None:
        """The classifier given at construction, or ``None`` for the default."""
        return self._classifier

    @property
    def state(self) -> CircuitState:
        """The current state. Reading it applies a due OPEN -> HALF_OPEN move."""
        s = self._m.state
        if s is _OPEN or s is _HALF_OPEN:
            s = self._commit(lambda m, now: m.current_state(now))
        return s

    async def transition_to(self, state: CircuitState | str, reason: str = "manual") -> None:
        """Move to ``state`` by hand; awaits async listeners before returning."""
        target = CircuitState(state)
        self._control(lambda m, now: m.transition_to(target, reason, now))
        for awaitable in self._deliver(collect=True):
            try:
                await awaitable
            except Exception:
                logger.exception("circuit %r: a listener failed", self._name)

    _transition_to = transition_to

    def _control_sync(self, state: CircuitState, reason: str) -> None:
        self._commit(lambda m, now: m.transition_to(state, reason, now))

    def force_open(self, reason: str = "forced open") -> None:
        """Reject every call until ``reset()`` or another manual transition."""
        self._control_sync(CircuitState.FORCED_OPEN, reason)

    def disable(self, reason: str = "disabled") -> None:
        """Admit every call and record nothing until told otherwise."""
        self._control_sync(CircuitState.DISABLED, reason)

    def metrics_only(self, reason: str = "metrics only") -> None:
        """Admit every call, record and report, never trip (shadow mode)."""
        self._control_sync(CircuitState.METRICS_ONLY, reason)

    def reset(self, reason: str = "reset") -> None:
        """Back to CLOSED with a clean window, counters and metrics."""
        self._commit(lambda m, now: m.reset(now, reason))

    def extend_open(self, seconds: float) -> float | None:
        """Keep an OPEN circuit open at least ``seconds`` more, e.g. for an
        upstream's ``Retry-After``.

        The deadline moves to ``now + seconds`` if that is later, capped so
        the whole open period stays within ``max_recovery_timeout``; it never
        moves earlier. Any other state is left alone.

        Args:
            seconds: a number >= 0 (``math.inf`` means "as long as the cap").

        Returns:
            The seconds left until a probe may be admitted, or ``None`` when
            the circuit is not OPEN.

        Raises:
            ValueError: ``seconds`` is negative or NaN.
            TypeError: ``seconds`` is not a number.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"extend_open: seconds must be a number, got {seconds!r}")
        if not seconds >= 0:
            raise ValueError(f"extend_open: seconds must be >= 0, got {seconds!r}")
        wanted = float(seconds)
        return self._commit(lambda m, now: m.extend_open(now, wanted))

    def reconfigure(self, **fields: Any) -> CircuitConfig:
        """Change settings in place, keeping the state and counters.

        The window is rebuilt (emptied) only if ``window_size`` or
        ``window_duration`` changes. Returns the new config.
        """
        with self._lock:
            new = make_config(self._config, fields)
            judge = judge_for(new, self._classifier)
            self._config = new
            self._judge = judge
            self._m.apply_config(new)
        return new

    # -- listeners ---------------------------------------------------------

    def add_listener(self, fn: Listener) -> Callable[[], None]:
        """Call ``fn(old_state, new_state, reason)`` after each transition.

        ``fn`` may be sync or async. It runs after the change is committed and
        never under the breaker's lock; its exceptions are logged, never raised
        to the caller. Async listeners run as tasks on the running loop; a
        transition delivered from a thread with no loop (a shared store's
        thread, a worker thread) runs them on the loop they were added on, if
        it still runs, else they are skipped with one warning. Returns a
        function that removes the listener.
        """
        if not callable(fn):
            raise TypeError(f"listener must be callable, got {fn!r}")
        is_async = is_async_callable(fn)
        entry = (fn, is_async, _running_loop() if is_async else None)
        with self._lock:
            self._listeners = (*self._listeners, entry)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = tuple(e for e in self._listeners if e is not entry)

        return unsubscribe

    def _take_pending(self, m: Machine) -> bool:
        """Move the transitions the machine queued to the outbox, in commit
        order (under the lock); whether there were any."""
        pending = m.pending
        if not pending:
            return False
        m.pending = None
        if self._outbox is None:
            self._outbox = []
            self._delivering = threading.RLock()
        self._outbox.extend(pending)
        return True

    def _deliver(self, *, collect: bool = False) -> list[Any]:
        """Deliver the outbox to the store, observers and listeners, in commit
        order, never under the breaker's lock.

        One thread delivers at a time: one that finds another delivering
        leaves its transitions to it (they are behind those it is delivering),
        so listeners see transitions in the order they were committed, even
        when they do I/O. ``collect``: wait for the deliverer, and return the
        async listeners' awaitables instead of scheduling them.
        """
        collected: list[Any] = []
        outbox, delivering = self._outbox, self._delivering
        if outbox is None or delivering is None:
            return collected
        while outbox:
            if not delivering.acquire(blocking=collect):
                return collected  # the thread delivering now will deliver these
            try:
                while True:
                    with self._lock:
                        if not outbox:
                            break
                        t = outbox.pop(0)
                    self._deliver_one(t, collect, collected)
            finally:
                delivering.release()
        return collected

    def _deliver_one(self, t: Transition, collect: bool, collected: list[Any]) -> None:
        store = self._store
        if store is not None and not t.remote:
            try:
                store.publish(self, t)
            except Exception:
                logger.exception("circuit %r: publishing a transition failed", self._name)
        for observer in tuple(_global_observers):
            try:
                observer(self, t)
            except Exception:
                logger.exception("circuit %r: an observer failed", self._name)
        here = _running_loop()
        for fn, is_async, home in self._listeners:
            # Where an awaitable it returns runs: this thread's loop, else the
            # loop an async listener was added on, if that still runs.
            loop = here
            if loop is None and home is not None and home.is_running():
                loop = home
            if is_async and not collect and loop is None:
                self._warn_no_loop()
                continue
            try:
                result = fn(t.old, t.new, t.reason)
            except Exception:
                logger.exception("circuit %r: a listener failed", self._name)
                continue
            if inspect.isawaitable(result):
                if collect:
                    collected.append(result)
                elif loop is None:
                    self._warn_no_loop()
                    _discard(result)
                elif loop is here:
                    self._spawn(result)
                else:
                    self._spawn_on(loop, result)

    def _warn_no_loop(self) -> None:
        if not self._no_loop_warned:
            self._no_loop_warned = True
            logger.warning(
                "circuit %r: async listeners skipped: no running event loop in this "
                "thread and none where they were added (use sync listeners for threaded code)",
                self._name,
            )

    def _spawn_on(self, loop: asyncio.AbstractEventLoop, awaitable: Awaitable[Any]) -> None:
        """Run an async listener's awaitable on ``loop`` from another thread."""

        async def run() -> None:
            await awaitable

        def start() -> None:
            self._spawn(run())

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop closed meanwhile
            _discard(awaitable)

    def _spawn(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if self._tasks is not None:
            self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "circuit %r: an async listener failed", self._name, exc_info=task.exception()
            )

    # -- reporting ---------------------------------------------------------

    def _wall(self, at: float | None) -> float | None:
        if at is None:
            return None
        clock = self._clock
        return clock.time() - (clock.monotonic() - at)

    # -- sharing state across processes (resilience._store) -------------------

    def _use_store(self, store: StateStore) -> None:
        """Share this breaker's transitions through ``store`` from now on."""
        self._store = store
        with self._lock:
            self._m.probe_gate = lambda: store.may_probe(self)

    def shared_state(self) -> tuple[CircuitState, float]:
        """``(state, seconds left in the open period)`` now (0.0 unless OPEN),
        for a store re-proposing what this process knows."""

        def read(m: Machine, now: float) -> tuple[CircuitState, float]:
            state = m.current_state(now)
            return state, max(0.0, m.open_until - now) if state is _OPEN else 0.0

        return self._commit(read)

    def apply_remote(self, remote: RemoteState, *, deliver: bool = True) -> None:
        """Adopt a transition made elsewhere in the fleet (see
        ``Machine.apply_remote``); listeners hear it (at the next
        :meth:`deliver` with ``deliver=False``), the store does not get it
        back."""
        state = CircuitState(remote.state)

        def action(m: Machine, now: float) -> None:
            m.apply_remote(state, remote.remaining, now, remote.reason)

        if deliver:
            self._commit(action)
        else:
            self._control(action)

    def deliver(self) -> None:
        """Deliver the transitions committed so far (to the store, observers
        and listeners), in commit order."""
        if self._outbox:
            self._deliver()

    def _sharing(self) -> str:
        store = self._store
        if store is None or not getattr(store, "healthy", True):
            return "local"
        return "fleet"

    def status(self) -> dict[str, Any]:
        """A JSON-friendly snapshot of the breaker (no secrets, no exception text)."""
        return self._commit(self._snapshot)

    def _snapshot(self, m: Machine, now: float) -> dict[str, Any]:
        state = m.current_state(now)
        w = m.refresh_window(now)
        calls = w.calls
        snapshot = {
            "name": self._name,
            "state": state.value,
            "failure_count": m.consecutive_failures,
            "success_count": m.half_open_successes,
            "last_failure_time": self._wall(m.last_failure_at),
            "last_failure_category": (
                m.last_failure_category.value if m.last_failure_category else None
            ),
            "error_rate": w.failures / calls if calls else 0.0,
            "slow_call_rate": w.slow / calls if calls else 0.0,
            "calls_in_window": calls,
            "opened_at": self._wall(m.opened_at) if state is not _CLOSED else None,
            "retry_after": m.retry_after(now),
            "open_count": m.open_count,
            "sharing": self._sharing(),
            "config": self._config.as_dict(),
        }
        return snapshot

    def metrics(self) -> dict[str, Any]:
        """Lifetime counters of the breaker, in bounded memory."""
        with self._lock:
            m = self._m
            m.fold()
            lat = m.latency
            mean = lat.mean if lat is not None else None
            p99 = lat.quantile(0.99) if lat is not None else None
            return {
                "open_count": m.open_count,
                "total_calls": m.total_calls,
                "successful_calls": m.successful_calls,
                "failed_calls": m.failed_calls,
                "ignored_calls": m.ignored_calls,
                "rejected_calls": m.rejected_calls,
                "slow_calls": m.slow_calls,
                "failures_by_category": m.failures_by_category_dict(),
                "state": m.state.value,
                "state_changes": m.state_changes,
                "sharing": self._sharing(),
                "avg_latency_ms": mean * 1000.0 if mean is not None else 0.0,
                "p99_latency_ms": p99 * 1000.0 if p99 is not None else 0.0,
            }

    def latency_histogram(self) -> list[tuple[float, int]]:
        """Latency of finished calls as ``(upper bound in seconds, calls)``
        buckets, two per octave, for exporters (Prometheus, OpenTelemetry).
        Counts are estimates scaled from a sample once past 1,024 calls."""
        with self._lock:
            self._m.fold()
            return self._m.latency_histogram()

    def _same_settings(self, config: CircuitConfig, classifier: Any) -> list[str]:
        """Names of the settings in which ``config``/``classifier`` differ from ours."""
        import dataclasses

        differ = [
            f.name
            for f in dataclasses.fields(config)
            if getattr(config, f.name) != getattr(self._config, f.name)
        ]
        if classifier is not None and classifier is not self._classifier:
            differ.append("classifier")
        return differ


class Permit:
    """Admission of one call by :meth:`CircuitBreaker.try_acquire`.

    Settle it exactly once: :meth:`success`, :meth:`failure` or :meth:`ignore`.
    """

    __slots__ = ("_breaker", "_gen", "_settled", "_start")

    def __init__(self, breaker: CircuitBreaker, gen: int, start: float) -> None:
        self._breaker = breaker
        self._gen = gen
        self._start = start
        self._settled = False

    def _mark_settled(self) -> None:
        if self._settled:
            raise RuntimeError(f"permit of circuit {self._breaker.name!r} already settled")
        self._settled = True

    @property
    def settled(self) -> bool:
        """Whether the permit has been settled."""
        return self._settled

    def success(self) -> None:
        """The call succeeded."""
        self._mark_settled()
        if self._gen >= 0:
            end = self._breaker._now()
            self._breaker._finish(self._gen, end, end - self._start, 0)

    def failure(self, exc: BaseException | None = None) -> None:
        """The call failed with ``exc``, judged as if the call had raised it
        (so an ignored category is not counted); without ``exc``, a plain
        UNKNOWN_ERROR failure."""
        self._mark_settled()
        gen, start, b = self._gen, self._start, self._breaker
        if gen < 0:
            return
        if exc is not None:
            b._settle_error(gen, start, exc)
        else:
            unknown = ErrorCategory.UNKNOWN_ERROR
            b._commit(lambda m, now: m.on_failure(gen, now, _since(start, now), unknown))

    def ignore(self) -> None:
        """The call's outcome says nothing about the dependency."""
        self._mark_settled()
        if self._gen >= 0:
            gen, start = self._gen, self._start
            self._breaker._commit(lambda m, now: m.on_ignored(gen, now, _since(start, now)))
