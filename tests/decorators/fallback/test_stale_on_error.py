"""@fallback(cache): stale on error, ttl, the envelope, fresh_ttl read-through."""

from __future__ import annotations

import asyncio

import pytest

from resilience import (
    degradation_scope,
    fallback,
    is_degraded,
)
from resilience.testing import FakeClock

from ..conftest import CountingCache, Dependency, SyncCache
from .conftest import MakeGet

# -- stale on error ----------------------------------------------------------


async def test_a_success_is_written_through(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """Every success is stored, as an envelope of value and stored-at time."""
    clock = FakeClock()

    get = make_get(cache, clock=clock)

    value = await get(1)
    await get.fallback.flush()
    assert cache.data[get.cache_key(1)] == (value, clock.time())


async def test_a_failure_serves_the_last_good_value(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """Stale on error: the dependency is down, the cached value is served."""

    get = make_get(cache)

    good = await get(1)
    dep.down = True
    assert await get(1) == good


async def test_every_call_goes_to_the_dependency_by_default(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """Without fresh_ttl, a cached value never stops a call."""

    get = make_get(cache)

    await get(1)
    await get(1)
    assert dep.calls == 2
    assert cache.gets == 0


async def test_a_cached_none_is_a_value(cache: CountingCache) -> None:
    """The envelope tells a stored None from a miss."""
    down = False

    @fallback(cache)
    async def get(x: int) -> None:
        if down:
            raise ConnectionError
        return None

    await get(1)
    down = True
    with degradation_scope():
        assert await get(1) is None
        assert is_degraded()


async def test_a_miss_reraises_the_original_error(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """Nothing to serve: the very same exception object propagates."""
    error = ConnectionError("down")
    dep.error = error

    get = make_get(cache)

    with pytest.raises(ConnectionError) as raised:
        await get(1)
    assert raised.value is error


async def test_a_miss_keeps_the_original_traceback(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """The re-raised error still points at where it was raised."""
    dep.down = True

    get = make_get(cache)

    with pytest.raises(ConnectionError) as raised:
        await get(1)
    assert raised.traceback[-1].name == "_answer"


async def test_values_are_per_arguments(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """A fallback for get(2) never serves get(1)'s value."""

    get = make_get(cache)

    await get(1)
    dep.down = True
    with pytest.raises(ConnectionError):
        await get(2)


async def test_the_newest_success_is_served(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """Every success refreshes the stored value (written behind)."""

    get = make_get(cache)

    await get(1)
    second = await get(1)
    dep.down = True
    assert await get(1) == second


async def test_ttl_is_passed_to_the_cache(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """The cache is asked to keep a value ttl seconds (an int stays an int)."""

    get = make_get(cache, ttl=300)

    await get(1)
    await get.fallback.flush()
    assert cache.ttls[get.cache_key(1)] == 300
    assert type(cache.ttls[get.cache_key(1)]) is int


async def test_a_value_older_than_ttl_is_not_served(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """ttl is the longest a stale value may be served, even if the cache kept it."""
    clock = FakeClock()

    get = make_get(cache, ttl=60, clock=clock)

    await get(1)
    dep.down = True
    clock.advance(61)
    with pytest.raises(ConnectionError):
        await get(1)


async def test_a_value_within_ttl_is_served(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """Up to ttl seconds old, a value is still served."""
    clock = FakeClock()

    get = make_get(cache, ttl=60, clock=clock)

    good = await get(1)
    dep.down = True
    clock.advance(60)
    assert await get(1) == good


async def test_ttl_none_serves_whatever_the_cache_kept(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """ttl=None: no age limit, and the cache is asked for no expiry."""
    clock = FakeClock()

    get = make_get(cache, ttl=None, clock=clock)

    good = await get(1)
    await get.fallback.flush()
    dep.down = True
    clock.advance(10**9)
    assert await get(1) == good
    assert cache.ttls[get.cache_key(1)] is None


async def test_foreign_data_under_the_key_is_a_miss(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """Something that is not an envelope is never served."""

    get = make_get(cache)

    cache.data[get.cache_key(1)] = "not an envelope"
    dep.down = True
    with pytest.raises(ConnectionError):
        await get(1)


async def test_a_json_style_envelope_is_accepted(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """A cache that turns tuples into lists (JSON) still serves."""
    clock = FakeClock()

    get = make_get(cache, clock=clock)

    cache.data[get.cache_key(1)] = ["stored", clock.time()]
    dep.down = True
    assert await get(1) == "stored"


# -- fresh_ttl (read-through) ------------------------------------------------


async def test_fresh_ttl_serves_without_calling(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """An entry younger than fresh_ttl is served and the dependency is not called."""
    clock = FakeClock()

    get = make_get(cache, fresh_ttl=10, clock=clock)

    first = await get(1)
    clock.advance(9)
    assert await get(1) == first
    assert dep.calls == 1


async def test_fresh_ttl_calls_once_the_entry_is_older(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """Past fresh_ttl, the dependency is called and the new value stored."""
    clock = FakeClock()

    get = make_get(cache, fresh_ttl=10, clock=clock)

    await get(1)
    clock.advance(11)
    second = await get(1)
    assert second["call"] == 2
    await get.fallback.flush()
    assert cache.data[get.cache_key(1)][0] == second


async def test_fresh_ttl_serves_the_stale_entry_on_failure_without_a_second_read(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """The entry read for freshness is the one served on failure."""
    clock = FakeClock()

    get = make_get(cache, fresh_ttl=10, clock=clock)

    good = await get(1)
    await get.fallback.flush()
    clock.advance(11)
    dep.down = True
    reads = cache.gets
    assert await get(1) == good
    assert cache.gets == reads + 1


async def test_a_fresh_hit_is_not_degraded(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """Serving a fresh entry is caching, not degradation."""
    clock = FakeClock()

    get = make_get(cache, fresh_ttl=10, clock=clock)

    await get(1)
    with degradation_scope():
        await get(1)
        assert not is_degraded()


# -- expiry is checked when a value is served ---------------------------------------


async def test_a_follower_waits_rather_than_serve_an_entry_that_expired_meanwhile() -> None:
    """While down, an entry that passed ttl during a hung attempt is not served to followers."""
    clock = FakeClock()
    gate = asyncio.Event()
    gate.set()
    down = False

    @fallback(ttl=60, clock=clock)
    async def get(x: int) -> str:
        await gate.wait()
        if down:
            raise ConnectionError("down")
        return "good"

    await get(1)
    clock.advance(50)
    down = True
    assert await get(1) == "good"  # served (50 s old); the dependency is now known down
    gate.clear()
    leader = asyncio.create_task(get(1))  # reads the entry, then hangs
    for _ in range(3):
        await asyncio.sleep(0)
    clock.advance(3600)
    follower = asyncio.create_task(get(1))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not follower.done()
    gate.set()
    with pytest.raises(ConnectionError):
        await leader
    with pytest.raises(ConnectionError):
        await follower


async def test_an_attempt_does_not_serve_an_entry_that_expired_during_its_call() -> None:
    """The entry read before a slow call is checked against ttl again when the call fails."""
    clock = FakeClock()
    slow = False

    @fallback(ttl=60, clock=clock)
    async def get(x: int) -> str:
        if slow:
            if x == 1:
                clock.advance(3600)
            raise ConnectionError("down")
        return "good"

    await get(1)
    slow = True
    with pytest.raises(ConnectionError):
        await get(2)  # nothing cached: raised, and the dependency is known down
    with pytest.raises(ConnectionError):
        await get(1)  # read while 0 s old, 3600 s old once the call failed


def test_a_sync_call_does_not_serve_an_entry_that_expired_during_the_call() -> None:
    """Sync read-through: the entry read before the call is not served once past ttl."""
    clock = FakeClock()
    slow = False

    @fallback(SyncCache(), ttl=60, fresh_ttl=10, clock=clock)
    def get(x: int) -> str:
        if slow:
            clock.advance(3600)
            raise ConnectionError("down")
        return "good"

    get(1)
    clock.advance(11)
    slow = True
    with pytest.raises(ConnectionError):
        get(1)
