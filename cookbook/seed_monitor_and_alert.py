"""Seed guide, "Best Practices 3: Monitor and Alert".

The guide's block, as written: read ``pool.get_circuit_breaker_metrics()``
and alert when ``open_count`` passes 5. To make the alert fire, the recipe
runs a flapping outage through a :class:`resilience.testing.FaultProxy`: the
circuit opens, a probe after the (short) recovery timeout fails, it opens
again, six times.

Run: ``python cookbook/seed_monitor_and_alert.py`` (``RESILIENCE_PG_DSN`` picks the server)
"""

from __future__ import annotations

import asyncio
import os
from urllib.parse import unquote, urlsplit

from resilience import CircuitBreakerOpenError
from resilience.integrations.asyncpg import WorkflowConnectionPool
from resilience.testing import FaultProxy

DSN = urlsplit(os.environ.get("RESILIENCE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
RECOVERY = 0.05  # seconds; short so six openings take a moment
alerts: list[str] = []


def alert_ops_team(message: str) -> None:
    """Stand-in for a pager call."""
    alerts.append(message)
    print(f"ALERT: {message}")


def check_and_alert(pool: WorkflowConnectionPool) -> None:
    # -- the guide's block --------------------------------------------------
    # Export metrics for monitoring
    metrics = pool.get_circuit_breaker_metrics()

    # Set up alerts
    if metrics["open_count"] > 5:
        alert_ops_team("Frequent circuit breaker activations")
    # -----------------------------------------------------------------------


async def main() -> None:
    async with (
        FaultProxy(DSN.hostname or "127.0.0.1", DSN.port or 5432) as proxy,
        WorkflowConnectionPool(
            name="alerting_pool",
            host=proxy.host,
            port=proxy.port,
            database=DSN.path.lstrip("/"),
            user=unquote(DSN.username) if DSN.username else None,
            password=unquote(DSN.password) if DSN.password else None,
            circuit_breaker_failure_threshold=1,
            circuit_breaker_recovery_timeout=RECOVERY,
            connect_timeout=1.0,
        ) as pool,
    ):
        await pool.fetchval("SELECT 1")
        check_and_alert(pool)
        assert not alerts

        proxy.refuse()  # the database flaps: every probe fails
        while pool.get_circuit_breaker_metrics()["open_count"] <= 5:
            try:
                await pool.fetchval("SELECT 1")
            except CircuitBreakerOpenError:
                await asyncio.sleep(RECOVERY)
            except Exception:
                pass  # the probe failed: the circuit re-opens
        metrics = pool.get_circuit_breaker_metrics()
        print(
            f"open_count={metrics['open_count']} failed_calls={metrics['failed_calls']} "
            f"rejected_calls={metrics['rejected_calls']} "
            f"failures_by_category={metrics['failures_by_category']}"
        )
        check_and_alert(pool)
    assert alerts == ["Frequent circuit breaker activations"]


if __name__ == "__main__":
    asyncio.run(main())
