"""The cache side never makes things worse: errors are misses, its own breaker."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from resilience import (
    CircuitState,
    fallback,
)
from resilience.testing import FakeClock

from ..conftest import CountingCache, Dependency
from .conftest import MakeGet

# -- cache failures never make things worse ---------------------------------------


async def test_a_cache_read_error_is_a_miss(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """The dependency's error is raised, not the cache's."""

    get = make_get(cache)

    await get(1)
    await get.fallback.flush()
    dep.down = True
    cache.get_error = OSError("cache down")
    with pytest.raises(ConnectionError, match="dependency down"):
        await get(1)


async def test_a_cache_write_error_never_fails_a_good_call(
    make_get: MakeGet, dep: Dependency, cache: CountingCache, caplog: pytest.LogCaptureFixture
) -> None:
    """The call returns its value; the failed write is logged."""
    cache.set_error = OSError("cache down")

    get = make_get(cache)

    assert (await get(1))["call"] == 1
    await get.fallback.flush()
    assert "cache write failed" in caplog.text


async def test_a_dead_cache_is_left_alone(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """After 3 cache errors in a row the cache breaker opens: no more cache calls."""
    cache.set_error = OSError("cache down")

    get = make_get(cache, clock=FakeClock())

    for x in range(5):
        await get(x)
        await get.fallback.flush()
    assert cache.sets == 3
    assert get.cache_breaker.state is CircuitState.OPEN  # type: ignore[attr-defined]


async def test_the_cache_is_used_again_after_it_recovers(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """The cache breaker probes after 10 s (on the decorator's clock)."""
    clock = FakeClock()
    cache.set_error = OSError("cache down")

    get = make_get(cache, clock=clock)

    for x in range(3):
        await get(x)
        await get.fallback.flush()
    cache.set_error = None
    clock.advance(10)
    good = await get(1)
    await get.fallback.flush()
    dep.down = True
    assert await get(1) == good


async def test_an_unserialisable_value_is_reported_clearly(
    dep: Dependency, caplog: pytest.LogCaptureFixture
) -> None:
    """The log names the function, the value's type and the key; the call returns."""
    from resilience.integrations.aiocache import memory_cache

    cache = memory_cache()

    @fallback(cache)
    async def get_lock(x: int) -> Any:
        return threading.Lock()

    lock = await get_lock(1)
    assert hasattr(lock, "acquire")
    await get_lock.fallback.flush()  # type: ignore[attr-defined]
    record = next(r for r in caplog.records if r.levelno == logging.ERROR)
    message = record.getMessage()
    assert "get_lock" in message
    assert "lock" in message
    assert get_lock.cache_key(1) in message  # type: ignore[attr-defined]


async def test_an_unserialisable_value_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A function that always returns such a value does not flood the log."""
    from resilience.integrations.aiocache import memory_cache

    @fallback(memory_cache())
    async def get_lock(x: int) -> Any:
        return threading.Lock()

    for i in range(5):
        await get_lock(i)
        await get_lock.fallback.flush()  # type: ignore[attr-defined]
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


async def test_unserialisable_values_do_not_open_the_cache_breaker() -> None:
    """A bad value says nothing about the cache's health."""
    from resilience.integrations.aiocache import memory_cache

    @fallback(memory_cache())
    async def get_lock(x: int) -> Any:
        return threading.Lock()

    for i in range(5):
        await get_lock(i)
        await get_lock.fallback.flush()  # type: ignore[attr-defined]
    assert get_lock.cache_breaker.state is CircuitState.CLOSED  # type: ignore[attr-defined]


# -- a slow cache ------------------------------------------------------------------------


async def test_a_slow_cache_is_switched_off(make_get: MakeGet, dep: Dependency) -> None:
    """A cache whose operations take >= 0.5 s is left alone after a few calls."""
    clock = FakeClock()

    class SlowCache(CountingCache):
        async def set(self, key: str, value: Any, ttl: Any = None) -> bool:
            clock.advance(1.0)
            return await super().set(key, value, ttl)

    cache = SlowCache()

    get = make_get(cache, clock=clock)

    for x in range(10):
        await get(x)
        await get.fallback.flush()
    assert get.cache_breaker.state is CircuitState.OPEN  # type: ignore[attr-defined]
    assert cache.sets <= 5
    assert dep.calls == 10
