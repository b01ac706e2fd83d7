"""@fallback on a real Redis (resilience.integrations.aiocache.redis_cache)."""

from __future__ import annotations

import datetime
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from resilience import CircuitState, degradation_scope, fallback, is_degraded
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
        db.down = True
        with pytest.raises(ConnectionError, match="database down"):
            await get_user(1)
    finally:
        await cache.close()


async def test_a_blackholed_redis_costs_a_bounded_time(redis_url: str) -> None:
    """Redis hanging: each cache operation gives up after the cache timeout, and
    after three failures the cache is left alone, so calls are fast again."""
    host, port = redis_url.split("//", 1)[1].split("/", 1)[0].split(":")
    async with FaultProxy(host, int(port)) as proxy:
        namespace = f"test-{uuid.uuid4().hex}:"
        cache = redis_cache(f"redis://{proxy.address}/0", timeout=0.05, namespace=namespace)
        db = Db()
        get_user = make_get_user(cache, db)
        try:
            await get_user(1)  # connects while the proxy passes
            proxy.blackhole()
            started = time.monotonic()
            for _ in range(3):
                assert (await get_user(1))["id"] == 1
            assert time.monotonic() - started < 2.0
            breaker = get_user.cache_breaker  # type: ignore[attr-defined]
            assert breaker.state is CircuitState.OPEN
            started = time.monotonic()
            for _ in range(10):
                await get_user(1)
            # Waiting out the cache's timeout would take 10 x 0.05 s.
            assert time.monotonic() - started < 0.25
        finally:
            proxy.pass_through()
            await cache.close()
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
