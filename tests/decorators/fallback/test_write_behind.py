"""Write-behind: a good call never waits for the cache; writes are coalesced,
bounded, skipped only for an unchanged value, consulted before the cache, flushed."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience import fallback, flush_fallbacks
from resilience._decorators._fallback import _writer
from resilience.testing import FakeClock

from ..conftest import CountingCache, Dependency, SyncCache
from .conftest import MakeGet


class GatedCache(CountingCache):
    """A cache whose writes wait for ``write_gate`` (a cache that is slow to write)."""

    def __init__(self) -> None:
        super().__init__()
        self.write_gate = asyncio.Event()
        self.written: list[tuple[str, Any]] = []

    async def set(self, key: str, value: Any, ttl: Any = None) -> bool:
        await self.write_gate.wait()
        self.written.append((key, value))
        return await super().set(key, value, ttl)


async def test_a_good_call_returns_before_the_cache_is_written(
    make_get: MakeGet, cache: CountingCache
) -> None:
    """The call's value is back while its write is still pending."""
    get = make_get(cache)
    value = await get(1)
    assert cache.sets == 0
    assert get.fallback.metrics()["pending"] == 1
    await get.fallback.flush()
    assert cache.data[get.cache_key(1)][0] == value


async def test_a_cache_that_never_answers_never_holds_a_good_call(make_get: MakeGet) -> None:
    """Writes hang: every call still returns at once."""
    cache = GatedCache()
    get = make_get(cache)
    for x in range(3):
        assert (await get(x))["args"] == (x,)
    await asyncio.sleep(0)  # the writer starts and hangs on the cache
    assert (await get(9))["args"] == (9,)
    cache.write_gate.set()
    await get.fallback.flush()
    assert {k for k, _ in cache.written} == {get.cache_key(x) for x in (0, 1, 2, 9)}


async def test_only_the_newest_value_of_a_key_is_written(
    make_get: MakeGet, cache: CountingCache
) -> None:
    """Three successes before the writer runs: one write, of the third value."""
    get = make_get(cache)
    for _ in range(3):
        last = await get(1)
    await get.fallback.flush()
    assert cache.sets == 1
    assert cache.data[get.cache_key(1)][0] == last
    assert get.fallback.metrics()["coalesced"] == 2


async def test_an_older_value_never_overwrites_a_newer_one(make_get: MakeGet) -> None:
    """A value submitted while an older one is being written is written after it."""
    cache = GatedCache()
    get = make_get(cache, refresh=0)
    await get(1)
    await asyncio.sleep(0)  # the first write is in flight, held by the gate
    newer = await get(1)
    cache.write_gate.set()
    await get.fallback.flush()
    assert [value[0]["call"] for _, value in cache.written] == [1, 2]
    assert cache.data[get.cache_key(1)][0] == newer


async def test_a_failure_right_after_a_success_serves_the_pending_value(
    make_get: MakeGet, dep: Dependency
) -> None:
    """The write is still held by the cache: the pending value is served, no cache read."""
    cache = GatedCache()
    get = make_get(cache)
    good = await get(1)
    dep.down = True
    assert await get(1) == good
    assert cache.gets == 0
    cache.write_gate.set()


async def test_a_value_being_written_is_served_on_failure(
    make_get: MakeGet, dep: Dependency
) -> None:
    """Between leaving the queue and reaching the cache, a value is still consulted."""
    cache = GatedCache()
    get = make_get(cache)
    good = await get(1)
    await asyncio.sleep(0)  # the writer took it and waits on the cache
    assert get.fallback.metrics()["pending"] == 1
    dep.down = True
    assert await get(1) == good
    assert cache.gets == 0
    cache.write_gate.set()


async def test_an_unchanged_value_is_not_rewritten_within_the_refresh_interval(
    cache: CountingCache,
) -> None:
    """Equal values within refresh: one write; the skip is counted."""
    clock = FakeClock(1000.0)

    @fallback(cache, refresh=30, clock=clock)
    async def get(x: int) -> int:
        return x * 2

    await get(1)
    await get.fallback.flush()  # type: ignore[attr-defined]
    clock.advance(29)
    await get(1)
    await get.fallback.flush()  # type: ignore[attr-defined]
    assert cache.sets == 1
    assert get.fallback.metrics()["skipped"] == 1  # type: ignore[attr-defined]


