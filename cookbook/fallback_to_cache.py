"""Seed guide, "Common Patterns: Fallback to Cache", on a real PostgreSQL and Redis.

The guide's block (imports adapted) reads a user through the pool and, when the
database is unavailable, answers from Redis (``user:{id}``, JSON). The guide
says "fall back", but its code catches only ``CircuitBreakerOpenError``, so the
failures that open the circuit would reach the caller: here it catches those
too (marked). Then the same with ``@fallback(cache)``, which also writes good
answers behind to Redis (the call never waits for it) and marks served ones
degraded. A FaultProxy cuts the
database until the circuit opens (2 failures; 300 s recovery keeps it open).

Run: ``python cookbook/fallback_to_cache.py`` (``RESILIENCE_PG_DSN``, ``RESILIENCE_REDIS_URL``)
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from redis.asyncio import Redis

from resilience import CircuitBreakerOpenError, degradation_scope, fallback, is_degraded
from resilience.integrations.aiocache import redis_cache
from resilience.integrations.asyncpg import WorkflowConnectionPool
from resilience.testing import FaultProxy

DSN = os.environ.get("RESILIENCE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
PG = urlsplit(DSN)
REDIS_URL = os.environ.get("RESILIENCE_REDIS_URL", "redis://127.0.0.1:6379/0")
SCHEMA = f"cookbook_{uuid.uuid4().hex[:12]}"  # a private users table, dropped at the end


class ServiceUnavailableError(Exception):
    """The guide's error when neither the database nor the cache can answer."""


async def outage(get_user: Any, proxy: FaultProxy, pool: WorkflowConnectionPool) -> type:
    """Cut the database; user 1 (read while it was up) is still served, user 3 is not."""
    proxy.refuse()
    print("-- the database stops accepting connections --")
    for attempt in (1, 2, 3):
        with degradation_scope():
            rows = await get_user(1)
            state = pool.circuit_breaker.state.value
            print(f"attempt {attempt}:    {rows} degraded={is_degraded()} (circuit {state})")
            assert rows == [{"id": 1, "name": "Ada"}]
    assert state == "open"
    try:
        await get_user(3)
    except Exception as exc:
        print(f"user 3 (never cached): {type(exc).__name__}: {exc}")
        return type(exc)
    raise AssertionError("user 3 was never cached")


async def guide_version(proxy: FaultProxy, pool: WorkflowConnectionPool, redis: Redis) -> None:
    # -- the guide's block ----------------------------------------------------
    async def get_user_data(user_id):  # type: ignore[no-untyped-def]
        try:
            # Try database first
            return await pool.execute_query({
                "query": "SELECT * FROM users WHERE id = $1",
                "parameters": [user_id]
            })  # fmt: skip
        # The guide: `except CircuitBreakerOpenError:`; also the failures that open it.
        except (CircuitBreakerOpenError, OSError, asyncpg.PostgresConnectionError):
            # Fallback to cache
            cached = await redis.get(f"user:{user_id}")
            if cached:
                return json.loads(cached)
            raise ServiceUnavailableError("Database unavailable")  # noqa: B904 - as written

    # -------------------------------------------------------------------------

    print("== the guide's try/except ==")
    for user_id in (1, 2):
        rows = await get_user_data(user_id)
        await redis.set(f"user:{user_id}", json.dumps(rows), ex=300)  # filled "elsewhere"
        print(f"database up:  user {user_id} -> {rows} (cached in Redis)")
    assert await outage(get_user_data, proxy, pool) is ServiceUnavailableError
    metrics = pool.get_circuit_breaker_metrics()  # once open, no more connects
    assert (metrics["failed_calls"], metrics["rejected_calls"]) == (2, 2), metrics


async def library_version(proxy: FaultProxy, pool: WorkflowConnectionPool, cache: Any) -> None:
    print("\n== @fallback(cache) ==")
    proxy.pass_through()
    pool.circuit_breaker.reset()  # a fresh start: the database is back, the circuit closed

    # Write good answers through; serve them when the database fails. A function
    # defined inside another one names its cache keys itself (key=).
    @fallback(cache, ttl=300, key=lambda user_id: f"users-by-id:{user_id}")
    async def get_user(user_id: int) -> list[dict[str, Any]]:
        query = {"query": "SELECT * FROM users WHERE id = $1", "parameters": [user_id]}
        return await pool.execute_query(query)  # type: ignore[no-any-return]

    for user_id in (1, 2):
        print(f"database up:  user {user_id} -> {await get_user(user_id)} (written behind)")
    await get_user.fallback.flush()  # type: ignore[attr-defined]  # in Redis now
    print(f"cache side:   {get_user.fallback.metrics()}")  # type: ignore[attr-defined]
    # Degraded from the first failure; with nothing cached, the original error.
    assert await outage(get_user, proxy, pool) is CircuitBreakerOpenError


async def main() -> None:
    admin = await asyncpg.connect(DSN)
    await admin.execute(
        f"CREATE SCHEMA {SCHEMA}; CREATE TABLE {SCHEMA}.users (id int PRIMARY KEY, name text);"
        f"INSERT INTO {SCHEMA}.users VALUES (1, 'Ada'), (2, 'Grace')"
    )
    redis = Redis.from_url(REDIS_URL)
    cache = redis_cache(REDIS_URL, namespace=SCHEMA)
    try:
        async with (
            FaultProxy(PG.hostname or "127.0.0.1", PG.port or 5432) as proxy,
            WorkflowConnectionPool(
                DSN,
                host=proxy.host,  # through the proxy, so the recipe can cut it
                port=proxy.port,
                name=f"users-{SCHEMA}",
                circuit_breaker_failure_threshold=2,
                circuit_breaker_recovery_timeout=300,
                connect_timeout=0.5,
                pool_kwargs={"server_settings": {"search_path": SCHEMA}},
            ) as pool,
        ):
            await guide_version(proxy, pool, redis)
            await library_version(proxy, pool, cache)
    finally:
        await redis.delete("user:1", "user:2", *await redis.keys(f"{SCHEMA}*"))
        await redis.aclose()
        await cache.close()
        await admin.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
