"""`CircuitBreaker`: the decision engine (`_machine.Machine`) plus a lock, a
clock, listeners and the ways to guard code with it.

The hot path of ``@circuit`` is generated per function in
``resilience._hotpath``: admission and a settled success take no lock, and
most calls read no clock. ``call``/``call_sync`` and the guards below read the
state without the lock, read the clock twice and take the lock once to record
the result. No lock is ever held across an ``await`` or while a listener runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

from ._categories import ErrorCategory, Outcome, judge_for
from ._clock import SYSTEM_CLOCK, Clock
from ._config import CircuitConfig, CircuitState, make_config
from ._decorators._common import is_async_callable
from ._errors import CircuitOpenError
from ._machine import LOCK_FREE, Machine, Transition

if TYPE_CHECKING:
    from ._store import StateStore

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


def _since(start: float | None, now: float) -> float | None:
    return None if start is None else now - start


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
        "_guard",
        "_judge",
        "_listeners",
        "_lock",
        "_m",
        "_name",
        "_no_loop_warned",
        "_now",
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
        **config_fields: Any,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if clock is None:
            clock = SYSTEM_CLOCK
        elif not (
            callable(getattr(clock, "monotonic", None)) and callable(getattr(clock, "time", None))
        ):
            raise TypeError(f"clock must have monotonic() and time() methods, got {clock!r}")
        if classifier is not None and not callable(classifier):
            raise TypeError(f"classifier must be callable, got {classifier!r}")
        self._name = name
        self._config = make_config(config, config_fields)
        self._clock = clock
        self._now = clock.monotonic
        self._classifier = classifier
        self._judge = judge_for(self._config, classifier)
        self._m = Machine(self._config)
        self._lock = threading.Lock()
        self._listeners: tuple[tuple[Listener, bool], ...] = ()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._guard: contextvars.ContextVar[tuple[tuple[int, float], ...]] | None = None
        self._no_loop_warned = False
        self._store = store

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self._name!r} {self._m.state.value}>"

    # -- the hot path ------------------------------------------------------

    def _admit_slow(self) -> int:
        lock = self._lock
        lock.acquire()
        try:
            m = self._m
            now = self._now()
            gen = m.admit(now)
            pending = m.pending
            if pending:
                m.pending = None
            if gen < 0:
                state, retry_after = m.state, m.rejected_retry_after
        finally:
            lock.release()
        if pending:
            self._deliver(pending)
        if gen < 0:
            # Built in the raise statement, never held in a local: a local
            # would tie the error to this frame through its traceback, a
            # cycle only the garbage collector frees (it doubled the cost of
            # a rejection).
            raise CircuitOpenError(self._name, state, retry_after, m.last_failure_category)
        return gen

    def _admit(self) -> int:
        m = self._m
        gen = m.gen  # read before the state: a stale pair only drops the result
        if m.state is _CLOSED:
            return gen
        return self._admit_slow()

    def _settle_success(self, gen: int, start: float) -> None:
        end = self._now()
        self._finish(gen, end, end - start, 1)

    # ``start`` is None for a call that was not timed (see ``_hotpath``).

    def _settle_error(self, gen: int, start: float | None, exc: BaseException) -> None:
        outcome, category = self._judge.judge_and_mark(exc)
        if outcome is _FAILURE or outcome is _TRIP:
            self._settle_failure(gen, start, category or ErrorCategory.UNKNOWN_ERROR, outcome)
        elif outcome is _SUCCESS:
            self._commit(lambda m, now: m.on_success(gen, now, _since(start, now)))
        else:
            self._settle_ignored(gen, start)

    def _settle_failure(
        self,
        gen: int,
        start: float | None,
        category: ErrorCategory,
        outcome: Outcome = _FAILURE,
    ) -> None:
        trip = outcome is _TRIP
        self._commit(lambda m, now: m.on_failure(gen, now, _since(start, now), category, trip))

    def _settle_ignored(self, gen: int, start: float | None) -> None:
        self._commit(lambda m, now: m.on_ignored(gen, now, _since(start, now)))

    def _settle_current(self, gen: int, start: float | None) -> None:
        """:meth:`_settle_error` for the exception being handled (the
        generated guards catch it without naming it)."""
        exc = sys.exc_info()[1]
        assert exc is not None
        self._settle_error(gen, start, exc)

    def _finish(self, gen: int, end: float | None, duration: float | None, weight: int) -> None:
        """Record a success under the lock (``end`` None: read the clock)."""
        lock = self._lock
        lock.acquire()
        try:
            m = self._m
            m.on_success(gen, self._now() if end is None else end, duration, weight)
            pending = m.pending
            if pending:
                m.pending = None
        finally:
            lock.release()
        if pending:
            self._deliver(pending)

    # Everything but the hot path commits to the machine through these two:
    # the lock is held only while the machine decides, and the transitions it
    # queued are delivered after the lock is released.

    def _control(self, action: Callable[[Machine, float], T]) -> tuple[T, list[Transition]]:
        """Run ``action(machine, now)`` under the lock; return its result and
        the transitions it queued, not yet delivered."""
        with self._lock:
            m = self._m
            result = action(m, self._now())
            pending = m.pending
            m.pending = None
        return result, pending or []

    def _commit(self, action: Callable[[Machine, float], T]) -> T:
        """:meth:`_control`, then deliver the transitions; return the result."""
        result, pending = self._control(action)
        if pending:
            self._deliver(pending)
        return result

    # The two drivers below (``call``, ``call_sync`` and wrapt-wrapped
    # callables) take the same steps, one awaiting and one not (tenacity's
    # shape). Admission while CLOSED reads the generation and the state
    # without the lock; a success in a settled count window is counted without
    # it, any other result takes it once (``_finish``).

    async def _call_async(
        self, fn: Callable[..., Awaitable[R]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> R:
        m = self._m
        gen = m.gen
        if m.state is not _CLOSED:
            gen = self._admit_slow()
        now = self._now
        start = now()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._settle_error(gen, start, exc)
            raise
        end = now()
        d = end - start
        if not m.settled_success(gen, d):
            self._finish(gen, end, d, 1)
        return result

    def _call_sync(self, fn: Callable[..., R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        m = self._m
        gen = m.gen
        if m.state is not _CLOSED:
            gen = self._admit_slow()
        now = self._now
        start = now()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._settle_error(gen, start, exc)
            raise
        end = now()
        d = end - start
        if not m.settled_success(gen, d):
            self._finish(gen, end, d, 1)
        return result

    # -- ways to guard code ------------------------------------------------

    def call(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, R]:
        """Await ``fn(*args, **kwargs)`` through the breaker.

        Raises:
            CircuitOpenError: the breaker rejected the call; ``fn`` was not called.
        """
        return self._call_async(fn, args, kwargs)

    def call_sync(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the sync ``fn(*args, **kwargs)`` through the breaker (thread-safe)."""
        return self._call_sync(fn, args, kwargs)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async function or method with this breaker."""
        from ._decorators._circuit import guard

        return guard(fn, self)

    def acquire(self) -> Permit:
        """Admit a call or raise: a :class:`Permit` to settle exactly once.

        Raises:
            CircuitOpenError: the breaker rejected the call (a fresh error).
        """
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
        ``ignore()``) exactly once, in a ``finally`` block if it can be cancelled.
        """
        m = self._m
        gen = m.gen
        s = m.state
        if s is not _CLOSED:
            # Lock-free rejections, as in resilience._hotpath.
            if s is _OPEN and LOCK_FREE:
                if self._now() < m.open_until and gen == m.gen:
                    m.rejected_calls += 1
                    return None
            elif s is _FORCED_OPEN and LOCK_FREE:
                m.rejected_calls += 1
                return None
            gen = self._commit(lambda m, now: m.admit(now))
            if gen < 0:
                return None
        return Permit(self, gen, self._now())

    def _guard_var(self) -> contextvars.ContextVar[tuple[tuple[int, float], ...]]:
        var = self._guard
        if var is None:
            var = self._guard = contextvars.ContextVar(f"resilience-guard-{self._name}")
        return var

    def __enter__(self) -> CircuitBreaker:
        gen = self._admit()
        var = self._guard_var()
        var.set((*var.get(()), (gen, self._now())))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        var = self._guard_var()
        stack = var.get(())
        if not stack:
            raise RuntimeError(f"circuit {self._name!r}: __exit__ without a matching __enter__")
        gen, start = stack[-1]
        var.set(stack[:-1])
        if exc is None:
            self._settle_success(gen, start)
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
        _, pending = self._control(lambda m, now: m.transition_to(target, reason, now))
        for awaitable in self._deliver(pending, collect=True):
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
        to the caller. Async listeners run as tasks on the running loop (from a
        thread with no loop they are skipped, with one warning). Returns a
        function that removes the listener.
        """
        if not callable(fn):
            raise TypeError(f"listener must be callable, got {fn!r}")
        entry = (fn, is_async_callable(fn))
        with self._lock:
            self._listeners = (*self._listeners, entry)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = tuple(e for e in self._listeners if e is not entry)

        return unsubscribe

    def _deliver(self, transitions: list[Transition], *, collect: bool = False) -> list[Any]:
        collected: list[Any] = []
        store = self._store
        for t in transitions:
            if store is not None:
                try:
                    store.publish(self, t)
                except Exception:
                    logger.exception("circuit %r: publishing a transition failed", self._name)
            for observer in tuple(_global_observers):
                try:
                    observer(self, t)
                except Exception:
                    logger.exception("circuit %r: an observer failed", self._name)
            for fn, is_async in self._listeners:
                if is_async and not collect and not self._loop_available():
                    continue
                try:
                    result = fn(t.old, t.new, t.reason)
                except Exception:
                    logger.exception("circuit %r: a listener failed", self._name)
                    continue
                if inspect.isawaitable(result):
                    if collect:
                        collected.append(result)
                    elif self._loop_available():
                        self._spawn(result)
                    elif inspect.iscoroutine(result):
                        result.close()
        return collected

    def _loop_available(self) -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if not self._no_loop_warned:
                self._no_loop_warned = True
                logger.warning(
                    "circuit %r: async listeners skipped: no running event loop in this "
                    "thread (use sync listeners for threaded code)",
                    self._name,
                )
            return False
        return True

    def _spawn(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
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
            "config": self._config.as_dict(),
        }
        return snapshot

    def metrics(self) -> dict[str, Any]:
        """Lifetime counters of the breaker, in bounded memory."""
        with self._lock:
            m = self._m
            m.fold()
            timed = m.timed_calls
            p99 = m.latency_quantile(0.99)
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
                "avg_latency_ms": (m.avg_latency_sum / timed * 1000.0) if timed else 0.0,
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

    def _settle(self) -> None:
        if self._settled:
            raise RuntimeError(f"permit of circuit {self._breaker.name!r} already settled")
        self._settled = True

    @property
    def settled(self) -> bool:
        """Whether the permit has been settled."""
        return self._settled

    def success(self) -> None:
        """The call succeeded."""
        self._settle()
        self._breaker._settle_success(self._gen, self._start)

    def failure(self, exc: BaseException | None = None) -> None:
        """The call failed with ``exc``, judged as if the call had raised it
        (so an ignored category is not counted); without ``exc``, a plain
        UNKNOWN_ERROR failure."""
        self._settle()
        b = self._breaker
        if exc is None:
            b._settle_failure(self._gen, self._start, ErrorCategory.UNKNOWN_ERROR)
        else:
            b._settle_error(self._gen, self._start, exc)

    def ignore(self) -> None:
        """The call's outcome says nothing about the dependency."""
        self._settle()
        self._breaker._settle_ignored(self._gen, self._start)