async def test_an_unchanged_value_is_rewritten_after_the_refresh_interval(
    cache: CountingCache,
) -> None:
    """Past refresh, the same value is written again with its new stored-at time."""
    clock = FakeClock(1000.0)

    @fallback(cache, refresh=30, clock=clock)
    async def get(x: int) -> int:
        return x * 2

    await get(1)
    await get.fallback.flush()  # type: ignore[attr-defined]
    clock.advance(30)
    await get(1)
    await get.fallback.flush()  # type: ignore[attr-defined]
    assert cache.sets == 2
    assert cache.data[get.cache_key(1)] == (2, clock.time())  # type: ignore[attr-defined]


async def test_a_changed_value_is_always_written(make_get: MakeGet, cache: CountingCache) -> None:
    """Within refresh, a different value is written at once."""
    get = make_get(cache, refresh=3600, clock=FakeClock())
    await get(1)
    await get.fallback.flush()
    second = await get(1)  # a new "call" number: a changed value
    await get.fallback.flush()
    assert cache.sets == 2
    assert cache.data[get.cache_key(1)][0] == second


async def test_a_value_mutated_after_it_was_written_is_still_written(
    cache: CountingCache,
) -> None:
    """Skipping compares what was written (its bytes), not a live object."""
    row = {"name": "old"}

    @fallback(cache, refresh=3600, clock=FakeClock())
    async def get(x: int) -> dict[str, str]:
        return row

    await get(1)
    await get.fallback.flush()  # type: ignore[attr-defined]
    row["name"] = "new"
    await get(1)
    await get.fallback.flush()  # type: ignore[attr-defined]
    assert cache.sets == 2


