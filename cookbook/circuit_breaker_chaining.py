"""Seed guide, "Common Patterns: Circuit Breaker Chaining", on a real PostgreSQL.

The guide's block (imports adapted, each pool told where to connect): a primary
and a more tolerant backup pool, each with its breaker; queries go to the backup
once the primary's circuit is open. The guide says "fall back", but its code
catches only ``CircuitBreakerOpenError``, so the 5 failures that open the
circuit would reach the caller: a second ``except`` (marked) fails those over
too. Then the same with ``@chain(primary_pool, backup_pool)``, which also skips
an open primary without calling it and raises one ``ChainExhaustedError`` when
both fail. Each pool goes through a FaultProxy (``application_name`` tells who
answered); refused connects cost no time, so the guide's thresholds stay.

Run: ``python cookbook/circuit_breaker_chaining.py`` (``RESILIENCE_PG_DSN`` picks the server)
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from resilience import ChainExhaustedError, CircuitBreakerOpenError, chain
from resilience.integrations.asyncpg import WorkflowConnectionPool
from resilience.testing import FaultProxy

logging.basicConfig(level=logging.WARNING, format="  log: %(message)s", stream=sys.stdout)
logger = logging.getLogger("cookbook")

DSN = os.environ.get("RESILIENCE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
PG = urlsplit(DSN)
SCHEMA = f"cookbook_{uuid.uuid4().hex[:12]}"  # a private orders table, dropped at the end
QUERY = {
    "query": "SELECT total, current_setting('application_name') AS served_by"
    " FROM orders WHERE customer_id = $1",
    "parameters": [42],
}


def through(proxy: FaultProxy, name: str) -> dict[str, Any]:
    """Where a pool connects: PostgreSQL through ``proxy``, which can cut it."""
    settings = {"search_path": SCHEMA, "application_name": name}
    where = {"dsn": DSN, "host": proxy.host, "port": proxy.port, "connect_timeout": 0.5}
    return {**where, "pool_kwargs": {"server_settings": settings}}


async def outage(execute: Any, primary: WorkflowConnectionPool, proxy: FaultProxy) -> Any:
    """A query with all up, then 6 with the primary cut: every one is answered."""
    served = []
    for attempt in range(7):
        if attempt == 1:
            proxy.refuse()
            print("-- the primary stops accepting connections --")
        rows = await execute(QUERY)
        served.append(rows[0]["served_by"])
        print(f"{rows} (primary {primary.circuit_breaker.state.value})")
    assert served == ["primary"] + ["backup"] * 6, served
    metrics = primary.get_circuit_breaker_metrics()
    assert (metrics["state"], metrics["failed_calls"]) == ("open", 5), metrics
    return metrics


async def library_version(primary_pool: Any, backup_pool: Any, *proxies: FaultProxy) -> None:
    print("\n== @chain(primary_pool, backup_pool) ==")
    proxies[0].pass_through()  # a fresh start: the primary back, its circuit closed
    primary_pool.circuit_breaker.reset()

    @chain(primary_pool, backup_pool)
    async def execute(pool: WorkflowConnectionPool, query: dict[str, Any]) -> Any:
        return await pool.execute_query(query)

    metrics = await outage(execute, primary_pool, proxies[0])
    assert metrics["rejected_calls"] == 0  # an open primary is skipped, not called
    proxies[1].refuse()
    print("-- the backup stops accepting connections too --")
    try:
        await execute(QUERY)
        raise AssertionError("both are down")
    except ChainExhaustedError as exc:
        causes = [type(cause).__name__ for cause in exc.exceptions]
        print(f"ChainExhaustedError, causes {causes}")
        assert len(causes) == 2


async def main() -> None:
    admin = await asyncpg.connect(DSN)
    await admin.execute(
        f"CREATE SCHEMA {SCHEMA}; CREATE TABLE {SCHEMA}.orders (customer_id int, total int);"
        f"INSERT INTO {SCHEMA}.orders VALUES (42, 1999)"
    )
    target = (PG.hostname or "127.0.0.1", PG.port or 5432)
    try:
        async with FaultProxy(*target) as primary_proxy, FaultProxy(*target) as backup_proxy:
            # -- the guide's block ----------------------------------------------
            # Primary and backup pools with circuit breakers
            primary_pool = WorkflowConnectionPool(
                name="primary",
                circuit_breaker_failure_threshold=5,
                **through(primary_proxy, "primary")
            )  # fmt: skip

            backup_pool = WorkflowConnectionPool(
                name="backup",
                circuit_breaker_failure_threshold=10,  # More tolerant
                **through(backup_proxy, "backup")
            )  # fmt: skip

            async def execute_with_fallback(query):  # type: ignore[no-untyped-def]
                try:
                    return await primary_pool.execute_query(query)
                except CircuitBreakerOpenError:
                    logger.warning("Primary circuit open, using backup")
                    return await backup_pool.execute_query(query)
                except (OSError, asyncpg.PostgresConnectionError) as exc:  # added, see above
                    logger.warning("Primary failed (%s), using backup", type(exc).__name__)
                    return await backup_pool.execute_query(query)

            # -------------------------------------------------------------------
            async with primary_pool, backup_pool:  # closed at the end
                print("== the guide's try/except ==")
                metrics = await outage(execute_with_fallback, primary_pool, primary_proxy)
                assert metrics["rejected_calls"] == 1  # the open primary was still called
                await library_version(primary_pool, backup_pool, primary_proxy, backup_proxy)
    finally:
        await admin.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
