"""aiocache caches ready for ``@fallback`` (``pip install "resilience-patterns[aiocache]"``).

::

    from resilience import circuit, fallback
    from resilience.integrations.aiocache import memory_cache, redis_cache

    cache = redis_cache("redis://cache:6379/0")   # one cache for the fleet

    @fallback(cache, ttl=300)
    @circuit("users-db")
    async def get_user(user_id: int) -> dict: ...

Both caches store values with :class:`SafePickleSerializer`: any picklable
value round-trips exactly (tuples stay tuples, datetimes stay datetimes, a
cached ``None`` is a value), and a value that cannot be stored fails at
write time with a ``TypeError`` naming its type, which ``@fallback`` logs
with the function and the key (the call itself still returns). Pickle
executes code on load: point ``redis_cache`` only at a Redis you trust as
much as your own code (it is your cache), or pass ``serializer=`` (for
instance aiocache's ``JsonSerializer``, whose values come back as JSON types).
"""

from __future__ import annotations

import pickle
import urllib.parse
from typing import Any

from aiocache import SimpleMemoryCache
from aiocache.serializers import BaseSerializer, NullSerializer

from resilience import flush_fallbacks

__all__ = ("SafePickleSerializer", "memory_cache", "redis_cache")

_CANNOT_PICKLE = (pickle.PicklingError, TypeError, AttributeError, RecursionError, ValueError)


class SafePickleSerializer(BaseSerializer):  # type: ignore[misc]
    """Pickle, with a clear error for values that cannot be pickled.

    Args:
        protocol: the pickle protocol; default ``pickle.DEFAULT_PROTOCOL``.
    """

    DEFAULT_ENCODING = None  # bytes in, bytes out

    def __init__(self, *args: Any, protocol: int = pickle.DEFAULT_PROTOCOL, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.protocol = protocol

    def dumps(self, value: Any) -> bytes:
        """``value`` as bytes.

        Raises:
            TypeError: the value cannot be pickled (a lock, a socket, a
                generator, a local function...); the message names its type.
        """
        try:
            return pickle.dumps(value, protocol=self.protocol)
        except _CANNOT_PICKLE as exc:
            kind = type(value).__qualname__
            if isinstance(value, tuple) and len(value) == 2:  # @fallback's envelope
                kind = type(value[0]).__qualname__
            raise TypeError(
                f"cannot serialise a value of type {kind} for the cache: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def loads(self, value: bytes | None) -> Any:
        """The value stored as ``value`` (``None`` stays a miss)."""
        if value is None:
            return None
        return pickle.loads(value)  # the cache is trusted (see the module docstring)


def memory_cache(*, copy: bool = True, namespace: str | None = None) -> Any:
    """An in-process aiocache ``SimpleMemoryCache`` for ``@fallback``.

    Args:
        copy: store pickled copies (default ``True``): a caller mutating a
            returned value cannot change the cached one, and a value that
            could not go to Redis fails here too, in development. ``False``
            stores references (fastest; like ``functools.lru_cache``).
        namespace: a prefix for every key; default none.

    Operations have no timeout (memory cannot hang), which also spares the
    ``asyncio.wait_for`` aiocache would otherwise run on each call.
    """
    serializer = SafePickleSerializer() if copy else NullSerializer()
    return SimpleMemoryCache(serializer=serializer, namespace=namespace, timeout=None)


def redis_cache(
    url: str = "redis://127.0.0.1:6379/0",
    *,
    namespace: str | None = None,
    timeout: float | None = 0.25,
    serializer: Any = None,
    max_connections: int | None = None,
) -> Any:
    """An aiocache ``RedisCache`` for ``@fallback``, shared by every process.

    Close it when done: ``await cache.close()`` first writes what
    ``@fallback`` still has pending for it (bound it with ``asyncio.timeout``).

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://``
            for TLS. Default ``"redis://127.0.0.1:6379/0"``.
        namespace: a prefix for every key; default none (keys already
            start with ``resilience:fallback:``).
        timeout: seconds each operation, and each connection attempt, may
            take; > 0, or ``None`` for none. Default 0.25: a dead or
            black-holed Redis must never make a fallback slower than the
            outage it covers. ``@fallback`` agrees with it: its breaker in
            front of the cache counts an operation slower than 80% of
            ``timeout`` as slow (a timeout is a failure), and leaves the
            cache alone for 10 s after three failures in a row or once half
            of its last operations were slow. Good calls never wait for
            Redis at all (writes are behind).
        serializer: an aiocache serializer; default :class:`SafePickleSerializer`.
        max_connections: the connection pool's size; default unbounded.

    Raises:
        ValueError: a URL that is not ``redis://`` or ``rediss://``, or a
            timeout <= 0.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("redis", "rediss"):
        raise ValueError(f"redis_cache: expected a redis:// or rediss:// URL, got {url!r}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"redis_cache: timeout must be > 0 or None, got {timeout!r}")
    db = 0
    path = parsed.path.strip("/")
    if path:
        try:
            db = int(path)
        except ValueError:
            raise ValueError(f"redis_cache: the database must be a number, got {path!r}") from None
    pool_kwargs: dict[str, Any] = {}
    if parsed.username:
        pool_kwargs["username"] = urllib.parse.unquote(parsed.username)
    return _redis_cache_class()(
        serializer=serializer if serializer is not None else SafePickleSerializer(),
        namespace=namespace,
        timeout=timeout,
        endpoint=parsed.hostname or "127.0.0.1",
        port=parsed.port or 6379,
        db=db,
        password=urllib.parse.unquote(parsed.password) if parsed.password else None,
        ssl=parsed.scheme == "rediss",
        create_connection_timeout=timeout,
        pool_max_size=max_connections,
        connection_pool_kwargs=pool_kwargs,
    )


_REDIS_CACHE: type | None = None


def _redis_cache_class() -> type:
    """aiocache's ``RedisCache`` without the commands redis-py 5 deprecates.

    aiocache 0.12 stores with ``SETEX``/``PSETEX`` and closes with ``close()``,
    each a ``DeprecationWarning`` on redis-py >= 5.0.1 (an error in test suites
    that turn warnings into errors); this subclass uses ``SET ... EX/PX`` and
    ``aclose()``. Built on first use: redis is an optional extra.
    """
    global _REDIS_CACHE
    if _REDIS_CACHE is not None:
        return _REDIS_CACHE
    from aiocache import RedisCache

    class FallbackRedisCache(RedisCache):  # type: ignore[misc]
        async def _set(
            self,
            key: str,
            value: Any,
            ttl: Any = None,
            _cas_token: Any = None,
            _conn: Any = None,
        ) -> Any:
            if _cas_token is not None:
                return await super()._set(key, value, ttl=ttl, _cas_token=_cas_token, _conn=_conn)
            if ttl is None:
                return await self.client.set(key, value)
            if isinstance(ttl, float):
                return await self.client.set(key, value, px=int(ttl * 1000))
            return await self.client.set(key, value, ex=ttl)

        async def close(self, *args: Any, **kwargs: Any) -> Any:
            # Pending write-behind values first; aiocache's own close() runs
            # under the operation timeout, which a flush must not share.
            await flush_fallbacks(self)
            return await super().close(*args, **kwargs)

        async def _close(self, *args: Any, _conn: Any = None, **kwargs: Any) -> None:
            close = getattr(self.client, "aclose", None) or self.client.close
            await close()

    _REDIS_CACHE = FallbackRedisCache
    return FallbackRedisCache
