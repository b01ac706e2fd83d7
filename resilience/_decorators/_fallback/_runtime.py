"""One decorated function's state: its rules, its cache and the breaker in
front of it, its key maker, its writer and its counters; and the cache I/O
(reads with single flight, writes that never raise)."""

from __future__ import annotations

import inspect
import logging
import math
import pickle
from collections.abc import Awaitable, Callable
from typing import Any, Final

from ..._breaker import CircuitBreaker
from ..._clock import Clock
from ..._errors import CircuitOpenError
from .._common import qualified_name
from ._decide import MISSING, Entry, Rules, Step, serve
from ._flights import ERROR, Flights, Probe
from ._keys import KeyMaker, _BadCall
from ._memory import LocalCache
from ._metrics import FallbackMetrics
from ._writer import Writer, writer_for

__all__ = ("CACHE_BREAKER_SETTINGS", "RAISE", "Fallback", "cache_breaker_settings", "is_cache")

logger = logging.getLogger("resilience")

# Errors from a cache write that say the value cannot be stored, not that the
# cache is down: reported (once per function and type), never held against the
# cache's own breaker.
_UNSERIALISABLE: Final = (
    TypeError,
    ValueError,
    AttributeError,
    RecursionError,
    pickle.PicklingError,
)

# Settings of the breaker in front of an external cache: a cache that fails
# three times in a row (a timeout is a failure), or is slow for half of its
# last few operations, is left alone for ten seconds (failures then get no
# fallback, successes are not written). "Slow" is 0.5 s, or 80% of the
# cache's own operation timeout when it has one (aiocache's ``timeout``), so
# the slow rule can fire before the cache gives up on its own, while a
# connection set up over a distant link (a few round trips) is not slow.
CACHE_BREAKER_SETTINGS: Final[dict[str, Any]] = {
    "failure_threshold": 3,
    "error_rate": None,
    "slow_call_duration": 0.5,
    "slow_call_rate": 0.5,
    "window_size": 10,
    "minimum_calls": 4,
    "recovery_timeout": 10.0,
    "success_threshold": 1,
    "ignore": _UNSERIALISABLE,
}


def cache_breaker_settings(cache: Any) -> dict[str, Any]:
    """:data:`CACHE_BREAKER_SETTINGS`, with the slow-call duration below the
    cache's own ``timeout`` (80% of it) when it has one."""
    settings = dict(CACHE_BREAKER_SETTINGS)
    timeout = getattr(cache, "timeout", None)
    if (
        isinstance(timeout, int | float)
        and not isinstance(timeout, bool)
        and 0 < timeout < math.inf
    ):
        settings["slow_call_duration"] = min(settings["slow_call_duration"], timeout * 0.8)
    return settings


def is_cache(source: Any) -> bool:
    """Whether ``source`` is a cache: it has callable ``get`` and ``set``."""
    return callable(getattr(source, "get", None)) and callable(getattr(source, "set", None))


RAISE: Final = object()  # a driver's verdict: nothing to serve, re-raise the original error

_LOCALS_WARNED: set[str] = set()


def _warn_local_function(name: str) -> None:
    """Warn (once per name) that a function defined inside another shares its
    default keys with every other function that factory makes."""
    if "<locals>" not in name or name in _LOCALS_WARNED:
        return
    if len(_LOCALS_WARNED) < 1024:
        _LOCALS_WARNED.add(name)
    logger.warning(
        "fallback for %s: a function defined inside another function; every function "
        "that factory makes has this name, so they share cache keys and, with a shared "
        "cache, one may be served another's values; pass key= to @fallback with "
        "something that tells them apart",
        name,
    )


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def default_refresh(ttl: float | None, fresh_ttl: float | None) -> float:
    """The refresh interval when none is given: a tenth of ``ttl`` (at most a
    minute), and at most half of ``fresh_ttl``, so a read-through entry is
    renewed before it stops being fresh."""
    refresh = 60.0 if ttl is None else min(ttl / 10, 60.0)
    if fresh_ttl is not None:
        refresh = min(refresh, fresh_ttl / 2)
    return refresh


