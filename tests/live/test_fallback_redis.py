"""@fallback on a real Redis (resilience.integrations.aiocache.redis_cache)."""

from __future__ import annotations

import datetime
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from resilience import CircuitState, degradation_scope, fallback, flush_fallbacks, is_degraded
from resilience.integrations.aiocache import redis_cache
from resilience.testing import FaultProxy


class Db:
    """The protected dependency, in memory: down on demand."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    async def get_user(self, user_id: int) -> dict[str, Any]:
        self.calls += 1
        if self.down:
            raise ConnectionError("database down")
        return {"id": user_id, "seen": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)}


def make_get_user(cache: Any, db: Db, **options: Any) -> Callable[[int], Awaitable[Any]]:
    """The same function (same qualified name, so the same keys) in any 'process'."""

    @fallback(cache, **options)
    async def get_user(user_id: int) -> Any:
        return await db.get_user(user_id)

    return get_user


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[Any]:
    """A Redis cache with a namespace of its own, emptied afterwards."""
    namespace = f"test-{uuid.uuid4().hex}:"
    the_cache = redis_cache(redis_url, namespace=namespace)
    yield the_cache
    keys = await the_cache.client.keys(f"{namespace}*")
    if keys:
        await the_cache.client.delete(*keys)
    await the_cache.close()


async def test_a_value_written_through_is_served_when_the_db_is_down(cache: Any) -> None:
    """Stale on error through Redis, with exact round-trips (datetimes, tuples)."""
    db = Db()
    get_user = make_get_user(cache, db)
    good = await get_user(1)
    db.down = True
    with degradation_scope():
        assert await get_user(1) == good
        assert is_degraded()


async def test_another_process_serves_what_one_wrote(redis_url: str, cache: Any) -> None:
    """The fleet shares values: a second client of the same Redis serves them."""
    writer_db, reader_db = Db(), Db()
    await make_get_user(cache, writer_db)(7)
    await flush_fallbacks(cache)
    other = redis_cache(redis_url, namespace=cache.namespace)
    try:
        reader_db.down = True
        served = await make_get_user(other, reader_db)(7)
    finally:
        await other.close()
    assert served["id"] == 7


async def test_a_cached_none_survives_redis(cache: Any) -> None:
    """The envelope keeps None a value through a real serializer."""
    down = False

    @fallback(cache)
    async def lookup(key: str) -> None:
        if down:
            raise ConnectionError
        return None

    await lookup("k")
    down = True
    assert await lookup("k") is None


async def test_the_ttl_is_set_on_the_redis_key(cache: Any) -> None:
    """Redis expires the value after ttl seconds."""
    db = Db()
    get_user = make_get_user(cache, db, ttl=300)
    await get_user(1)
    await get_user.fallback.flush()  # type: ignore[attr-defined]
    redis_key = cache.build_key(get_user.cache_key(1))  # type: ignore[attr-defined]
    remaining = await cache.client.ttl(redis_key)
    assert 290 <= remaining <= 300


async def test_an_unserialisable_value_is_logged_and_the_call_returns(
    cache: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A lock cannot be pickled: logged with function and key; the value is returned."""

    @fallback(cache)
    async def get_lock(x: int) -> Any:
        return threading.Lock()

    lock = await get_lock(1)
    assert hasattr(lock, "acquire")
    await get_lock.fallback.flush()  # type: ignore[attr-defined]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "get_lock" in errors[0]
    assert get_lock.cache_key(1) in errors[0]  # type: ignore[attr-defined]
    assert "lock" in errors[0]


async def test_an_unreachable_redis_never_fails_a_good_call() -> None:
    """Redis refused: calls succeed; with nothing cached, the original error."""
    cache = redis_cache(f"redis://127.0.0.1:{_free_port()}/0")
    db = Db()
    get_user = make_get_user(cache, db)
    try:
        assert (await get_user(1))["id"] == 1
        await get_user.fallback.flush()  # type: ignore[attr-defined]
        assert get_user.fallback.metrics()["cache_errors"] == 1  # type: ignore[attr-defined]
        db.down = True
        with pytest.raises(ConnectionError, match="database down"):
            await get_user(1)
    finally:
        await cache.close()


async def test_a_blackholed_redis_never_slows_a_good_call(redis_url: str) -> None:
    """Redis hanging: good calls return at once (writes are behind); the writes
    time out, three in a row open the cache's breaker, and the rest are refused."""
    host, port = redis_url.split("//", 1)[1].split("/", 1)[0].split(":")
    async with FaultProxy(host, int(port)) as proxy:
        namespace = f"test-{uuid.uuid4().hex}:"
        cache = redis_cache(f"redis://{proxy.address}/0", timeout=0.05, namespace=namespace)
        db = Db()
        get_user = make_get_user(cache, db)
        try:
            await get_user(1)  # connects while the proxy passes
            await get_user.fallback.flush()  # type: ignore[attr-defined]
            proxy.blackhole()
            for x in range(10, 20):  # new values: none is skipped as unchanged
                assert (await get_user(x))["id"] == x
                await get_user.fallback.flush()  # type: ignore[attr-defined]
            breaker = get_user.cache_breaker  # type: ignore[attr-defined]
            assert breaker.state is CircuitState.OPEN
            metrics = get_user.fallback.metrics()  # type: ignore[attr-defined]
            assert metrics["cache_errors"] == 3
            assert metrics["rejected"] == 7
        finally:
            proxy.pass_through()
            await cache.close()
    await _delete(redis_url, namespace)


async def test_a_burst_is_written_in_pipelines(cache: Any) -> None:
    """Many successes at once reach Redis (multi_set), each with its ttl."""
    db = Db()
    get_user = make_get_user(cache, db, ttl=300)
    for x in range(40):
        await get_user(x)
    await get_user.fallback.flush()  # type: ignore[attr-defined]
    assert get_user.fallback.metrics()["writes"] == 40  # type: ignore[attr-defined]
    redis_key = cache.build_key(get_user.cache_key(39))  # type: ignore[attr-defined]
    assert 290 <= await cache.client.ttl(redis_key) <= 300
    db.down = True
    other = make_get_user(cache, Db())
    assert (await get_user(39))["id"] == 39
    assert other is not get_user


async def test_closing_the_cache_writes_what_is_pending(redis_url: str) -> None:
    """redis_cache's close() flushes first: nothing pending is lost."""
    namespace = f"test-{uuid.uuid4().hex}:"
    cache = redis_cache(redis_url, namespace=namespace)
    get_user = make_get_user(cache, Db())
    for x in range(5):
        await get_user(x)
    key = cache.build_key(get_user.cache_key(4))  # type: ignore[attr-defined]
    await cache.close()
    direct = redis_cache(redis_url)
    try:
        assert await direct.client.exists(key) == 1
    finally:
        await direct.close()
    await _delete(redis_url, namespace)


async def test_a_failure_right_after_a_success_serves_it_before_redis_has_it(
    cache: Any,
) -> None:
    """The pending value is consulted before Redis."""
    db = Db()
    get_user = make_get_user(cache, db)
    good = await get_user(3)
    db.down = True
    assert await get_user(3) == good
    await get_user.fallback.flush()  # type: ignore[attr-defined]


async def _delete(redis_url: str, namespace: str) -> None:
    direct = redis_cache(redis_url)
    try:
        keys = await direct.client.keys(f"{namespace}*")
        if keys:
            await direct.client.delete(*keys)
    finally:
        await direct.close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