async def test_a_full_queue_drops_the_oldest_write_and_counts_it(
    make_get: MakeGet, cache: CountingCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bounded: past the limit the oldest pending write goes, the newest stay."""
    get = make_get(cache)
    get(0).close()  # builds the writer without running a call
    writer = _writer.writer_for(cache, threaded=False)
    monkeypatch.setattr(writer, "max_pending", 3)
    for x in range(5):
        await get(x)
    await get.fallback.flush()
    assert sorted(cache.data) == sorted(get.cache_key(x) for x in (2, 3, 4))
    assert get.fallback.metrics()["dropped"] == 2


async def test_writes_of_one_cache_coalesce_across_functions(cache: CountingCache) -> None:
    """Two functions writing the same key (key=) share one writer: newest wins."""

    @fallback(cache, key=lambda x: f"k:{x}")
    async def first(x: int) -> str:
        return "first"

    @fallback(cache, key=lambda x: f"k:{x}")
    async def second(x: int) -> str:
        return "second"

    await first(1)
    await second(1)
    await flush_fallbacks(cache)
    assert cache.sets == 1
    assert cache.data["k:1"][0] == "second"


async def test_cache_errors_are_counted(make_get: MakeGet, cache: CountingCache) -> None:
    """A failed write is a cache error in the metrics, not a write."""
    cache.set_error = OSError("cache down")
    get = make_get(cache)
    await get(1)
    await get.fallback.flush()
    metrics = get.fallback.metrics()
    assert (metrics["cache_errors"], metrics["writes"]) == (1, 0)


async def test_the_age_of_a_served_value_is_reported(
    make_get: MakeGet, dep: Dependency, cache: CountingCache
) -> None:
    """served_stale counts stale answers; last/max_served_age give their age."""
    clock = FakeClock(1000.0)
    get = make_get(cache, clock=clock)
    await get(1)
    await get.fallback.flush()
    dep.down = True
    clock.advance(42)
    await get(1)
    metrics = get.fallback.metrics()
    assert metrics["served_stale"] == 1
    assert metrics["last_served_age"] == metrics["max_served_age"] == 42


async def test_a_served_default_is_counted_apart(make_get: MakeGet, dep: Dependency) -> None:
    """A miss that serves the default is not a stale value."""
    get = make_get(CountingCache(), default="none")
    dep.down = True
    assert await get(1) == "none"
    metrics = get.fallback.metrics()
    assert (metrics["served_stale"], metrics["served_default"]) == (0, 1)


def test_pending_writes_are_written_when_asyncio_run_ends() -> None:
    """asyncio.run cancels leftover tasks at its end: the writer writes first."""
    cache = CountingCache()

    @fallback(cache)
    async def get(x: int) -> int:
        return x

    async def main() -> None:
        for x in range(3):
            await get(x)

    asyncio.run(main())
    assert cache.sets == 3


async def test_the_built_in_cache_is_written_inline(make_get: MakeGet, dep: Dependency) -> None:
    """In process: no writer, nothing pending, the value is there at once."""
    get = make_get()
    good = await get(1)
    assert get.fallback.metrics()["pending"] == 0
    assert get.fallback.metrics()["writes"] == 1
    dep.down = True
    assert await get(1) == good


def test_a_sync_function_writes_from_a_thread(dep: Dependency) -> None:
    """A sync cache is written by a writer thread; flush_sync waits for it."""
    seen: list[str] = []

    class Recording(SyncCache):
        def set(self, key: str, value: Any, ttl: Any = None) -> bool:
            seen.append(threading.current_thread().name)
            return super().set(key, value, ttl)

    cache = Recording()

    @fallback(cache)
    def get(x: int) -> Any:
        return dep.fetch_sync(x)

    value = get(1)
    assert get.fallback.flush_sync()  # type: ignore[attr-defined]
    assert cache.data[get.cache_key(1)][0] == value  # type: ignore[attr-defined]
    assert seen == ["resilience-fallback-writer"]


def test_a_sync_failure_serves_the_pending_value(dep: Dependency) -> None:
    """Sync functions consult pending writes before the cache too."""
    release = threading.Event()

    class Slow(SyncCache):
        def set(self, key: str, value: Any, ttl: Any = None) -> bool:
            release.wait(5)
            return super().set(key, value, ttl)

    @fallback(Slow())
    def get(x: int) -> Any:
        return dep.fetch_sync(x)

    good = get(1)
    dep.down = True
    assert get(1) == good
    release.set()
    assert get.fallback.flush_sync()  # type: ignore[attr-defined]


async def test_flush_sync_on_an_async_function_is_a_type_error(
    make_get: MakeGet, cache: CountingCache
) -> None:
    """An async function's writes are flushed with await flush()."""
    get = make_get(cache)
    with pytest.raises(TypeError, match="await"):
        get.fallback.flush_sync()


def test_the_cache_breaker_counts_slow_below_the_caches_own_timeout() -> None:
    """A cache with timeout=0.25 is slow from 0.2 s: the slow rule can fire first."""

    class TimedCache(CountingCache):
        timeout = 0.25

    @fallback(TimedCache())
    async def get(x: int) -> int:
        return x

    config = get.cache_breaker.config  # type: ignore[attr-defined]
    assert config.slow_call_duration == pytest.approx(0.2)


def test_the_default_refresh_is_a_fraction_of_ttl() -> None:
    """ttl/10 capped at a minute, and at most half of fresh_ttl."""
    options: list[dict[str, Any]] = [{"ttl": 300}, {}, {"ttl": 300, "fresh_ttl": 10}]
    refreshes = []
    for kwargs in options:

        @fallback(CountingCache(), **kwargs)
        async def get(x: int) -> int:
            return x

        refreshes.append(get.fallback.metrics()["refresh"])  # type: ignore[attr-defined]
    assert refreshes == [30.0, 60.0, 5.0]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"refresh": -1}, ValueError),
        ({"refresh": 60, "ttl": 60}, ValueError),
        ({"refresh": float("inf"), "ttl": None}, ValueError),
        ({"refresh": "1"}, TypeError),
    ],
)
def test_a_bad_refresh_fails_at_decoration(kwargs: dict[str, Any], error: type[Exception]) -> None:
    """refresh is >= 0 and < ttl, a finite number, checked when decorating."""
    with pytest.raises(error, match="refresh"):
        fallback(CountingCache(), **kwargs)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.one_of(st.tuples(st.integers(0, 3), st.integers(0, 2)), st.just("yield")),
        max_size=30,
    )
)
def test_the_cache_ends_with_the_newest_value_of_every_key(steps: list[Any]) -> None:
    """Whatever the interleaving of successes and writer turns, newest wins per key."""
    cache = CountingCache()
    newest: dict[int, int] = {}

    @fallback(cache, key=lambda k, v: f"k:{k}", refresh=0)
    async def put(k: int, v: int) -> int:
        return v

    async def main() -> None:
        for step in steps:
            if step == "yield":
                await asyncio.sleep(0)
            else:
                k, v = step
                newest[k] = await put(k, v)
        await put.fallback.flush()  # type: ignore[attr-defined]

    asyncio.run(main())
    assert {k: cache.data[f"k:{k}"][0] for k in newest} == newest


async def test_flush_fallbacks_waits_for_writer_threads(dep: Dependency) -> None:
    """The module-level flush also waits for sync functions' writer threads."""
    cache = SyncCache()

    @fallback(cache)
    def get(x: int) -> Any:
        return dep.fetch_sync(x)

    value = get(1)
    await flush_fallbacks(cache)
    assert cache.data[get.cache_key(1)][0] == value  # type: ignore[attr-defined]
