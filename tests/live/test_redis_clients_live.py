"""classify() and a breaker on real redis-py errors: a bad command never trips;
a dead server does."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

redis_asyncio = pytest.importorskip("redis.asyncio")

from redis import exceptions as rexc  # noqa: E402
from redis.asyncio.retry import Retry  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402

from resilience import CircuitBreaker, CircuitState, ErrorCategory, classify  # noqa: E402
from resilience.testing import FakeClock, FaultProxy  # noqa: E402

C = ErrorCategory


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis_asyncio.Redis]:
    """A client of the real Redis; the test's keys are its own and removed after."""
    the_client = redis_asyncio.Redis.from_url(redis_url, socket_timeout=2)
    yield the_client
    await the_client.aclose()


@pytest.fixture
def key(client: redis_asyncio.Redis) -> str:
    return f"i14-test-{uuid.uuid4().hex}"


async def test_an_unknown_command_is_a_query_error(client: redis_asyncio.Redis) -> None:
    """ResponseError for a command the server does not know."""
    with pytest.raises(rexc.ResponseError) as info:
        await client.execute_command("NO_SUCH_COMMAND_I14")
    assert classify(info.value) is C.QUERY_ERROR


async def test_a_wrong_type_is_a_query_error(client: redis_asyncio.Redis, key: str) -> None:
    """WRONGTYPE: the caller used a string as a list."""
    await client.set(key, "x", ex=60)
    try:
        with pytest.raises(rexc.ResponseError) as info:
            await client.lpush(key, "y")
    finally:
        await client.delete(key)
    assert classify(info.value) is C.QUERY_ERROR


async def test_a_wrong_password_is_an_authentication_error(redis_url: str) -> None:
    """An unknown user: AuthenticationError, which never trips."""
    the_client = redis_asyncio.Redis.from_url(
        redis_url, username="no_such_user_i14", password="wrong", socket_timeout=2
    )
    try:
        with pytest.raises(rexc.RedisError) as info:
            await the_client.ping()
    finally:
        await the_client.aclose()
    assert classify(info.value) is C.AUTHENTICATION_ERROR


async def test_bad_commands_leave_the_breaker_closed(client: redis_asyncio.Redis) -> None:
    """Ten bad commands through a breaker with threshold 2: still CLOSED."""
    breaker = CircuitBreaker("redis-mistakes", clock=FakeClock(), failure_threshold=2)
    for _ in range(10):
        with pytest.raises(rexc.ResponseError):
            await breaker.call(client.execute_command, "NO_SUCH_COMMAND_I14")
    assert breaker.state is CircuitState.CLOSED


async def test_a_dead_server_opens_the_breaker(redis_url: str) -> None:
    """Connections refused: ConnectionError, classified CONNECTION; two open it."""
    parts = urlsplit(redis_url)
    async with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
        proxied = redis_asyncio.Redis(
            host=proxy.host, port=proxy.port, socket_timeout=2, socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )  # fmt: skip
        breaker = CircuitBreaker("redis-dead", clock=FakeClock(), failure_threshold=2)
        try:
            assert await breaker.call(proxied.ping)
            proxy.refuse()
            for _ in range(2):
                with pytest.raises(rexc.ConnectionError) as info:
                    await breaker.call(proxied.ping)
                assert classify(info.value) is C.CONNECTION_ERROR
            assert breaker.state is CircuitState.OPEN
        finally:
            await proxied.aclose()


async def test_a_read_only_replica_is_the_servers_state() -> None:
    """READONLY from a real replica (a private server told to follow a dead
    master): ReadOnlyError, a DATABASE_ERROR that counts as a failure."""
    import socket

    from resilience.testing import ThrowawayRedis

    with socket.socket() as probe:  # a master that is never there
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    with ThrowawayRedis() as server:
        replica = redis_asyncio.Redis.from_url(server.url, socket_timeout=2)
        try:
            await replica.execute_command("REPLICAOF", "127.0.0.1", str(dead_port))
            breaker = CircuitBreaker("redis-readonly", clock=FakeClock(), failure_threshold=1)
            with pytest.raises(rexc.ReadOnlyError) as info:
                await breaker.call(replica.set, "k", "v")
            assert classify(info.value) is C.DATABASE_ERROR
            assert breaker.state is CircuitState.OPEN
        finally:
            await replica.aclose()


async def test_a_silent_server_is_a_timeout(redis_url: str) -> None:
    """A black-holed connection: redis-py's TimeoutError, classified TIMEOUT."""
    parts = urlsplit(redis_url)
    async with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
        proxied = redis_asyncio.Redis(
            host=proxy.host, port=proxy.port, socket_timeout=0.2, retry=Retry(NoBackoff(), 0)
        )
        try:
            assert await proxied.ping()
            proxy.blackhole()
            with pytest.raises(rexc.TimeoutError) as info:
                await proxied.ping()
        finally:
            proxy.pass_through()
            await proxied.aclose()
    assert classify(info.value) is C.TIMEOUT_ERROR
