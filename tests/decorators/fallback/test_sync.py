"""Sync functions: the same rules in threads, with a writer thread."""

from __future__ import annotations

from typing import Any

import pytest

from resilience import (
    degradation_scope,
    fallback,
    is_degraded,
)
from resilience.testing import FakeClock

from ..conftest import CountingCache, Dependency, SyncCache

# -- sync functions ------------------------------------------------------------------


def test_a_sync_function_with_a_sync_cache(dep: Dependency) -> None:
    """Sync functions work with a sync cache."""
    cache = SyncCache()

    @fallback(cache)
    def get(x: int) -> Any:
        return dep.fetch_sync(x)

    good = get(1)
    dep.down = True
    with degradation_scope():
        assert get(1) == good
        assert is_degraded()


def test_a_sync_function_reraises_on_a_miss(dep: Dependency) -> None:
    """Nothing cached: the original error."""
    dep.down = True

    @fallback(SyncCache())
    def get(x: int) -> Any:
        return dep.fetch_sync(x)

    with pytest.raises(ConnectionError):
        get(1)


def test_a_sync_cache_read_error_is_a_miss(dep: Dependency) -> None:
    """Sync cache errors are misses too."""
    cache = SyncCache()

    @fallback(cache)
    def get(x: int) -> Any:
        return dep.fetch_sync(x)

    get(1)
    assert get.fallback.flush_sync()  # type: ignore[attr-defined]
    dep.down = True
    cache.get_error = OSError("cache down")
    with pytest.raises(ConnectionError):
        get(1)


def test_a_sync_cache_write_error_never_fails_a_good_call(
    dep: Dependency, caplog: pytest.LogCaptureFixture
) -> None:
    """Sync functions: the value is returned, the failed write logged."""

    class BrokenCache(SyncCache):
        def set(self, key: str, value: Any, ttl: Any = None) -> bool:
            raise OSError("cache down")

    @fallback(BrokenCache())
    def get(x: int) -> Any:
        return dep.fetch_sync(x)

    assert get(1)["call"] == 1
    assert get.fallback.flush_sync()  # type: ignore[attr-defined]
    assert "cache write failed" in caplog.text


def test_a_sync_function_with_the_private_cache(dep: Dependency) -> None:
    """@fallback() works for sync functions."""

    @fallback()
    def get(x: int) -> Any:
        return dep.fetch_sync(x)

    good = get(1)
    dep.down = True
    assert get(1) == good


def test_a_sync_function_with_a_default(dep: Dependency) -> None:
    """Defaults and sync callables work for sync functions."""
    dep.down = True

    @fallback(lambda x: -x)
    def get(x: int) -> Any:
        return dep.fetch_sync(x)

    assert get(3) == -3


def test_a_sync_fresh_ttl(dep: Dependency) -> None:
    """Read-through works for sync functions."""
    clock = FakeClock()

    @fallback(SyncCache(), fresh_ttl=5, clock=clock)
    def get(x: int) -> Any:
        return dep.fetch_sync(x)

    get(1)
    get(1)
    assert dep.calls == 1


def test_a_sync_function_with_an_async_cache_is_a_type_error(cache: CountingCache) -> None:
    """An async cache cannot serve a sync function: said at decoration."""
    with pytest.raises(TypeError, match="sync get/set"):

        @fallback(cache)
        def get(x: int) -> None: ...


def test_a_sync_function_with_an_async_source_is_a_type_error() -> None:
    """An async callable cannot serve a sync function."""

    async def backup(x: int) -> None: ...

    with pytest.raises(TypeError, match="async callable"):

        @fallback(backup)
        def get(x: int) -> None: ...
