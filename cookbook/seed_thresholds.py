"""Seed guide, "Configuration Options" and "Best Practices 1: Set Appropriate
Thresholds".

The guide's keyword settings, as written, on real pools:

- the four "Configuration Options" together; then a database that fails every
  other call opens the circuit by its error rate (50% of at least
  ``minimum_calls`` = 10 calls) although it never fails 5 times in a row;
- the "critical" (10 failures, 120 s) and "non-critical" (3 failures, 30 s)
  settings side by side through the same outage: the non-critical pool fails
  fast after 3 failures, the critical one holds on until 10.

The guide says the rate rule opens when the error rate *exceeds* the setting;
the breaker opens when it reaches it (``>=``, as resilience4j does).

Run: ``python cookbook/seed_thresholds.py`` (``RESILIENCE_PG_DSN`` picks the server)
"""

from __future__ import annotations

import asyncio
import os
from typing import Any
from urllib.parse import unquote, urlsplit

from resilience import CircuitBreakerOpenError
from resilience.integrations.asyncpg import WorkflowConnectionPool
from resilience.testing import FaultProxy

DSN = urlsplit(os.environ.get("RESILIENCE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))


def pool_for(proxy: FaultProxy, name: str, **settings: Any) -> WorkflowConnectionPool:
    return WorkflowConnectionPool(
        name=name,
        database_type="postgresql",
        host=proxy.host,
        port=proxy.port,
        database=DSN.path.lstrip("/"),
        user=unquote(DSN.username) if DSN.username else None,
        password=unquote(DSN.password) if DSN.password else None,
        connect_timeout=1.0,
        **settings,
    )


async def attempt(pool: WorkflowConnectionPool) -> str:
    try:
        await pool.fetchval("SELECT 1")
    except CircuitBreakerOpenError:
        return "rejected"
    except Exception:
        return "failed"
    return "ok"


async def configuration_options(proxy: FaultProxy) -> None:
    reasons: list[str] = []
    async with pool_for(
        proxy,
        "configured_pool",
        # Open circuit after N consecutive failures
        circuit_breaker_failure_threshold=5,
        # Open circuit if error rate exceeds percentage
        circuit_breaker_error_rate=0.5,  # 50% failure rate
        # Wait N seconds before testing recovery
        circuit_breaker_recovery_timeout=60.0,
        # Require N successes in HALF_OPEN to close circuit
        circuit_breaker_success_threshold=3,
    ) as pool:
        pool.circuit_breaker.add_listener(lambda old, new, reason: reasons.append(reason))
        config = pool.circuit_breaker.config
        print(
            f"configured: failure_threshold={config.failure_threshold} "
            f"error_rate={config.error_rate} recovery_timeout={config.recovery_timeout}s "
            f"success_threshold={config.success_threshold} minimum_calls={config.minimum_calls}"
        )
        outcomes = []
        for call in range(12):
            if call % 2:
                proxy.refuse()  # every other call finds the database down
            else:
                proxy.pass_through()
            outcomes.append(await attempt(pool))
        proxy.pass_through()
        print("alternating outage:", " ".join(outcomes))
        status = await pool.get_circuit_breaker_status()
        print(
            f"state={status['state']} because {reasons[0]!r}; "
            f"retry_after={status['retry_after']:.0f}s"
        )
        assert status["state"] == "open" and reasons[0].startswith("error rate")


async def critical_vs_non_critical(proxy: FaultProxy) -> None:
    critical = pool_for(
        proxy,
        "critical_pool",
        # For critical services - be conservative
        circuit_breaker_failure_threshold=10,
        circuit_breaker_recovery_timeout=120,
    )
    non_critical = pool_for(
        proxy,
        "non_critical_pool",
        # For non-critical - fail fast
        circuit_breaker_failure_threshold=3,
        circuit_breaker_recovery_timeout=30,
    )
    async with critical, non_critical:
        proxy.refuse()
        print("\ncall  critical(10, 120s)  non-critical(3, 30s)")
        for call in range(1, 12):
            a, b = await attempt(critical), await attempt(non_critical)
            print(f"{call:>4}  {a:<19} {b}")
        proxy.pass_through()
        assert critical.circuit_breaker.state.value == "open"
        crit = await critical.get_circuit_breaker_status()
        non = await non_critical.get_circuit_breaker_status()
        print(
            f"retry after: critical {crit['retry_after']:.0f}s, "
            f"non-critical {non['retry_after']:.0f}s"
        )
        assert non_critical.get_circuit_breaker_metrics()["failed_calls"] == 3
        assert critical.get_circuit_breaker_metrics()["failed_calls"] == 10


async def main() -> None:
    async with FaultProxy(DSN.hostname or "127.0.0.1", DSN.port or 5432) as proxy:
        await configuration_options(proxy)
        await critical_vs_non_critical(proxy)


if __name__ == "__main__":
    asyncio.run(main())
