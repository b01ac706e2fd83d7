"""Seed guide, "Troubleshooting: Circuit Never Recovers".

The guide's advice, in order: check that the underlying issue is resolved,
review the error categorization, reduce ``success_threshold``, and close the
circuit by hand if needed, with the guide's line as written:
``await pool.circuit_breaker._transition_to(CircuitState.CLOSED)``
(``transition_to`` is the public name of the same method).

An outage (through a :class:`resilience.testing.FaultProxy`) opens the
circuit with a long recovery timeout; the database comes back; an operator
verifies it and closes the circuit instead of waiting two minutes.

Run: ``python cookbook/seed_troubleshooting.py`` (``RESILIENCE_PG_DSN`` picks the server)
"""

from __future__ import annotations

import asyncio
import os
from urllib.parse import unquote, urlsplit

import asyncpg

from resilience import CircuitBreakerOpenError, CircuitState
from resilience.integrations.asyncpg import WorkflowConnectionPool
from resilience.testing import FaultProxy

RAW_DSN = os.environ.get("RESILIENCE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
DSN = urlsplit(RAW_DSN)


async def main() -> None:
    async with (
        FaultProxy(DSN.hostname or "127.0.0.1", DSN.port or 5432) as proxy,
        WorkflowConnectionPool(
            name="stuck_pool",
            host=proxy.host,
            port=proxy.port,
            database=DSN.path.lstrip("/"),
            user=unquote(DSN.username) if DSN.username else None,
            password=unquote(DSN.password) if DSN.password else None,
            circuit_breaker_failure_threshold=3,
            circuit_breaker_recovery_timeout=120,
            connect_timeout=1.0,
        ) as pool,
    ):
        await pool.fetchval("SELECT 1")
        proxy.refuse()
        for _ in range(3):
            try:
                await pool.fetchval("SELECT 1")
            except Exception as exc:
                print(f"outage: {type(exc).__name__}")
        proxy.pass_through()  # the database is back...
        try:
            await pool.fetchval("SELECT 1")
        except CircuitBreakerOpenError as exc:
            print(f"...but the circuit is still open: {exc}")

        # Check if underlying issue is resolved (a direct connection, no breaker)
        con = await asyncpg.connect(RAW_DSN)
        print("database answers directly:", await con.fetchval("SELECT 'yes'"))
        await con.close()

        # Review error categorization: what opened it?
        status = await pool.get_circuit_breaker_status()
        metrics = pool.get_circuit_breaker_metrics()
        print(
            f"last_failure_category={status['last_failure_category']} "
            f"failures_by_category={metrics['failures_by_category']}"
        )

        # Reduce success_threshold (fewer probes needed to close)
        pool.circuit_breaker.reconfigure(success_threshold=1)

        # Manually close circuit if needed (the guide's line, as written)
        await pool.circuit_breaker._transition_to(CircuitState.CLOSED)

        print("after closing by hand:", await pool.fetchval("SELECT 'served'"))
        assert pool.circuit_breaker.state is CircuitState.CLOSED


if __name__ == "__main__":
    asyncio.run(main())
