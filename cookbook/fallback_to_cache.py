"""Seed guide, "Common Patterns: Fallback to Cache".

The guide's block, as written (only its imports adapted), then the same
pattern in three lines with ``@fallback``: every good answer is written
through to the cache, and while the database is down (or its circuit open)
the last good answer is served, marked degraded.

The database is an in-memory stand-in with the pool's interface
(``execute_query`` through a real ``CircuitBreaker``) that raises
``ConnectionError`` while "down"; the cache is aiocache's in-process cache
(``redis_cache(url)`` for a fleet). No network, no sleeps beyond 0.3 s.

Run: ``python cookbook/fallback_to_cache.py``
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from resilience import (
    CircuitBreaker,
    CircuitBreakerOpenError,
    circuit,
    degradation_scope,
    fallback,
    is_degraded,
)
from resilience.integrations.aiocache import memory_cache

USERS = {1: {"id": 1, "name": "Ada"}, 2: {"id": 2, "name": "Grace"}}


class InMemoryDatabase:
    """A users table that raises ``ConnectionError`` while ``down``."""

    def __init__(self) -> None:
        self.down = False

    async def execute_query(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        if self.down:
            raise ConnectionError("connection refused")
        user = USERS.get(query["parameters"][0])
        return [user] if user else []


class InMemoryPool(InMemoryDatabase):
    """Stands in for ``WorkflowConnectionPool``: every query goes through its breaker."""

    def __init__(self, name: str, **settings: Any) -> None:
        super().__init__()
        self.circuit_breaker = CircuitBreaker(name, **settings)

    async def execute_query(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        return await self.circuit_breaker.call(super().execute_query, query)


class InMemoryRedis:
    """Stands in for the guide's ``redis`` client (async ``get``/``set`` of strings)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self.data.get(key)

    async def set(self, key: str, value: str) -> None:
        self.data[key] = value


class ServiceUnavailableError(Exception):
    """The guide's error when nothing can be served."""


pool = InMemoryPool("users-db", failure_threshold=3, recovery_timeout=0.3)
redis = InMemoryRedis()


# -- the guide's block (only the imports above are adapted) ---------------------
async def get_user_data(user_id):  # type: ignore[no-untyped-def]
    try:
        # Try database first
        return await pool.execute_query({
            "query": "SELECT * FROM users WHERE id = $1",
            "parameters": [user_id]
        })  # fmt: skip
    except CircuitBreakerOpenError:
        # Fallback to cache
        cached = await redis.get(f"user:{user_id}")
        if cached:
            return json.loads(cached)
        raise ServiceUnavailableError("Database unavailable")  # noqa: B904 - as the guide wrote it


# -- the same pattern with @fallback --------------------------------------------
db = InMemoryDatabase()
cache = memory_cache()  # redis_cache("redis://cache:6379/0") for a fleet


@fallback(cache, ttl=300)  # serve the last good answer for up to 5 minutes
@circuit("users-db-decorated", failure_threshold=3, recovery_timeout=0.3)
async def get_user(user_id: int) -> list[dict[str, Any]]:
    return await db.execute_query(
        {"query": "SELECT * FROM users WHERE id = $1", "parameters": [user_id]}
    )


async def guide_version() -> None:
    print("== the guide's try/except ==")
    for user_id in (1, 2):
        rows = await get_user_data(user_id)
        await redis.set(f"user:{user_id}", json.dumps(rows))  # the guide fills its cache elsewhere
        print(f"database up:     user {user_id} -> {rows}")
    pool.down = True
    print("-- the database goes down --")
    for attempt in range(1, 6):
        try:
            print(f"attempt {attempt}:      -> {await get_user_data(1)} (from the cache)")
        except CircuitBreakerOpenError:
            raise
        except ConnectionError:
            # The guide only falls back once the circuit is open: the first
            # failures reach the caller.
            print(f"attempt {attempt}:      ConnectionError (circuit still closed)")
    try:
        await get_user_data(3)
    except ServiceUnavailableError as exc:
        print(f"user 3 (never cached): {type(exc).__name__}: {exc}")


async def decorated_version() -> None:
    print("\n== @fallback(cache) over @circuit ==")
    users_db = get_user.breaker  # type: ignore[attr-defined]
    for user_id in (1, 2):
        print(f"database up:     user {user_id} -> {await get_user(user_id)}")
    db.down = True
    print("-- the database goes down --")
    for attempt in range(1, 6):
        with degradation_scope():
            rows = await get_user(1)
            print(
                f"attempt {attempt}:      -> {rows} (degraded={is_degraded()}, "
                f"circuit {users_db.state.value})"
            )
    try:
        await get_user(3)
    except CircuitBreakerOpenError as exc:
        print(f"user 3 (never cached): the original error: {exc}")
    db.down = False
    print("-- the database is back; after the recovery timeout a probe closes the circuit --")
    await asyncio.sleep(0.35)
    for _ in range(3):  # success_threshold probes
        with degradation_scope():
            rows = await get_user(1)
    print(f"recovered:       -> {rows} (degraded={is_degraded()}, circuit {users_db.state.value})")
    assert users_db.state.value == "closed"


async def main() -> None:
    await guide_version()
    await decorated_version()


if __name__ == "__main__":
    asyncio.run(main())
