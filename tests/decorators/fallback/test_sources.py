"""Callable sources, defaults, the built-in cache, and the degradation mark."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from resilience import (
    MISSING,
    degradation_scope,
    fallback,
    is_degraded,
)

from ..conftest import CountingCache, Dependency
from .conftest import MakeGet

# -- callable sources and defaults -----------------------------------------------


async def test_a_sync_callable_gets_the_same_arguments(dep: Dependency) -> None:
    """@fallback(fn) calls fn(*args, **kwargs) and returns its answer."""
    dep.down = True
    seen: list[Any] = []

    def backup(x: int, *, flag: bool = False) -> str:
        seen.append((x, flag))
        return "backup"

    @fallback(backup)
    async def get(x: int, *, flag: bool = False) -> Any:
        return await dep.fetch(x)

    assert await get(1, flag=True) == "backup"
    assert seen == [(1, True)]


async def test_an_async_callable_is_awaited(make_get: MakeGet, dep: Dependency) -> None:
    """An async source is awaited."""
    dep.down = True

    async def backup(x: int) -> str:
        return f"backup {x}"

    get = make_get(backup)

    assert await get(7) == "backup 7"


async def test_a_callable_source_errors_propagate(make_get: MakeGet, dep: Dependency) -> None:
    """The source's own error is raised (with the original as its context)."""
    dep.down = True

    def backup(x: int) -> str:
        raise LookupError("no backup either")

    get = make_get(backup)

    with pytest.raises(LookupError) as raised:
        await get(1)
    assert isinstance(raised.value.__context__, ConnectionError)


async def test_a_method_source_receives_self() -> None:
    """For a method, the source gets self too: the same arguments."""

    class Repo:
        name = "repo"

        def cached(self, x: int) -> str:
            return f"{self.name} {x}"

        @fallback(cached)
        async def get(self, x: int) -> str:
            raise ConnectionError

    assert await Repo().get(3) == "repo 3"


async def test_default_is_served(make_get: MakeGet, dep: Dependency) -> None:
    """fallback(default=...) returns the default on failure."""
    dep.down = True

    get = make_get(default=[])

    with degradation_scope():
        assert await get(1) == []
        assert is_degraded()


async def test_default_none_is_a_default(make_get: MakeGet, dep: Dependency) -> None:
    """default=None is a value, unlike MISSING."""
    dep.down = True

    get = make_get(default=None)

    assert await get(1) is None


async def test_a_cache_miss_serves_the_default(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """A cache and a default: the default covers a miss."""
    dep.down = True

    get = make_get(cache, default="nothing cached")

    assert await get(1) == "nothing cached"


async def test_no_source_uses_a_private_memory_cache(make_get: MakeGet, dep: Dependency) -> None:
    """@fallback() keeps last good values in process."""

    get = make_get()

    good = await get(1)
    dep.down = True
    assert await get(1) == good
    assert get.cache is not None  # type: ignore[attr-defined]
    assert get.cache_breaker is None  # type: ignore[attr-defined]


def test_missing_is_a_falsy_singleton() -> None:
    """MISSING is one object, falsy, and reads as MISSING."""
    assert repr(MISSING) == "MISSING"
    assert not MISSING
    assert type(MISSING)() is MISSING


# -- degradation flag -----------------------------------------------------------


async def test_a_success_is_not_degraded(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """Only a served fallback marks the context."""

    get = make_get(cache)

    with degradation_scope():
        await get(1)
        assert not is_degraded()


async def test_the_degradation_mark_is_per_task(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """A task served a fallback does not mark a sibling task's context."""

    get = make_get(cache)

    await get(1)

    async def degraded_call() -> bool:
        with degradation_scope():
            await get(1)
            return is_degraded()

    async def clean_call() -> bool:
        with degradation_scope():
            await asyncio.sleep(0)
            return is_degraded()

    dep.down = True
    results = await asyncio.gather(degraded_call(), clean_call())
    assert results == [True, False]


def test_the_built_in_cache_evicts_the_least_recently_used() -> None:
    """Past maxsize the entry neither written nor read for longest goes."""
    from resilience._decorators._fallback import LocalCache

    cache = LocalCache(maxsize=2)
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.set("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (1, None, 3, 2)
