"""Seed guide, "Common Patterns: Gradual Degradation", on a real PostgreSQL.

The guide's block (imports adapted): the full search on the primary pool, a
simplified one on the backup pool when the primary is unavailable, popular
products when both fail. The guide says "degrade", but its code steps down
only on ``CircuitBreakerOpenError`` (so the failures that open the circuit
would reach the caller) and its bare ``except:`` swallows cancellation too:
fixed here (marked). Then the same ladder with ``@fallback`` and ``chain.of``,
which also marks the last-resort answer degraded. Each pool goes through its
own FaultProxy (``application_name`` tells who answered), cut one by one.

Run: ``python cookbook/gradual_degradation.py`` (``RESILIENCE_PG_DSN`` picks the server)
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from resilience import CircuitBreakerOpenError, chain, degradation_scope, fallback, is_degraded
from resilience.integrations.asyncpg import WorkflowConnectionPool
from resilience.testing import FaultProxy

DSN = os.environ.get("RESILIENCE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
PG = urlsplit(DSN)
SCHEMA = f"cookbook_{uuid.uuid4().hex[:12]}"  # a private products table, dropped at the end
FIELDS = "SELECT name, current_setting('application_name') AS via FROM products"
complex_search_query = f"{FIELDS} WHERE name ILIKE '%' || $1 || '%' AND tags @> $2 ORDER BY id"
simple_search_query = f"{FIELDS} WHERE name ILIKE '%' || $1 || '%' ORDER BY id"


def get_popular_products(*search: Any) -> list[dict[str, Any]]:
    """The last resort, no database at all (``@fallback`` passes the search's arguments)."""
    return [{"name": "red kettle", "via": "popular"}, {"name": "red mug", "via": "popular"}]


def pool_through(proxy: FaultProxy, name: str) -> WorkflowConnectionPool:
    return WorkflowConnectionPool(
        DSN,
        host=proxy.host,  # through the proxy, so the recipe can cut it
        port=proxy.port,
        name=f"{name}-{SCHEMA}",
        circuit_breaker_failure_threshold=2,
        circuit_breaker_recovery_timeout=300,
        connect_timeout=0.5,
        pool_kwargs={"server_settings": {"search_path": SCHEMA, "application_name": name}},
    )


async def walk(search: Any, pool: WorkflowConnectionPool, *proxies: FaultProxy) -> None:
    """Search with all up, with the primary cut (3 times), then with both cut."""
    vias = []
    for step in ("all up", "primary cut", "primary cut", "primary cut", "both cut"):
        if step != "all up":
            proxies[0].refuse()  # connections refused: the primary is down
        if step == "both cut":
            proxies[1].refuse()
        with degradation_scope():
            rows = await search("kettle", ["red"])
            vias.append(",".join(sorted({row["via"] for row in rows})))
            names, state = [row["name"] for row in rows], pool.circuit_breaker.state.value
            print(f"{step:12} {names} via {vias[-1]}, degraded={is_degraded()} (primary {state})")
    assert vias == ["primary", "backup", "backup", "backup", "popular"], vias
    assert pool.circuit_breaker.state.value == "open"


async def guide_version(pool: Any, backup_pool: Any, *proxies: FaultProxy) -> None:
    # -- the guide's block ----------------------------------------------------
    async def search_products(query, filters):  # type: ignore[no-untyped-def]
        try:
            # Full search with filters
            return await pool.execute_query({
                "query": complex_search_query,
                "parameters": [query, filters]
            })  # fmt: skip
        # The guide: `except CircuitBreakerOpenError:`; also the failures that open it.
        except (CircuitBreakerOpenError, OSError, asyncpg.PostgresConnectionError):
            try:
                # Simplified search
                return await backup_pool.execute_query({
                    "query": simple_search_query,
                    "parameters": [query]
                })  # fmt: skip
            except Exception:  # the guide: a bare `except:`
                # Return popular products
                return get_popular_products()

    # -------------------------------------------------------------------------
    print("== the guide's nested try/except ==")
    await walk(search_products, pool, *proxies)


async def library_version(pool: Any, backup_pool: Any, *proxies: FaultProxy) -> None:
    print("\n== fallback(get_popular_products)(chain.of(full_search, simple_search)) ==")
    for proxy, each in zip(proxies, (pool, backup_pool), strict=True):
        proxy.pass_through()  # a fresh start: both back, both circuits closed
        each.circuit_breaker.reset()

    async def full_search(query: str, filters: list[str]) -> Any:
        request = {"query": complex_search_query, "parameters": [query, filters]}
        return await pool.execute_query(request)

    async def simple_search(query: str, filters: list[str]) -> Any:
        request = {"query": simple_search_query, "parameters": [query]}
        return await backup_pool.execute_query(request)

    search = fallback(get_popular_products)(chain.of(full_search, simple_search))
    await walk(search, pool, *proxies)


async def main() -> None:
    admin = await asyncpg.connect(DSN)
    await admin.execute(
        f"CREATE SCHEMA {SCHEMA}; CREATE TABLE {SCHEMA}.products (id int, name text, tags text[]);"
        f"INSERT INTO {SCHEMA}.products VALUES (1, 'red kettle', '{{red}}'),"
        " (2, 'blue kettle', '{blue}'), (3, 'red mug', '{red}')"
    )
    target = (PG.hostname or "127.0.0.1", PG.port or 5432)
    try:
        async with (
            FaultProxy(*target) as primary_proxy,
            FaultProxy(*target) as backup_proxy,
            pool_through(primary_proxy, "primary") as pool,
            pool_through(backup_proxy, "backup") as backup_pool,
        ):
            await guide_version(pool, backup_pool, primary_proxy, backup_proxy)
            await library_version(pool, backup_pool, primary_proxy, backup_proxy)
    finally:
        await admin.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
