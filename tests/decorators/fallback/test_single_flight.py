"""Single flight: one cache read and one attempt for identical concurrent calls."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from resilience import (
    Registry,
    circuit,
    degradation_scope,
    fallback,
    is_degraded,
)
from resilience.testing import FakeClock

from ..conftest import CountingCache, Dependency
from .conftest import MakeGet

# -- single flight -------------------------------------------------------------------


async def test_concurrent_misses_share_one_cache_read(
    make_get: MakeGet, cache: CountingCache
) -> None:
    """1,000 identical calls failing at once read the cache once."""
    dep = Dependency(suspend=True)

    get = make_get(cache, dependency=dep)

    good = await get(1)
    dep.down = True
    cache.gets = 0
    results = await asyncio.gather(*(get(1) for _ in range(1000)))
    assert results == [good] * 1000
    assert cache.gets == 1


async def test_stampede_while_down_shares_one_read_and_one_attempt(
    make_get: MakeGet,
    cache: CountingCache,
) -> None:
    """The dependency known down: 1,000 identical calls, one attempt, one read."""
    dep = Dependency(suspend=True)

    get = make_get(cache, dependency=dep)

    good = await get(1)
    dep.down = True
    await get(1)  # the failure that tells the decorator the dependency is down
    dep.calls = cache.gets = 0
    with degradation_scope():
        results = await asyncio.gather(*(get(1) for _ in range(1000)))
    assert results == [good] * 1000
    assert dep.calls == 1
    assert cache.gets == 1


async def test_stampede_behind_an_open_circuit_makes_no_attempt(cache: CountingCache) -> None:
    """With the breaker open, 1,000 calls: no dependency attempt, one cache read."""
    dep = Dependency(suspend=True)

    @fallback(cache)
    @circuit("stampede", registry=Registry(clock=FakeClock()))
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    good = await get(1)
    get.breaker.force_open()  # type: ignore[attr-defined]
    dep.calls = cache.gets = 0
    results = await asyncio.gather(*(get(1) for _ in range(1000)))
    assert results == [good] * 1000
    assert (dep.calls, cache.gets) == (0, 1)


async def test_every_coalesced_caller_is_marked_degraded(
    make_get: MakeGet, cache: CountingCache
) -> None:
    """Followers of a shared fallback mark their own request."""
    dep = Dependency(suspend=True)

    get = make_get(cache, dependency=dep)

    await get(1)
    dep.down = True
    await get(1)

    async def one() -> bool:
        with degradation_scope():
            await get(1)
            return is_degraded()

    assert await asyncio.gather(*(one() for _ in range(10))) == [True] * 10


async def test_coalesced_callers_share_a_miss_as_the_original_error(
    make_get: MakeGet,
    cache: CountingCache,
) -> None:
    """Nothing cached while down: every caller gets the ConnectionError."""
    dep = Dependency(suspend=True)
    dep.down = True

    get = make_get(cache, dependency=dep)

    with pytest.raises(ConnectionError):
        await get(1)
    results = await asyncio.gather(*(get(1) for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert dep.calls == 2


async def test_coalesced_callers_get_distinct_exception_objects(
    make_get: MakeGet, cache: CountingCache
) -> None:
    """5 coalesced callers with nothing to serve raise 5 distinct, equal errors."""
    dep = Dependency(suspend=True)
    dep.down = True

    get = make_get(cache, dependency=dep)

    with pytest.raises(ConnectionError):
        await get(1)
    dep.calls = 0
    results = await asyncio.gather(*(get(1) for _ in range(5)), return_exceptions=True)
    assert dep.calls == 1
    assert len({id(r) for r in results}) == 5
    assert all(type(r) is ConnectionError and r.args == ("dependency down",) for r in results)


async def test_followers_are_served_stale_while_the_attempt_hangs(cache: CountingCache) -> None:
    """While down, a hanging in-flight attempt does not hold up identical callers."""
    dep = Dependency(suspend=True)
    hang = asyncio.Event()  # never set: a probe stuck in a connect timeout
    hanging = False

    @fallback(cache)
    async def get(x: int) -> Any:
        if hanging:
            await hang.wait()
        return await dep.fetch(x)

    good = await get(1)
    dep.down = True
    await get(1)  # the failure that tells the decorator the dependency is down
    hanging = True
    leader = asyncio.create_task(get(1))
    for _ in range(5):
        await asyncio.sleep(0)  # the leader is now hanging

    async def one() -> tuple[Any, bool]:
        with degradation_scope():
            return await get(1), is_degraded()

    followers = [asyncio.create_task(one()) for _ in range(5)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert all(task.done() for task in followers)
    assert [task.result() for task in followers] == [(good, True)] * 5
    assert not leader.done()
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader


async def test_a_cancelled_attempt_while_down_does_not_strand_the_others(
    make_get: MakeGet,
    cache: CountingCache,
) -> None:
    """While down, the first caller is cancelled mid-read: the others still get the value."""
    dep = Dependency(suspend=True)

    get = make_get(cache, dependency=dep)

    good = await get(1)
    dep.down = True
    await get(1)  # the failure that tells the decorator the dependency is down
    cache.gate = asyncio.Event()
    cache.reading.clear()
    leader = asyncio.create_task(get(1))
    followers = [asyncio.create_task(get(1)) for _ in range(5)]
    await cache.reading.wait()
    leader.cancel()
    await asyncio.sleep(0)
    cache.gate.set()
    assert await asyncio.gather(*followers) == [good] * 5
    assert leader.cancelled()


async def test_different_keys_do_not_share(make_get: MakeGet, cache: CountingCache) -> None:
    """Single flight is per key."""
    dep = Dependency(suspend=True)

    get = make_get(cache, dependency=dep)

    for x in range(3):
        await get(x)
    dep.down = True
    cache.gets = 0
    await asyncio.gather(*(get(x) for x in range(3) for _ in range(10)))
    assert cache.gets == 3


async def test_a_cancelled_reader_does_not_strand_the_others(
    make_get: MakeGet, cache: CountingCache
) -> None:
    """The first reader is cancelled mid-read: the others still get the value."""
    dep = Dependency(suspend=True)

    get = make_get(cache, dependency=dep)

    good = await get(1)
    dep.down = True
    cache.gate = asyncio.Event()
    leader = asyncio.create_task(get(1))
    followers = [asyncio.create_task(get(1)) for _ in range(5)]
    await cache.reading.wait()
    leader.cancel()
    await asyncio.sleep(0)
    cache.gate.set()
    assert await asyncio.gather(*followers) == [good] * 5
    assert leader.cancelled()


async def test_a_cancelled_follower_does_not_cancel_the_read(
    make_get: MakeGet, cache: CountingCache
) -> None:
    """Cancelling one waiter leaves the shared read running for the rest."""
    dep = Dependency(suspend=True)

    get = make_get(cache, dependency=dep)

    good = await get(1)
    dep.down = True
    cache.gate = asyncio.Event()
    tasks = [asyncio.create_task(get(1)) for _ in range(3)]
    await cache.reading.wait()
    await asyncio.sleep(0)
    tasks[1].cancel()
    cache.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] == good
    assert isinstance(results[1], asyncio.CancelledError)
    assert results[2] == good
    assert cache.gets == 1


async def test_a_success_ends_the_coalescing(make_get: MakeGet, cache: CountingCache) -> None:
    """Once the dependency answers again, every call goes to it."""
    dep = Dependency(suspend=True)

    get = make_get(cache, dependency=dep)

    await get(1)
    dep.down = True
    await get(1)
    dep.down = False
    await get(1)  # the success that clears the flag
    dep.calls = 0
    await asyncio.gather(*(get(1) for _ in range(5)))
    assert dep.calls == 5
