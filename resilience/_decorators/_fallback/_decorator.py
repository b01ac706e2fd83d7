"""The ``@fallback`` decorator: validation at decoration time, the wrapper
(``.cache``, ``.cache_key``, ``.cache_breaker``, ``.fallback``), and the
choice of driver, made once."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import wrapt

from ..._breaker import CircuitBreaker
from ..._clock import SYSTEM_CLOCK, Clock
from .._common import (
    fast_wrapper_class,
    is_async_callable,
    make_trigger,
    qualified_name,
    real_number,
    reject_generators,
)
from ._async import call_async
from ._decide import MISSING
from ._runtime import Fallback, is_cache
from ._sync import call_sync
from ._writer import ThreadWriter, flush_all

__all__ = ("FallbackControl", "fallback", "flush_fallbacks")

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_FLUSH_TIMEOUT = 5.0


class FallbackControl:
    """``fn.fallback``: the cache side of one decorated function.

    ``metrics()`` returns its counters; ``await flush()`` (or, for a sync
    function, ``flush_sync()``) waits until its cache's pending writes are
    written.
    """

    __slots__ = ("_policy",)

    def __init__(self, policy: Fallback) -> None:
        self._policy = policy

    def metrics(self) -> dict[str, Any]:
        """The counters of the cache side, as a dict.

        Keys: ``writes``, ``coalesced``, ``skipped``, ``dropped``,
        ``pending`` (writes of this cache not yet done, every function using
        it counted), ``cache_errors``, ``served_stale``, ``served_default``,
        ``last_served_age`` and ``max_served_age`` (seconds, ``None`` before
        the first stale value is served), ``refresh`` (the refresh interval)
        and ``cache_breaker`` (its state, or ``None``).
        """
        policy = self._policy
        snapshot = policy.metrics.snapshot(policy.pending_count())
        snapshot["refresh"] = policy.refresh
        breaker = policy.cache_breaker
        snapshot["cache_breaker"] = None if breaker is None else breaker.state.value
        return snapshot

    async def flush(self) -> None:
        """Wait until every write pending for this function's cache is done
        (bound the wait with ``asyncio.timeout``; the writes go on)."""
        writer = self._policy.writer
        if writer is not None:
            await writer.flush()

    def flush_sync(self, timeout: float | None = DEFAULT_FLUSH_TIMEOUT) -> bool:
        """:meth:`flush` for a sync function (its writer is a thread); blocks.

        Raises:
            TypeError: the function is async (use ``await fn.fallback.flush()``).
        """
        writer = self._policy.writer
        if writer is None:
            return True
        if not isinstance(writer, ThreadWriter):
            raise TypeError(
                f"{self._policy.name} is async: its writes are flushed with "
                "`await fn.fallback.flush()`"
            )
        return writer.flush_sync(timeout)

    def __repr__(self) -> str:
        return f"<FallbackControl of {self._policy.name}>"


async def flush_fallbacks(cache: Any = None) -> None:
    """Wait until every value ``@fallback`` has pending is written.

    Call it at shutdown, before closing caches (``redis_cache``'s ``close()``
    flushes its own writes first); bound the wait with ``asyncio.timeout``.
    Async functions' writes are flushed on the running loop, sync
    functions' by their writer threads.

    Args:
        cache: flush only the writes for this cache; default every cache.
    """
    await flush_all(cache)


class _BoundFallbackWrapper(wrapt.BoundFunctionWrapper):  # type: ignore[type-arg]
    """``instance.method`` of a method with a fallback."""

    def cache_key(self, *args: Any, **kwargs: Any) -> str:
        """The cache key of this bound call with these arguments (the instance
        included when it identifies itself; see ``@fallback``'s ``key``).

        Raises:
            TypeError: no cache source, or no stable key for these arguments.
        """
        policy: Fallback = self._self_parent._self_fallback
        if policy.keys is None:
            raise TypeError(f"{policy.name} has no cache: its fallback is not a cache")
        return policy.keys.key_of_call(args, kwargs, self._self_instance)

    @property
    def fallback(self) -> FallbackControl:
        """The function's cache side: metrics and flushing (see ``@fallback``)."""
        return self._self_parent.fallback  # type: ignore[no-any-return]


class _FallbackWrapper(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """A function with a fallback. ``.cache`` is its cache (or ``None``),
    ``.cache_key(*args, **kwargs)`` the key a call would use,
    ``.cache_breaker`` the breaker in front of an external cache,
    ``.fallback`` its metrics and flushing (:class:`FallbackControl`)."""

    __bound_function_wrapper__ = _BoundFallbackWrapper

    @property
    def fallback(self) -> FallbackControl:
        """The function's cache side: metrics and flushing (see ``@fallback``)."""
        return FallbackControl(self._self_fallback)

    @property
    def cache(self) -> Any:
        """The cache values are served from, or ``None`` for a callable/default source."""
        return self._self_fallback.cache

    @property
    def cache_breaker(self) -> CircuitBreaker | None:
        """The breaker guarding an external cache (``None`` for the built-in one)."""
        return self._self_fallback.cache_breaker  # type: ignore[no-any-return]

    def cache_key(self, *args: Any, **kwargs: Any) -> str:
        """The cache key of a call with these arguments (without ``self``/``cls``:
        ``instance.method.cache_key(...)`` includes an instance that identifies
        itself; with a ``key=`` callable, the arguments are passed to it as given).

        Raises:
            TypeError: no cache source, or no stable key for these arguments.
        """
        policy: Fallback = self._self_fallback
        if policy.keys is None:
            raise TypeError(f"{policy.name} has no cache: its fallback is not a cache")
        return policy.keys.key_of_call(args, kwargs)


def _validate_source(source: Any, default: Any, key: Any, fresh_ttl: Any) -> None:
    if source is not None and not is_cache(source) and not callable(source):
        raise TypeError(
            "@fallback: source must be a cache (an object with get(key) and "
            f"set(key, value, ttl=...)) or a callable, got {source!r}"
        )
    if isinstance(source, type) and is_cache(source):
        raise TypeError(f"@fallback: pass a cache instance, not the class {source.__qualname__}")
    cached = (source is None and default is MISSING) or (source is not None and is_cache(source))
    if source is not None and not cached and default is not MISSING:
        raise TypeError(
            "@fallback: a callable source and default= together are ambiguous; "
            "return the default from the callable"
        )
    if not cached:
        if key is not None:
            raise TypeError("@fallback: key= needs a cache source")
        if fresh_ttl is not None:
            raise TypeError("@fallback: fresh_ttl= needs a cache source")
    if key is not None and not callable(key):
        raise TypeError(f"@fallback: key must be a callable returning a str, got {key!r}")


def fallback(
    source: Any = None,
    *,
    default: Any = MISSING,
    on: type[Exception]
    | tuple[type[Exception], ...]
    | Callable[[BaseException], bool]
    | None = None,
    key: Callable[..., str] | None = None,
    ttl: float | None = 86400,
    fresh_ttl: float | None = None,
    refresh: float | None = None,
    clock: Clock | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Serve a cached value, a callable's answer or a default when the call fails.

    ``@fallback(cache)`` writes every success behind (the call returns at
    once; the write happens later, off its path) and, when a call fails,
    serves the last good value for the same arguments (stale on error).
    ``@fallback(fn)`` calls ``fn`` with the same arguments (``self``
    included for methods; sync or async) and returns its answer;
    ``@fallback(default=value)`` returns ``value``. ``@fallback()`` uses a
    private in-process cache. A served fallback marks the current request
    degraded (:func:`resilience.is_degraded`); when nothing can be served,
    the original error is re-raised unchanged. Errors raised by a callable
    source are its own and propagate.

    Write-behind: a good call hands its value to the cache's writer (a task
    on the event loop for async functions, a daemon thread for sync ones;
    the built-in cache is written inline) and never waits for the cache.
    Per key only the newest value is written (``coalesced``); a write is
    skipped when a value with the same pickled bytes was written for that
    key less than ``refresh`` seconds ago (``skipped``), so a changed value
    is never lost; at most 10,000 writes per cache wait, beyond that the
    oldest is dropped (``dropped``). A failure right after a success serves
    that success's value even while its write is pending: pending writes are
    consulted before the cache. ``await fn.fallback.flush()`` (sync:
    ``fn.fallback.flush_sync()``) or :func:`resilience.flush_fallbacks`
    waits for pending writes; ``redis_cache``'s ``close()`` flushes first;
    at the end of ``asyncio.run`` pending writes get up to 2 s, and writer
    threads as long at interpreter exit. ``fn.fallback.metrics()`` counts
    writes, coalesced, skipped and dropped writes, cache errors, stale
    values served and their age.

    Cache semantics: values are stored as ``(value, stored_at)`` with the wall
    time of the clock, so a cached ``None`` is a value. A cache error is a
    miss and never hides the original error; a failed write (cache down,
    value not serialisable) is logged and never fails a good call; after 3
    consecutive cache errors (timeouts included), or once half of its last
    few operations were slow (0.5 s, or 80% of the cache's own ``timeout``:
    0.2 s for ``redis_cache``), the cache is left alone for 10 s (its
    breaker is ``.cache_breaker``). A value older than ``ttl`` when it
    would be served is never served, even if it was younger when read.
    Concurrent identical misses share one cache read; while the dependency
    is down (from a triggering failure to the next success) identical calls
    (same key, same instance) make one attempt at a time: the others are
    served the cached value, else the default, at once (degraded); with
    nothing to serve (or an entry expired since the attempt read it) they
    wait for the attempt and get its answer, or a copy of its error
    (``resilience._errors.fresh_copy``). A ``fresh_ttl`` hit makes no call,
    so it says nothing about the dependency and does not end that state.

    Args:
        source: a cache (an aiocache ``BaseCache``, or any object with
            ``get(key)`` and ``set(key, value, ttl=...)``, async or sync; such
            an object is a cache even if callable), a callable, or ``None``:
            with ``default=``, no cache; without, a private in-process LRU
            cache of 4,096 entries. Sync functions need a sync cache or
            callable. Default ``None``.
        default: the value served when nothing else can be; with a cache, on
            a miss. Default :data:`MISSING` (none; ``None`` is a value).
        on: what triggers the fallback; replaces the default rule. An
            exception type, a non-empty tuple of ``Exception`` subclasses, or
            a predicate ``fn(exc) -> bool``. Default ``None``:
            ``CircuitOpenError``, ``BulkheadFullError``, ``TimeoutError``,
            ``ChainExhaustedError`` and errors whose outcome is a failure
            (as judged by the innermost breaker, else the default policy);
            never ignored categories such as bad SQL or authentication.
        key: ``fn(*args, **kwargs) -> str`` (same arguments as the function,
            ``self`` included for methods) whose result is the cache key,
            used verbatim. Default ``None``:
            ``"resilience:fallback:{module.qualname}:{digest}"``, a 128-bit
            digest of the bound arguments with defaults applied; stable across
            processes and collision-free. A parameter left at a default that
            has no stable text (a sentinel such as ``_UNSET = object()``) is
            keyed as ``name=<default>``. ``self`` is included when it
            identifies itself: by ``__resilience_key__`` (an attribute, or a
            method returning a keyable value), else by a ``__repr__`` its
            class defines (unless it shows a memory address); otherwise it
            is left out and instances share values. ``cls`` is left out.
            An argument with no stable representation (its ``repr`` is, or
            shows, a memory address) means the call runs without the cache
            (logged once). The key names the function by its qualified name,
            so functions made by one factory (``make.<locals>.fetch``) share
            keys: with an external cache and no ``key``, decorating one logs a
            WARNING (once per name); pass ``key`` to tell them apart.
        ttl: seconds a written value is kept, the longest a stale value may
            be served (checked when it is served); > 0, or ``None`` for as
            long as the cache keeps it.
            Default 86400 (a day). Ignored without a cache.
        fresh_ttl: seconds during which a cached value is served without
            calling at all (read-through); > 0 and <= ``ttl``. Default
            ``None`` (every call goes to the dependency).
        refresh: seconds during which an unchanged value (same pickled
            bytes) is not written again for the same key; >= 0 (0 writes
            every success) and < ``ttl``. After a success the cached value is
            at most ``refresh`` seconds plus one write old. Default ``None``:
            ``ttl / 10``, at most 60, and at most ``fresh_ttl / 2``.
        clock: where time is read (``time()``, for stored-at and ages).
            Default the system clock.

    Raises:
        TypeError: a source that is neither a cache nor a callable (or is a
            cache class, not an instance); ``key`` or ``fresh_ttl`` without
            a cache; a callable source with ``default``; an ``on`` that is
            not exception types or a predicate; at decoration, a sync
            function with an async cache or an async callable source, or a
            generator function.
        ValueError: ``ttl``, ``fresh_ttl`` or ``refresh`` out of range.
    """
    _validate_source(source, default, key, fresh_ttl)
    trigger = make_trigger(on, "fallback")
    ttl_value = (
        None if ttl is None else real_number(ttl, "@fallback: ttl", minimum=0, inclusive=False)
    )
    fresh_value = None
    if fresh_ttl is not None:
        fresh_value = real_number(fresh_ttl, "@fallback: fresh_ttl", minimum=0, inclusive=False)
        if ttl_value is not None and fresh_value > ttl_value:
            raise ValueError(f"@fallback: fresh_ttl ({fresh_ttl!r}) must be <= ttl ({ttl!r})")
    if ttl_value is not None and math.isinf(ttl_value):
        ttl_value = None
    refresh_value = None
    if refresh is not None:
        refresh_value = real_number(refresh, "@fallback: refresh", minimum=0, inclusive=True)
        if ttl_value is not None and refresh_value >= ttl_value:
            raise ValueError(f"@fallback: refresh ({refresh!r}) must be < ttl ({ttl!r})")
        if math.isinf(refresh_value):
            raise ValueError(f"@fallback: refresh must be finite, got {refresh!r}")
    if clock is not None and not callable(getattr(clock, "time", None)):
        raise TypeError(f"@fallback: clock must have a time() method, got {clock!r}")
    the_clock: Clock = clock if clock is not None else SYSTEM_CLOCK
    # aiocache takes an int ttl as whole seconds (SETEX) and a float as ms.
    if ttl_value is not None and ttl_value.is_integer():
        ttl_arg: float | None = int(ttl_value)
    else:
        ttl_arg = ttl_value

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        target: Any = fn
        if not callable(target) and not isinstance(target, classmethod | staticmethod):
            raise TypeError(f"@fallback needs a callable, got {fn!r}")
        reject_generators(fn, "fallback")
        is_async = is_async_callable(fn)
        if not is_async:
            _check_sync_source(fn, source)
        policy = Fallback(
            fn,
            source=source,
            default=default,
            trigger=trigger,
            key=key,
            ttl=ttl_arg,
            fresh_ttl=fresh_value,
            refresh=refresh_value,
            clock=the_clock,
            threaded=not is_async,
        )
        run = call_async if is_async else call_sync

        def wrapper(
            wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            return run(policy, wrapped, args, kwargs, instance)

        # A plain function's calls go straight to the driver (a C partial).
        fast = functools.partial(run, policy)

        cls = fast_wrapper_class(_FallbackWrapper, fn, fast)
        wrapped: Any = cls(fn, wrapper)
        wrapped._self_fallback = policy
        return wrapped  # type: ignore[no-any-return]

    return decorate


def _check_sync_source(fn: Any, source: Any) -> None:
    name = qualified_name(fn)
    if source is None:
        return
    if is_cache(source):
        if inspect.iscoroutinefunction(source.get) or inspect.iscoroutinefunction(source.set):
            raise TypeError(
                f"@fallback on the sync function {name} needs a cache with sync get/set; "
                f"{type(source).__qualname__} is async (aiocache caches are): decorate an "
                "async function, or pass a sync cache"
            )
        return
    if is_async_callable(source):
        raise TypeError(
            f"@fallback on the sync function {name} cannot use the async callable "
            f"{qualified_name(source)} as its source"
        )
