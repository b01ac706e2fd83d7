"""``@fallback``: serve something else when the dependency fails.

Three kinds of source, told apart once, at decoration time:

- a **cache** (an aiocache ``BaseCache``, or any object with ``get(key)`` and
  ``set(key, value, ttl=...)``): every call goes to the dependency; a success
  is written through, a failure serves the last good value (stale-on-error);
- a **callable**, sync or async, called with the same arguments;
- nothing but a ``default=`` value.

The cache side never makes things worse: a cache error is a miss (the
original error is raised), a failed write never fails a good call, and the
cache sits behind a small circuit breaker of its own so a dead cache costs
nothing once it is known to be dead. Concurrent identical misses share one
cache read (single-flight), and while the dependency is known to be down,
identical calls make one attempt at a time; the others are served the stale
value at once (or, with nothing to serve, wait for that attempt).

The decisions (trigger? serve what? fresh?) are sans-I/O methods of
:class:`_Fallback`; thin sync and async drivers do the calls and cache I/O.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import hashlib
import inspect
import logging
import math
import pickle
import re
import threading
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Final, ParamSpec, TypeVar

import wrapt

from .._breaker import CircuitBreaker
from .._clock import SYSTEM_CLOCK, Clock
from .._context import mark_degraded
from .._errors import CircuitOpenError, fresh_copy
from ._common import (
    fast_wrapper_class,
    is_async_callable,
    make_trigger,
    qualified_name,
    real_number,
    reject_generators,
    unwrap_descriptor,
)

__all__ = ("MISSING", "fallback")

logger = logging.getLogger("resilience")

P = ParamSpec("P")
R = TypeVar("R")


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

KEY_PREFIX: Final = "resilience:fallback:"

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
# three times in a row, or is slow (>= 0.5 s) for half of its last few
# operations, is left alone for ten seconds (calls then go to the dependency
# alone, with no fallback and no write-through). The slow rule costs nothing
# per call (the breaker times every call anyway); it cannot cut short an
# operation already running, so a cache must bound its own operations.
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


# -- cache keys --------------------------------------------------------------


class UnkeyableError(TypeError):
    """An argument has no stable representation, so no cache key can be built."""


class _BadCall(TypeError):
    """The arguments do not fit the signature: the call itself will say so."""


_EMPTY = inspect.Parameter.empty

# A repr showing a memory address ("<Pool at 0x7f...>") names the object in
# this process only: it cannot key values shared by a fleet.
_ADDRESS: Final = re.compile(r" at 0x[0-9a-fA-F]+")
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _prefixed(tag: str, text: str) -> str:
    # Length-prefixed, so a representation may contain any character and the
    # encoding stays unambiguous (collision-free) inside containers.
    return f"{tag}{len(text)}:{text}"


def _encode(value: Any) -> str:
    """A canonical text of ``value``: equal for equal arguments in every
    process (no ``hash()``, no memory addresses, dicts and sets sorted) and
    injective (different arguments never share a text)."""
    t = type(value)
    if t is str:
        return repr(value)
    if t is int:
        return f"i{value!r}"
    if value is None:
        return "N"
    if t is bool:
        return "T" if value else "F"
    if t is float:
        return f"f{value!r}"
    if t is bytes:
        return repr(value)
    if t is tuple:
        parts = []
        for v in value:  # the bound arguments: inline the common leaves
            tv = type(v)
            if tv is int:
                parts.append(f"i{v!r}")
            elif tv is str:
                parts.append(repr(v))
            else:
                parts.append(_encode(v))
        return "(" + ",".join(parts) + ")"
    if t is list:
        return "[" + ",".join([_encode(v) for v in value]) + "]"
    if t is dict:
        items = sorted(f"{_encode(k)}:{_encode(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if t is set or t is frozenset:
        tag = "s" if t is set else "z"
        return tag + "{" + ",".join(sorted(_encode(v) for v in value)) + "}"
    name = f"{t.__module__}.{t.__qualname__}"
    if isinstance(value, enum.Enum):
        return _prefixed("e", f"{name}.{value.name}")
    if type(value) is _DefaultMarker:
        return _prefixed("d", value.name)
    representation: Any = t.__repr__
    if representation is object.__repr__:
        raise UnkeyableError(
            f"{name} has no stable representation (its repr is its memory address)"
        )
    text = repr(value)
    if _ADDRESS.search(text) is not None:
        # Never the address itself in the message: it is reported once per text.
        raise UnkeyableError(
            f"{name} has no stable representation (its repr shows a memory address)"
        )
    return _prefixed("o", f"{name}:{text}")


class _DefaultMarker:
    """Stands in a key for a parameter's own default when that default has no
    stable text (a sentinel such as ``_UNSET = object()``): ``f(x)`` and
    ``f(x, limit=_UNSET)`` share the key ``limit=<default>``."""

    __slots__ = ("name",)

    def __init__(self, parameter: str) -> None:
        self.name = f"{parameter}=<default>"


def _keyable(value: Any) -> bool:
    try:
        _encode(value)
    except Exception:
        return False
    return True


class _Binder:
    """Maps a call's arguments to the function's parameters, in order, with
    defaults applied, so ``f(1)``, ``f(x=1)`` and ``f(1, limit=10)`` (when 10
    is the default) are one call. The common case (positional arguments only)
    skips :meth:`inspect.Signature.bind`."""

    __slots__ = ("_defaults", "_n", "_required", "_sig", "_simple")

    def __init__(self, sig: inspect.Signature | None) -> None:
        self._sig = sig
        defaults: list[Any] = []
        simple = sig is not None
        required = 0
        if sig is not None:
            for p in sig.parameters.values():
                if p.kind in _POSITIONAL:
                    defaults.append(p.default)
                    if p.default is _EMPTY:
                        required = len(defaults)
                else:
                    simple = False
        self._defaults = tuple(defaults)
        self._n = len(defaults)
        self._required = required
        self._simple = simple

    def values(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        if not kwargs and self._simple:
            n = len(args)
            if n == self._n:
                return args
            if self._required <= n < self._n:
                return args + self._defaults[n:]
        sig = self._sig
        if sig is None:
            return (args, kwargs)
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise _BadCall(str(exc)) from None
        bound.apply_defaults()
        return tuple(bound.arguments.values())


class _MarkingBinder(_Binder):
    """A :class:`_Binder` for a signature with unkeyable defaults (sentinels):
    a value that *is* such a default becomes a :class:`_DefaultMarker`."""

    __slots__ = ("_marks",)

    def __init__(
        self, sig: inspect.Signature, marks: tuple[tuple[int, Any, _DefaultMarker], ...]
    ) -> None:
        super().__init__(sig)
        self._marks = marks

    def values(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        values = super().values(args, kwargs)
        marked: list[Any] | None = None
        for index, default, marker in self._marks:
            if index < len(values) and values[index] is default:
                if marked is None:
                    marked = list(values)
                marked[index] = marker
        return values if marked is None else tuple(marked)


def _binder(sig: inspect.Signature | None) -> _Binder:
    """A binder for ``sig``; one that marks sentinel defaults if it has any."""
    if sig is None:
        return _Binder(sig)
    marks = tuple(
        (index, p.default, _DefaultMarker(p.name))
        for index, p in enumerate(sig.parameters.values())
        if p.default is not _EMPTY and not _keyable(p.default)
    )
    return _MarkingBinder(sig, marks) if marks else _Binder(sig)


def _signature(fn: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(unwrap_descriptor(fn))
    except (TypeError, ValueError):
        return None


def _drop_first(sig: inspect.Signature | None) -> inspect.Signature | None:
    if sig is None:
        return None
    params = list(sig.parameters.values())
    if params and params[0].kind in _POSITIONAL:
        return sig.replace(parameters=params[1:])
    return sig


_MEMO_TYPES: Final = frozenset({int, str, bytes, bool, type(None)})
_MEMO_SIZE: Final = 1024
_MODES_SIZE: Final = 256  # classes whose identity mode is remembered (bounded)


_LEFT_OUT: Final = "left out"  # the instance is left out of the key
_OWN_KEY: Final = "own key"  # its class has __resilience_key__ (attribute, property, method)
_OWN_REPR: Final = "own repr"  # its class defines a __repr__ of its own


def _identity_mode(cls: type) -> str:
    """How instances of ``cls`` are identified in keys (decided once per class)."""
    if issubclass(cls, type):
        return _LEFT_OUT  # cls of a classmethod: the qualified name says enough
    if hasattr(cls, "__resilience_key__"):
        return _OWN_KEY
    representation: Any = cls.__repr__
    return _LEFT_OUT if representation is object.__repr__ else _OWN_REPR


def _identity(instance: Any, modes: dict[type, str]) -> str | None:
    """The text that identifies ``instance`` in a cache key, or ``None`` when
    it has no stable identity (it is then left out of the key).

    ``__resilience_key__`` wins: an attribute (of the instance or its class)
    or a method, whose value or answer must be keyable; else a ``__repr__``
    its class defines, unless that repr shows a memory address. Classes
    (``cls``) are always left out. ``modes`` caches the per-class decision.
    """
    cls = type(instance)
    mode = modes.get(cls)
    if mode is None:
        if len(modes) >= _MODES_SIZE:
            modes.clear()  # bounded: never a strong reference to every class seen
        mode = modes[cls] = _identity_mode(cls)
    if mode is _OWN_KEY:
        own = instance.__resilience_key__
    else:
        attributes = getattr(instance, "__dict__", None)
        own = None if attributes is None else attributes.get("__resilience_key__")
        if own is None:
            if mode is _LEFT_OUT:
                return None
            text = repr(instance)
            if _ADDRESS.search(text) is not None:
                return None
            return "@" + _prefixed("o", f"{cls.__module__}.{cls.__qualname__}:{text}")
    if callable(own):
        own = own()
    return "@" + _prefixed("k", _encode(own))


class KeyMaker:
    """Builds the cache key of one call of one function.

    The default key is ``resilience:fallback:{module.qualname}:{digest}``,
    where the digest is a 128-bit BLAKE2b of a canonical, injective text of
    the bound arguments. For a method, ``self`` is part of that text when it
    identifies itself stably (see :func:`_identity`), and is left out
    otherwise; ``cls`` is always left out. A ``key`` callable, given the same
    arguments as the function, replaces it entirely.
    """

    __slots__ = (
        "_custom",
        "_full",
        "_memo",
        "_method",
        "_modes",
        "_name",
        "_pass_instance",
        "_prefix",
        "_tail",
    )

    def __init__(self, fn: Any, custom: Callable[..., Any] | None) -> None:
        self._name = qualified_name(fn)
        self._prefix = f"{KEY_PREFIX}{self._name}:"
        self._custom = custom
        self._pass_instance = not isinstance(fn, staticmethod)
        sig = _signature(fn)  # of the function itself: self/cls included
        self._full = _binder(sig)
        self._tail: _Binder | None = None
        self._memo: dict[tuple[str | None, tuple[Any, ...], tuple[type, ...]], str] = {}
        self._modes: dict[type, str] = {}
        # Only for cache_key(), which is called without an instance: a plain
        # function whose first parameter is self/cls is taken for a method.
        first = next(iter(sig.parameters), None) if sig is not None else None
        self._method = isinstance(fn, classmethod) or (
            first in ("self", "cls") and not isinstance(fn, staticmethod)
        )

    def _tail_binder(self) -> _Binder:
        tail = self._tail
        if tail is None:
            tail = self._tail = _binder(_drop_first(self._full._sig))
        return tail

    def key(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The key of a call; ``instance`` is wrapt's (``None`` for a plain call).

        Raises:
            UnkeyableError: an argument has no stable representation.
            TypeError: the arguments do not fit the signature, or a ``key``
                callable returned something other than a string.
        """
        bound_method = instance is not None and self._pass_instance
        custom = self._custom
        if custom is not None:
            key = custom(instance, *args, **kwargs) if bound_method else custom(*args, **kwargs)
            if not isinstance(key, str):
                raise TypeError(f"the key callable returned {type(key).__name__}, not a str")
            return key
        if not bound_method:
            return self._digest(self._full.values(args, kwargs), None)
        binder = self._tail
        if binder is None:
            binder = self._full if self._full._sig is None else self._tail_binder()
        # The common case, an instance of a class that says nothing about its
        # identity, costs two lookups; _identity() decides the rest.
        identity = None
        if self._modes.get(type(instance)) is not _LEFT_OUT or "__resilience_key__" in getattr(
            instance, "__dict__", ()
        ):
            identity = _identity(instance, self._modes)
        return self._digest(binder.values(args, kwargs), identity)

    def _digest(self, values: tuple[Any, ...], identity: str | None) -> str:
        # Flat arguments of exact scalar types are memoised: equal tuples of
        # equal types always have the same text (floats are left out: 0.0 ==
        # -0.0 but their texts differ), and hashing dominates the cost.
        types = tuple(map(type, values))
        memoisable = _MEMO_TYPES.issuperset(types)
        if memoisable:
            found = self._memo.get((identity, values, types))
            if found is not None:
                return found
        try:
            text = _encode(values)
        except RecursionError:
            raise UnkeyableError(
                "the arguments are nested too deeply (or contain themselves)"
            ) from None
        if identity is not None:
            text = identity + text  # "@..." never starts an argument text
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16)
        key = self._prefix + digest.hexdigest()
        if memoisable:
            memo = self._memo
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            memo[identity, values, types] = key
        return key

    def key_of_call(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], instance: Any = None
    ) -> str:
        """The key of a call made with these arguments; ``instance`` is the
        bound instance, if any (without one, ``self``/``cls`` left out)."""
        if instance is not None:
            return self.key(instance, args, kwargs)
        if self._custom is not None:
            return self.key(None, args, kwargs)
        binder = self._tail_binder() if self._method else self._full
        return self._digest(binder.values(args, kwargs), None)


