"""Seed guide, "Monitoring Circuit State": read the state, listen for changes.

The guide's two blocks (``get_circuit_breaker_status`` and a listener on
``pool.circuit_breaker``), run through a real outage: a
:class:`resilience.testing.FaultProxy` in front of the server refuses
connections, the circuit opens, the server comes back, the circuit closes.
The recovery timeout is one second here so the recipe finishes quickly.

Run: ``python cookbook/seed_monitoring.py`` (``RESILIENCE_PG_DSN`` picks the server)
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from urllib.parse import unquote, urlsplit

from resilience import CircuitBreakerOpenError, classify
from resilience.integrations.asyncpg import WorkflowConnectionPool
from resilience.testing import FaultProxy

DSN = urlsplit(os.environ.get("RESILIENCE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stdout)
logger = logging.getLogger("cookbook")
seen: list[str] = []


# Listen for State Changes (the guide's listener, as written)
def on_state_change(old_state, new_state, reason):  # type: ignore[no-untyped-def]
    logger.warning(f"Circuit breaker: {old_state} → {new_state} ({reason})")
    seen.append(f"{old_state}->{new_state}")


async def show_status(pool: WorkflowConnectionPool) -> None:
    # Get Current State (the guide's block, as written)
    status = await pool.get_circuit_breaker_status()
    print(f"State: {status['state']}")
    print(f"Failure count: {status['failure_count']}")
    print(f"Last failure: {status['last_failure_time']}")


async def main() -> None:
    async with FaultProxy(DSN.hostname or "127.0.0.1", DSN.port or 5432) as proxy:
        pool = WorkflowConnectionPool(
            name="monitored_pool",
            database_type="postgresql",
            host=proxy.host,
            port=proxy.port,
            database=DSN.path.lstrip("/"),
            user=unquote(DSN.username) if DSN.username else None,
            password=unquote(DSN.password) if DSN.password else None,
            circuit_breaker_failure_threshold=5,
            circuit_breaker_recovery_timeout=1.0,
            circuit_breaker_success_threshold=3,
            connect_timeout=1.0,
        )
        pool.circuit_breaker.add_listener(on_state_change)
        async with pool:
            await pool.fetchval("SELECT 1")
            await show_status(pool)

            print("\n-- the database stops accepting connections --")
            proxy.refuse()
            for _ in range(6):
                try:
                    await pool.fetchval("SELECT 1")
                except CircuitBreakerOpenError as exc:
                    print(f"rejected without a connect: {exc}")
                except Exception as exc:  # refused, or a pooled connection found dead
                    print(f"failed: {type(exc).__name__} ({classify(exc)})")
            await show_status(pool)

            print("\n-- the database is back; after the recovery timeout, probes close it --")
            proxy.pass_through()
            await asyncio.sleep(1.0)
            for _ in range(3):
                await pool.fetchval("SELECT 1")
            await show_status(pool)

    assert seen == ["closed->open", "open->half_open", "half_open->closed"], seen


if __name__ == "__main__":
    asyncio.run(main())