class Fallback:
    """Everything ``@fallback`` decided at decoration time, and its cache I/O."""

    def __init__(
        self,
        fn: Any,
        *,
        source: Any,
        default: Any,
        trigger: Callable[[BaseException], bool],
        key: Callable[..., Any] | None,
        ttl: float | None,
        fresh_ttl: float | None,
        refresh: float | None,
        clock: Clock,
        threaded: bool,
    ) -> None:
        self.name = qualified_name(fn)
        self.trigger = trigger
        self.default = default
        self.ttl = ttl
        self.fresh_ttl = fresh_ttl
        self.refresh = default_refresh(ttl, fresh_ttl) if refresh is None else refresh
        self.clock = clock
        self.pass_instance = not isinstance(fn, staticmethod)
        self.metrics = FallbackMetrics()
        self.cache: Any = None
        self.source_fn: Callable[..., Any] | None = None
        self.cache_breaker: CircuitBreaker | None = None
        self.keys: KeyMaker | None = None
        self.writer: Writer | None = None
        if source is None and default is MISSING:
            source = LocalCache()
        if source is not None and is_cache(source):
            self.cache = source
            self.keys = KeyMaker(fn, key)
            # Coroutine methods go to the breaker as they are; anything else
            # through an adapter that awaits whatever they return.
            self.async_get: Callable[..., Awaitable[Any]] = (
                source.get if inspect.iscoroutinefunction(source.get) else self._cache_get
            )
            self.async_set: Callable[..., Awaitable[Any]] = (
                source.set if inspect.iscoroutinefunction(source.set) else self._cache_set
            )
            # The built-in cache is in-process and cannot fail or hang: it is
            # written inline, with no breaker and no writer.
            if not isinstance(source, LocalCache):
                self.writer = writer_for(source, threaded=threaded)
                self.cache_breaker = CircuitBreaker(
                    f"fallback-cache:{self.name}", clock=clock, **cache_breaker_settings(source)
                )
                if key is None:
                    _warn_local_function(self.name)
        elif source is not None:
            self.source_fn = source
        self.rules = Rules(
            ttl=ttl,
            fresh_ttl=fresh_ttl,
            default=default,
            cache=self.cache is not None,
            source=self.source_fn is not None,
        )
        # True from a triggering failure until the next success: while the
        # dependency is known to be down, identical concurrent calls coalesce.
        self.down = False
        # The attempts in flight while down, by (loop, key, id(instance)):
        # in-memory only, so the instance's id may tell instances apart here
        # even where it must stay out of the (shared, persistent) cache key.
        self.probes: dict[tuple[Any, ...], Probe] = {}
        self.reads = Flights()
        self._reported: set[tuple[str, str]] = set()

    # -- reporting, without flooding the log -------------------------------

    def _report_once(self, what: str, detail: str, message: str, *args: Any) -> None:
        marker = (what, detail)
        if marker in self._reported:
            logger.debug(message, *args)
            return
        if len(self._reported) < 256:
            self._reported.add(marker)
        logger.error(message, *args)

    def key_for(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """The call's cache key, or ``None`` when it has none (it then runs
        without the cache; reported once)."""
        keys = self.keys
        assert keys is not None
        if instance is None and not kwargs and len(args) == 1:
            # The commonest call: one int or str argument, already keyed.
            arg = args[0]
            kind = type(arg)
            if kind is int or kind is str:
                found = keys.one.get(arg)
                if found is not None:
                    return found
        try:
            return keys.key(instance, args, kwargs)
        except _BadCall:
            return None  # the call itself raises the TypeError
        except Exception as exc:
            self._report_once(
                "key",
                type(exc).__name__ + str(exc)[:80],
                "fallback for %s: no cache key for this call, so it runs without the cache "
                "(%s: %s); pass key= to @fallback",
                self.name,
                type(exc).__name__,
                exc,
            )
            return None

    # -- what is served ------------------------------------------------------

    def serve(self, entry: Entry | None, now: float) -> tuple[Step, Any]:
        """:func:`._decide.serve`, counted in the metrics."""
        step, value = serve(self.rules, entry, now)
        if step is Step.SERVE:
            self.count_served(entry, value, now)
        return step, value

    def count_served(self, entry: Any, value: Any, now: float) -> None:
        """Count a served fallback: a cached value (and its age) or the default."""
        if type(entry) is tuple and value is entry[0]:
            self.metrics.served(now - entry[1])
        else:
            self.metrics.served_default += 1

    # -- the envelope ------------------------------------------------------

    def unpack(self, raw: Any, key: str) -> Entry | None:
        """``(value, stored_at)`` from a stored envelope, or ``None`` for a
        miss. Expiry is checked where the entry is used, with the time of
        that moment: an entry read before a slow attempt may have expired by
        the time it would be served."""
        if raw is None:
            return None
        if type(raw) in (tuple, list) and len(raw) == 2:
            value, stored_at = raw
            if isinstance(stored_at, int | float) and not isinstance(stored_at, bool):
                return value, stored_at
        logger.debug("fallback for %s: ignoring a foreign value under %s", self.name, key)
        return None

    def _write_failed(self, exc: Exception, key: str, value: Any) -> None:
        if isinstance(exc, CircuitOpenError):
            self.metrics.rejected += 1
            return  # the cache is known to be down: nothing new to say
        if isinstance(exc, _UNSERIALISABLE):
            kind = f"{type(value).__module__}.{type(value).__qualname__}"
            self._report_once(
                "serialise",
                kind,
                "fallback for %s: cannot cache the value of type %s under key %r, so no "
                "fallback will be available for it (%s: %s); return a serialisable value "
                "or use a cache whose serializer can store it",
                self.name,
                kind,
                key,
                type(exc).__name__,
                exc,
            )
            return
        self.metrics.cache_errors += 1
        logger.warning(
            "fallback for %s: cache write failed for key %r (%s); the call still succeeded",
            self.name,
            key,
            type(exc).__name__,
        )

    def _read_failed(self, exc: Exception, key: str) -> None:
        if isinstance(exc, CircuitOpenError):
            self.metrics.rejected += 1
        else:
            self.metrics.cache_errors += 1
            logger.warning(
                "fallback for %s: cache read failed for key %r (%s); treated as a miss",
                self.name,
                key,
                type(exc).__name__,
            )

    # -- async cache I/O -----------------------------------------------------

    async def _cache_get(self, key: str) -> Any:
        return await _maybe_await(self.cache.get(key))

    async def _cache_set(self, key: str, envelope: Any, ttl: float | None) -> Any:
        return await _maybe_await(self.cache.set(key, envelope, ttl=ttl))

    async def _read_once(self, key: str) -> Entry | None:
        breaker = self.cache_breaker
        try:
            if breaker is None:
                raw = self.cache.get(key)
                if inspect.isawaitable(raw):
                    raw = await raw
            else:
                raw = await breaker.call(self.async_get, key)
        except Exception as exc:
            self._read_failed(exc, key)
            return None
        return self.unpack(raw, key)

    async def read_async(self, key: str) -> Entry | None:
        """The newest entry for ``key``: a write still pending, else the
        cache's (one read shared by every concurrent reader of the key)."""
        writer = self.writer
        if writer is not None:
            pending = writer.entry(key)
            if pending is not None:
                return pending
        result = await self.reads.run(key, lambda: self._read_once(key))
        if type(result) is tuple and len(result) == 2 and result[0] is ERROR:
            return None  # _read_once never raises an Exception; defensive
        return result  # type: ignore[no-any-return]

    async def store_async(self, key: str, entry: Entry) -> bool:
        """Write ``entry`` (the writer's side); ``True`` once written. Never
        raises an ``Exception``."""
        breaker = self.cache_breaker
        try:
            if breaker is None:
                done = self.cache.set(key, entry, ttl=self.ttl)
                if inspect.isawaitable(done):
                    await done
            else:
                await breaker.call(self.async_set, key, entry, ttl=self.ttl)
        except Exception as exc:
            self._write_failed(exc, key, entry[0])
            return False
        return True

    async def store_many_async(self, pairs: list[tuple[str, Entry]]) -> bool | None:
        """Write several entries with the cache's ``multi_set`` (one round
        trip): ``True`` once written, ``False`` on a cache error, ``None``
        when a value cannot be stored (the caller then writes them one by
        one, so the bad value is reported alone). Never raises an ``Exception``."""
        breaker = self.cache_breaker
        assert breaker is not None  # only external caches have a writer
        try:
            await breaker.call(self.cache.multi_set, pairs, ttl=self.ttl)
        except _UNSERIALISABLE:
            return None
        except Exception as exc:
            self._write_failed(exc, pairs[0][0], pairs[0][1][0])
            return False
        return True

    # -- sync cache I/O (threads; no single flight) --------------------------

    def read_sync(self, key: str) -> Entry | None:
        """The newest entry for ``key`` (a pending write first), or ``None``."""
        writer = self.writer
        if writer is not None:
            pending = writer.entry(key)
            if pending is not None:
                return pending
        breaker = self.cache_breaker
        try:
            get = self.cache.get
            raw = get(key) if breaker is None else breaker.call_sync(get, key)
        except Exception as exc:
            self._read_failed(exc, key)
            return None
        return self.unpack(raw, key)

    def store_sync(self, key: str, entry: Entry) -> bool:
        """Write ``entry`` to a sync cache; ``True`` once written. Never raises."""
        breaker = self.cache_breaker
        try:
            if breaker is None:
                self.cache.set(key, entry, ttl=self.ttl)
            else:
                breaker.call_sync(self.cache.set, key, entry, ttl=self.ttl)
        except Exception as exc:
            self._write_failed(exc, key, entry[0])
            return False
        return True

    # -- the good path -------------------------------------------------------

    def remember(self, key: str, result: Any) -> None:
        """Hand a good value to the cache side without waiting for it: the
        built-in cache is written inline, any other goes to the writer."""
        self.down = False
        writer = self.writer
        if writer is None:
            self.cache.set(key, (result, self.clock.time()))
            self.metrics.writes += 1
        else:
            writer.submit(self, key, result, self.clock.time())

    def source_args(self, instance: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """The arguments a callable source gets (``self`` included for methods)."""
        if instance is not None and self.pass_instance:
            return (instance, *args)
        return args

    def pending_count(self) -> int:
        """Writes of this cache not yet done (all functions sharing it)."""
        return 0 if self.writer is None else len(self.writer)