# -- the default cache -------------------------------------------------------


class LocalCache:
    """The cache ``@fallback()`` uses when given none: a bounded in-process
    LRU dict (4,096 entries per decorated function).

    It stores references, like :func:`functools.lru_cache`: a caller that
    mutates a returned value mutates the cached one. Expiry is checked by
    ``@fallback`` itself from the stored-at time, on the injected clock.
    """

    __slots__ = ("_data", "_lock", "maxsize")

    def __init__(self, maxsize: int = 4096) -> None:
        self.maxsize = maxsize
        self._data: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        """The stored value, or ``None``."""
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def set(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` (``ttl`` is checked on read by ``@fallback``)."""
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            if len(self._data) > self.maxsize:
                self._data.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._data)


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


def _is_cache(source: Any) -> bool:
    return callable(getattr(source, "get", None)) and callable(getattr(source, "set", None))


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


# -- the runtime -------------------------------------------------------------

_HIT = "hit"  # a fresh cache entry served without calling
_OK = "ok"  # the dependency answered
_SERVED = "served"  # a fallback was served
_ERROR: Final = object()  # a shared operation raised: (_ERROR, exc)
_ABANDONED: Final = object()  # the leader of a shared operation was cancelled

# Steps and verdicts of the sans-I/O decisions (see _Fallback.after_failure).
_RAISE: Final = object()  # nothing to serve: re-raise the original error
_READ: Final = object()  # read the cache, then serve what it holds
_SOURCE: Final = object()  # call the callable source
_UNREAD: Final = object()  # the cache has not been read for this call


class _Flights:
    """Single flight: concurrent identical operations on one event loop share
    the first one's result. Keyed by ``(loop, key)`` so a decorated function
    used from several loops (or threads) never mixes their futures."""

    __slots__ = ("_futures",)

    def __init__(self) -> None:
        self._futures: dict[tuple[asyncio.AbstractEventLoop, Hashable], asyncio.Future[Any]] = {}

    def __len__(self) -> int:
        return len(self._futures)

    async def run(self, key: Hashable, work: Callable[[], Awaitable[Any]]) -> Any:
        """``await work()``, or the result of an identical one already running.

        An exception raised by ``work`` is shared as a result
        ``(_ERROR, exc)``; a cancelled leader is replaced by one of its
        followers, which runs ``work`` again.
        """
        loop = asyncio.get_running_loop()
        fkey = (loop, key)
        futures = self._futures
        while True:
            fut = futures.get(fkey)
            if fut is None:
                break
            # shield: a cancelled follower must not cancel the shared future.
            result = await asyncio.shield(fut)
            if result is not _ABANDONED:
                return result
        fut = loop.create_future()
        futures[fkey] = fut
        try:
            result = await work()
        except Exception as exc:
            result = (_ERROR, exc)
        except BaseException:
            fut.set_result(_ABANDONED)
            raise
        finally:
            if futures.get(fkey) is fut:
                del futures[fkey]
        fut.set_result(result)
        return result


class _Probe:
    """One attempt in flight while the dependency is known down: what the
    cache held when it started (``stale``) and how it ended (``done``)."""

    __slots__ = ("done", "stale")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.stale: asyncio.Future[Any] = loop.create_future()
        self.done: asyncio.Future[Any] = loop.create_future()

    def abandon(self) -> None:
        for fut in (self.stale, self.done):
            if not fut.done():
                fut.set_result(_ABANDONED)


class _Fallback:
    """Everything ``@fallback`` decided at decoration time, and the drivers."""

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
        clock: Clock,
    ) -> None:
        self.name = qualified_name(fn)
        self.trigger = trigger
        self.default = default
        self.ttl = ttl
        self.fresh_ttl = fresh_ttl
        self.clock = clock
        self.pass_instance = not isinstance(fn, staticmethod)
        self.cache: Any = None
        self.source_fn: Callable[..., Any] | None = None
        self.cache_breaker: CircuitBreaker | None = None
        self.keys: KeyMaker | None = None
        self.local_cache = False
        if source is None and default is MISSING:
            source = LocalCache()
        if source is not None and _is_cache(source):
            self.cache = source
            self.keys = KeyMaker(fn, key)
            self.local_cache = isinstance(source, LocalCache)
            # Coroutine methods go to the breaker as they are; anything else
            # through an adapter that awaits whatever they return.
            self.async_get: Callable[..., Awaitable[Any]] = (
                source.get if inspect.iscoroutinefunction(source.get) else self._cache_get
            )
            self.async_set: Callable[..., Awaitable[Any]] = (
                source.set if inspect.iscoroutinefunction(source.set) else self._cache_set
            )
            if not self.local_cache:
                self.cache_breaker = CircuitBreaker(
                    f"fallback-cache:{self.name}", clock=clock, **CACHE_BREAKER_SETTINGS
                )
                if key is None:
                    _warn_local_function(self.name)
        elif source is not None:
            self.source_fn = source
        # True from a triggering failure until the next success: while the
        # dependency is known to be down, identical concurrent calls coalesce.
        self.down = False
        # The attempts in flight while down, by (loop, key, id(instance)):
        # in-memory only, so the instance's id may tell instances apart here
        # even where it must stay out of the (shared, persistent) cache key.
        self.probes: dict[tuple[Any, ...], _Probe] = {}
        self.reads = _Flights()
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
        assert self.keys is not None
        try:
            return self.keys.key(instance, args, kwargs)
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

    # -- cache envelope ----------------------------------------------------

    def _unpack(self, raw: Any, key: str) -> tuple[Any, float] | None:
        """``(value, stored_at)`` from a stored envelope, or ``None`` for a
        miss. Expiry is checked where the entry is used (:meth:`serve`,
        :meth:`is_fresh`), with the time of that moment: an entry read before
        a slow attempt may have expired by the time it would be served."""
        if raw is None:
            return None
        if type(raw) in (tuple, list) and len(raw) == 2:
            value, stored_at = raw
            if isinstance(stored_at, int | float) and not isinstance(stored_at, bool):
                return value, stored_at
        logger.debug("fallback for %s: ignoring a foreign value under %s", self.name, key)
        return None

    def _envelope(self, value: Any) -> tuple[Any, float]:
        return (value, self.clock.time())

    def _write_failed(self, exc: Exception, key: str, value: Any) -> None:
        if isinstance(exc, CircuitOpenError):
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
        logger.warning(
            "fallback for %s: cache write failed for key %r (%s); the call still succeeded",
            self.name,
            key,
            type(exc).__name__,
        )

    def _read_failed(self, exc: Exception, key: str) -> None:
        if not isinstance(exc, CircuitOpenError):
            logger.warning(
                "fallback for %s: cache read failed for key %r (%s); treated as a miss",
                self.name,
                key,
                type(exc).__name__,
            )

    # -- async cache operations --------------------------------------------

    async def _cache_get(self, key: str) -> Any:
        return await _maybe_await(self.cache.get(key))

    async def _cache_set(self, key: str, envelope: Any, ttl: float | None) -> Any:
        return await _maybe_await(self.cache.set(key, envelope, ttl=ttl))

    async def _read_once(self, key: str) -> tuple[Any, float] | None:
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
        return self._unpack(raw, key)

    async def read(self, key: str) -> tuple[Any, float] | None:
        """The cached ``(value, stored_at)`` for ``key`` (one read shared by every
        concurrent reader of the same key), or ``None``."""
        result = await self.reads.run(key, lambda: self._read_once(key))
        if type(result) is tuple and len(result) == 2 and result[0] is _ERROR:
            return None  # _read_once never raises an Exception; defensive
        return result  # type: ignore[no-any-return]

    async def write(self, key: str, value: Any) -> None:
        """Store ``value`` for ``key``; never raises an ``Exception``."""
        envelope = self._envelope(value)
        breaker = self.cache_breaker
        try:
            if breaker is None:
                done = self.cache.set(key, envelope, ttl=self.ttl)
                if inspect.isawaitable(done):
                    await done
            else:
                await breaker.call(self.async_set, key, envelope, ttl=self.ttl)
        except Exception as exc:
            self._write_failed(exc, key, value)

    # -- decisions (sans-I/O: no awaiting, no cache access) ----------------

    def after_failure(self, exc: Exception, cached: Any, now: float) -> Any:
        """What a failed call leads to at ``now`` (the clock's wall time),
        given the cache entry read before the call (``_UNREAD`` if none was):
        :data:`_RAISE`, :data:`_READ` (read the cache, then :meth:`serve` the
        entry), :data:`_SOURCE` (call the callable source), or the value to
        serve. Marks the dependency down."""
        if not self.trigger(exc):
            return _RAISE
        if self.cache is None:
            return _SOURCE if self.source_fn is not None else self.default
        self.down = True
        if cached is _UNREAD:
            return _READ
        return self.serve(cached, now)

    def live(self, cached: tuple[Any, float] | None, now: float) -> bool:
        """Whether ``cached`` (``(value, stored_at)``) exists and is no older
        than ``ttl`` at ``now``."""
        if cached is None:
            return False
        ttl = self.ttl
        return ttl is None or now - cached[1] <= ttl

    def serve(self, cached: tuple[Any, float] | None, now: float) -> Any:
        """What to serve in place of an answer at ``now``, given a cache entry
        (or a miss): its value unless it is older than ``ttl`` by then, else
        the default, else :data:`_RAISE`."""
        if self.live(cached, now):
            assert cached is not None
            return cached[0]
        if self.default is not MISSING:
            return self.default
        return _RAISE

    def is_fresh(self, cached: tuple[Any, float] | None, now: float) -> bool:
        """Whether ``cached`` may be served at ``now`` without calling
        (younger than ``fresh_ttl``; a clock gone backwards counts as age 0)."""
        fresh_ttl = self.fresh_ttl
        return cached is not None and fresh_ttl is not None and now - cached[1] <= fresh_ttl

    # -- async drivers -----------------------------------------------------

    def _source_args(self, instance: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        if instance is not None and self.pass_instance:
            return (instance, *args)
        return args

    async def _recover_async(
        self,
        exc: Exception,
        key: str | None,
        cached: Any,
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Carry out :meth:`after_failure`: the value to serve, or ``_RAISE``."""
        step = self.after_failure(exc, cached, self.clock.time())
        if step is _READ:
            assert key is not None
            entry = await self.read(key)
            return self.serve(entry, self.clock.time())
        if step is _SOURCE:
            assert self.source_fn is not None
            step = self.source_fn(*self._source_args(instance, args), **kwargs)
            if inspect.isawaitable(step):
                step = await step
        return step

    async def call_async(
        self,
        wrapped: Callable[..., Awaitable[Any]],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        key: str | None = None
        if self.cache is not None:
            key = self.key_for(instance, args, kwargs)
            if key is None:
                return await wrapped(*args, **kwargs)
            if self.down or self.fresh_ttl is not None:
                return await self._call_slow_async(key, wrapped, instance, args, kwargs)
        try:
            result = await wrapped(*args, **kwargs)
        except Exception as exc:
            value = await self._recover_async(exc, key, _UNREAD, instance, args, kwargs)
            if value is _RAISE:
                raise
            mark_degraded("fallback")
            return value
        if key is not None:
            if self.local_cache:
                self.cache.set(key, (result, self.clock.time()))
            else:
                await self.write(key, result)
        return result

    async def _call_slow_async(
        self,
        key: str,
        wrapped: Callable[..., Awaitable[Any]],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Read-through, or the dependency known down (identical calls coalesce)."""
        if self.down:
            kind, value = await self._call_down_async(key, wrapped, instance, args, kwargs)
        else:
            cached = await self.read(key)
            kind, value = await self._attempt_async(key, cached, wrapped, instance, args, kwargs)
        if kind is _SERVED:
            mark_degraded("fallback")
        return value

    async def _call_down_async(
        self,
        key: str,
        wrapped: Callable[..., Awaitable[Any]],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[str, Any]:
        """The dependency is known down: one attempt per key (and instance) at
        a time. Identical callers meanwhile are served what the cache held
        when it started, at once, if it has not expired since (ttl is checked
        now, not when the attempt read it); only when there is nothing to
        serve do they wait for its answer (a copy of its error, never the
        same object)."""
        loop = asyncio.get_running_loop()
        pkey = (loop, key) if instance is None else (loop, key, id(instance))
        probes = self.probes
        while True:
            probe = probes.get(pkey)
            if probe is None:
                break
            # shield: a cancelled follower must not cancel the shared futures.
            cached = await asyncio.shield(probe.stale)
            if cached is _ABANDONED:
                continue
            now = self.clock.time()
            if self.is_fresh(cached, now):
                return _HIT, cached[0]
            value = self.serve(cached, now)
            if value is not _RAISE:
                return _SERVED, value
            result = await asyncio.shield(probe.done)
            if result is _ABANDONED:
                continue
            if result[0] is _ERROR:
                raise fresh_copy(result[1])
            return result  # type: ignore[no-any-return]
        probe = probes[pkey] = _Probe(loop)
        try:
            cached = await self.read(key)
            probe.stale.set_result(cached)
            result = await self._attempt_async(key, cached, wrapped, instance, args, kwargs)
        except Exception as exc:
            probe.done.set_result((_ERROR, exc))
            raise
        except BaseException:
            probe.abandon()
            raise
        finally:
            if probes.get(pkey) is probe:
                del probes[pkey]
        probe.done.set_result(result)
        return result

    async def _attempt_async(
        self,
        key: str,
        cached: tuple[Any, float] | None,
        wrapped: Callable[..., Awaitable[Any]],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[str, Any]:
        """One call, the cache already read: ``(kind, value)``, or the error."""
        if self.is_fresh(cached, self.clock.time()):
            assert cached is not None
            return _HIT, cached[0]
        try:
            result = await wrapped(*args, **kwargs)
        except Exception as exc:
            value = await self._recover_async(exc, key, cached, instance, args, kwargs)
            if value is _RAISE:
                raise
            return _SERVED, value
        self.down = False
        await self.write(key, result)
        return _OK, result

    # -- sync drivers (threads; no single flight) ----------------------------

    def _read_sync(self, key: str) -> tuple[Any, float] | None:
        breaker = self.cache_breaker
        try:
            get = self.cache.get
            raw = get(key) if breaker is None else breaker.call_sync(get, key)
        except Exception as exc:
            self._read_failed(exc, key)
            return None
        return self._unpack(raw, key)

    def _write_sync(self, key: str, value: Any) -> None:
        envelope = self._envelope(value)
        breaker = self.cache_breaker
        try:
            if breaker is None:
                self.cache.set(key, envelope, ttl=self.ttl)
            else:
                breaker.call_sync(self.cache.set, key, envelope, ttl=self.ttl)
        except Exception as exc:
            self._write_failed(exc, key, value)

    def _recover_sync(
        self,
        exc: Exception,
        key: str | None,
        cached: Any,
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Carry out :meth:`after_failure`: the value to serve, or ``_RAISE``."""
        step = self.after_failure(exc, cached, self.clock.time())
        if step is _READ:
            assert key is not None
            entry = self._read_sync(key)
            return self.serve(entry, self.clock.time())
        if step is _SOURCE:
            assert self.source_fn is not None
            return self.source_fn(*self._source_args(instance, args), **kwargs)
        return step

    def call_sync(
        self,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        key: str | None = None
        cached: Any = _UNREAD
        if self.cache is not None:
            key = self.key_for(instance, args, kwargs)
            if key is None:
                return wrapped(*args, **kwargs)
            if self.fresh_ttl is not None:
                cached = self._read_sync(key)
                if self.is_fresh(cached, self.clock.time()):
                    return cached[0]
        try:
            result = wrapped(*args, **kwargs)
        except Exception as exc:
            value = self._recover_sync(exc, key, cached, instance, args, kwargs)
            if value is _RAISE:
                raise
            mark_degraded("fallback")
            return value
        if key is not None:
            self.down = False
            self._write_sync(key, result)
        return result


class _BoundFallbackWrapper(wrapt.BoundFunctionWrapper):  # type: ignore[type-arg]
    """``instance.method`` of a method with a fallback."""

    def cache_key(self, *args: Any, **kwargs: Any) -> str:
        """The cache key of this bound call with these arguments (the instance
        included when it identifies itself; see ``@fallback``'s ``key``).

        Raises:
            TypeError: no cache source, or no stable key for these arguments.
        """
        policy: _Fallback = self._self_parent._self_fallback
        if policy.keys is None:
            raise TypeError(f"{policy.name} has no cache: its fallback is not a cache")
        return policy.keys.key_of_call(args, kwargs, self._self_instance)


class _FallbackWrapper(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """A function with a fallback. ``.cache`` is its cache (or ``None``),
    ``.cache_key(*args, **kwargs)`` the key a call would use,
    ``.cache_breaker`` the breaker in front of an external cache."""

    __bound_function_wrapper__ = _BoundFallbackWrapper

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
        policy: _Fallback = self._self_fallback
        if policy.keys is None:
            raise TypeError(f"{policy.name} has no cache: its fallback is not a cache")
        return policy.keys.key_of_call(args, kwargs)


def _validate_source(source: Any, default: Any, key: Any, fresh_ttl: Any) -> None:
    if source is not None and not _is_cache(source) and not callable(source):
        raise TypeError(
            "@fallback: source must be a cache (an object with get(key) and "
            f"set(key, value, ttl=...)) or a callable, got {source!r}"
        )
    if isinstance(source, type) and _is_cache(source):
        raise TypeError(f"@fallback: pass a cache instance, not the class {source.__qualname__}")
    is_cache = (source is None and default is MISSING) or (source is not None and _is_cache(source))
    if source is not None and not is_cache and default is not MISSING:
        raise TypeError(
            "@fallback: a callable source and default= together are ambiguous; "
            "return the default from the callable"
        )
    if not is_cache:
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
    clock: Clock | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Serve a cached value, a callable's answer or a default when the call fails.

    ``@fallback(cache)`` writes every success through to ``cache`` and, when
    a call fails, serves the last good value for the same arguments (stale on
    error). ``@fallback(fn)`` calls ``fn`` with the same arguments (``self``
    included for methods; sync or async) and returns its answer;
    ``@fallback(default=value)`` returns ``value``. ``@fallback()`` uses a
    private in-process cache. A served fallback marks the current request
    degraded (:func:`resilience.is_degraded`); when nothing can be served,
    the original error is re-raised unchanged. Errors raised by a callable
    source are its own and propagate.

    Cache semantics: values are stored as ``(value, stored_at)`` with the wall
    time of the clock, so a cached ``None`` is a value. A cache error is a
    miss and never hides the original error; a failed write (cache down,
    value not serialisable) is logged and never fails a good call; after 3
    consecutive cache errors, or once half of its last few operations took
    0.5 s or more, the cache is left alone for 10 s (its breaker is
    ``.cache_breaker``). A cache must bound its own operations (``redis_cache``
    does, 0.25 s): a write that never returns holds the call. A value older
    than ``ttl`` when it would be served is never served, even if it was
    younger when read. Concurrent identical misses share one cache read;
    while the dependency is down (from a triggering failure to the next
    success) identical calls (same key, same instance) make one attempt at a
    time: the others are served the cached value, else the default, at once
    (degraded); with nothing to serve (or an entry expired since the attempt
    read it) they wait for the attempt and get its answer, or a copy of its
    error (``resilience._errors.fresh_copy``). A ``fresh_ttl`` hit makes no
    call, so it says nothing about the dependency and does not end that state.

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
        clock: where time is read (``time()``, for stored-at and ages).
            Default the system clock.

    Raises:
        TypeError: a source that is neither a cache nor a callable (or is a
            cache class, not an instance); ``key`` or ``fresh_ttl`` without
            a cache; a callable source with ``default``; an ``on`` that is
            not exception types or a predicate; at decoration, a sync
            function with an async cache or an async callable source, or a
            generator function.
        ValueError: ``ttl`` or ``fresh_ttl`` out of range.
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
        policy = _Fallback(
            fn,
            source=source,
            default=default,
            trigger=trigger,
            key=key,
            ttl=ttl_arg,
            fresh_ttl=fresh_value,
            clock=the_clock,
        )
        run = policy.call_async if is_async else policy.call_sync

        def wrapper(
            wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            return run(wrapped, instance, args, kwargs)

        def fast(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return run(target, None, args, kwargs)

        cls = fast_wrapper_class(_FallbackWrapper, fn, fast)
        wrapped: Any = cls(fn, wrapper)
        wrapped._self_fallback = policy
        return wrapped  # type: ignore[no-any-return]

    return decorate


def _check_sync_source(fn: Any, source: Any) -> None:
    name = qualified_name(fn)
    if source is None:
        return
    if _is_cache(source):
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
