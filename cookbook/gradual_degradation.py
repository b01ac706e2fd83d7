"""Seed guide, "Common Patterns: Gradual Degradation".

The guide's block, as written (only its imports adapted): full search on the
primary, a simplified search on the backup when the primary's circuit is
open, popular products when everything else fails. Then the same ladder in
one line: ``chain.of`` steps down from the full search to the simplified one
and ``@fallback`` serves popular products when both fail. Unlike the guide's
block it also steps down on connection errors and timeouts (not only once the
circuit is open), never hides a bad query, and marks the last-resort answer
degraded (``resilience.is_degraded()``, an ``X-Degraded`` header in the
middlewares).

The pools are in-memory stand-ins with the pool's interface
(``execute_query`` through a real ``CircuitBreaker``) that raise
``ConnectionError`` while "down". No network, no sleeps.

Run: ``python cookbook/gradual_degradation.py``
"""

from __future__ import annotations

import asyncio
from typing import Any

from resilience import (
    CircuitBreaker,
    CircuitBreakerOpenError,
    chain,
    degradation_scope,
    fallback,
    is_degraded,
    timeout,
)

PRODUCTS = [
    {"id": 1, "name": "red kettle", "colour": "red", "popular": True},
    {"id": 2, "name": "blue kettle", "colour": "blue", "popular": False},
    {"id": 3, "name": "red mug", "colour": "red", "popular": True},
]


class InMemoryPool:
    """Stands in for ``WorkflowConnectionPool``: every query goes through its breaker."""

    def __init__(self, name: str, **settings: Any) -> None:
        self.name = name
        self.circuit_breaker = CircuitBreaker(name, **settings)
        self.down = False

    async def execute_query(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        return await self.circuit_breaker.call(self._run, query)

    async def _run(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        if self.down:
            raise ConnectionError(f"{self.name}: connection refused")
        text, *filters = query["parameters"]
        rows = [p for p in PRODUCTS if text in str(p["name"])]
        if filters and filters[0]:
            rows = [p for p in rows if all(p.get(k) == v for k, v in filters[0].items())]
        return [{"id": p["id"], "name": p["name"], "via": self.name} for p in rows]


def get_popular_products() -> list[dict[str, Any]]:
    """The last resort: a static list, no database at all."""
    return [{"id": p["id"], "name": p["name"], "via": "popular"} for p in PRODUCTS if p["popular"]]


complex_search_query = "SELECT ... FROM products WHERE name ILIKE $1 AND attrs @> $2"
simple_search_query = "SELECT ... FROM products WHERE name ILIKE $1"

pool = InMemoryPool("search-primary", failure_threshold=2)
backup_pool = InMemoryPool("search-backup", failure_threshold=2)


# -- the guide's block (only the imports above are adapted) ---------------------
async def search_products(query, filters):  # type: ignore[no-untyped-def]
    try:
        # Full search with filters
        return await pool.execute_query({
            "query": complex_search_query,
            "parameters": [query, filters]
        })  # fmt: skip
    except CircuitBreakerOpenError:
        try:
            # Simplified search
            return await backup_pool.execute_query({
                "query": simple_search_query,
                "parameters": [query]
            })  # fmt: skip
        except:  # noqa: E722 - as the guide wrote it
            # Return popular products
            return get_popular_products()


# -- the same ladder with chain.of and @fallback ----------------------------------
primary2 = InMemoryPool("search-primary-2", failure_threshold=2)
backup2 = InMemoryPool("search-backup-2", failure_threshold=2)


@timeout(1.0)
async def full_search(query: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
    return await primary2.execute_query(
        {"query": complex_search_query, "parameters": [query, filters]}
    )


@timeout(1.0)
async def simple_search(query: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
    return await backup2.execute_query({"query": simple_search_query, "parameters": [query]})


def popular_products(query: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
    return get_popular_products()


# Step down between searches; when both fail, serve popular products (degraded).
search = fallback(popular_products)(chain.of(full_search, simple_search))


async def show(label: str, run: Any) -> None:
    with degradation_scope():
        try:
            rows = await run("kettle", {"colour": "red"})
        except Exception as exc:
            print(f"{label:34} {type(exc).__name__}: {exc}")
            return
        vias = sorted({str(r["via"]) for r in rows}) or ["-"]
        print(f"{label:34} {[r['name'] for r in rows]} via {vias} degraded={is_degraded()}")


async def guide_version() -> None:
    print("== the guide's nested try/except ==")
    await show("all up:", search_products)
    pool.down = True
    await show("primary down, circuit closed:", search_products)
    await show("primary down, circuit closed:", search_products)
    await show("primary circuit open:", search_products)
    backup_pool.down = True
    await show("backup down too:", search_products)


async def decorated_version() -> None:
    print("\n== fallback(popular_products)(chain.of(full_search, simple_search)) ==")
    await show("all up:", search)
    primary2.down = True
    await show("primary down:", search)
    await show("primary down:", search)
    await show("primary circuit open (fast):", search)
    backup2.down = True
    await show("backup down too:", search)
    assert await search("kettle", {}) == get_popular_products()

    print("\n== a bad query is a bug, never hidden ==")
    primary2.down = backup2.down = False
    primary2.circuit_breaker.reset()

    class BadQuery(Exception):
        sqlstate = "42601"  # syntax_error: ignored by breakers, never a failover

    async def broken_search(query: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
        raise BadQuery("syntax error at or near SELEC")

    await show("broken query:", fallback(popular_products)(chain.of(broken_search, simple_search)))

    print("\n== nothing to serve at all: @fallback(default=[]) ==")

    async def only_database(query: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
        raise ConnectionError("no route to host")

    await show("every source down:", fallback(default=[])(only_database))


async def main() -> None:
    await guide_version()
    await decorated_version()


if __name__ == "__main__":
    asyncio.run(main())
