"""Seed guide, "Best Practices 2: Handle Circuit Open State".

The guide's block, as written, inside a ``get_user`` function: the query goes
through ``pool.execute_query``; when the circuit is open the caller gets
``CircuitBreakerOpenError`` at once and answers from its cache instead.

To run for real, the recipe creates a ``users`` table in a private schema,
fills the cache on successful reads, then cuts the database off with a
:class:`resilience.testing.FaultProxy` until the circuit opens.

Run: ``python cookbook/seed_handle_open_state.py`` (``RESILIENCE_PG_DSN`` picks the server)
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

from resilience import CircuitBreakerOpenError
from resilience.integrations.asyncpg import WorkflowConnectionPool
from resilience.testing import FaultProxy

RAW_DSN = os.environ.get("RESILIENCE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
DSN = urlsplit(RAW_DSN)
SCHEMA = f"cookbook_{uuid.uuid4().hex[:12]}"

_cache: dict[int, list[dict[str, Any]]] = {}


def get_cached_user(user_id: int) -> list[dict[str, Any]] | None:
    """The degraded answer: the last result read for this user."""
    return _cache.get(user_id)


async def get_user(pool: WorkflowConnectionPool, user_id: int) -> Any:
    # -- the guide's block --------------------------------------------------
    try:
        result = await pool.execute_query({
            "query": "SELECT * FROM users WHERE id = $1",
            "parameters": [user_id]
        })  # fmt: skip
    except CircuitBreakerOpenError:
        # Return cached data or degraded response
        return get_cached_user(user_id)
    # -----------------------------------------------------------------------
    _cache[user_id] = result
    return result


async def main() -> None:
    admin = await asyncpg.connect(RAW_DSN)
    await admin.execute(f"CREATE SCHEMA {SCHEMA}")
    await admin.execute(f"CREATE TABLE {SCHEMA}.users (id int PRIMARY KEY, name text)")
    await admin.execute(f"INSERT INTO {SCHEMA}.users VALUES (1, 'Ada'), (2, 'Grace')")
    try:
        async with (
            FaultProxy(DSN.hostname or "127.0.0.1", DSN.port or 5432) as proxy,
            WorkflowConnectionPool(
                name="users_pool",
                host=proxy.host,
                port=proxy.port,
                database=DSN.path.lstrip("/"),
                user=unquote(DSN.username) if DSN.username else None,
                password=unquote(DSN.password) if DSN.password else None,
                circuit_breaker_failure_threshold=3,
                connect_timeout=1.0,
                pool_kwargs={"server_settings": {"search_path": SCHEMA}},
            ) as pool,
        ):
            print("database up:  ", await get_user(pool, 1))
            print("database up:  ", await get_user(pool, 2))

            print("-- the database stops accepting connections --")
            proxy.refuse()
            for attempt in range(1, 5):
                try:
                    answer = await get_user(pool, 1)
                    print(f"attempt {attempt}:     served {answer} (circuit open: from cache)")
                except Exception as exc:  # before the circuit opens, errors propagate
                    print(f"attempt {attempt}:     {type(exc).__name__}")
            assert pool.circuit_breaker.state.value == "open"
            assert await get_user(pool, 2) == [{"id": 2, "name": "Grace"}]
            print("circuit open: ", await get_user(pool, 2), "(from cache, no connect)")
    finally:
        await admin.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
