"""Seed guide, "Quick Start: Basic Setup": a pool with its circuit breaker.

The guide's block, with its import line adapted. The connection parameters
come from ``RESILIENCE_PG_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``) instead of the guide's
``localhost/myapp``, so the recipe runs against a real server.

Run: ``python cookbook/seed_basic_setup.py``
"""

from __future__ import annotations

import asyncio
import os
from urllib.parse import unquote, urlsplit

from resilience.integrations.asyncpg import WorkflowConnectionPool

DSN = urlsplit(os.environ.get("RESILIENCE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))


async def main() -> None:
    # Create pool with circuit breaker enabled
    pool = WorkflowConnectionPool(
        name="production_pool",
        database_type="postgresql",
        host=DSN.hostname or "localhost",
        port=DSN.port or 5432,
        database=DSN.path.lstrip("/") or "myapp",
        user=unquote(DSN.username) if DSN.username else None,
        password=unquote(DSN.password) if DSN.password else None,
        # Circuit breaker configuration
        circuit_breaker_enabled=True,
        circuit_breaker_failure_threshold=5,  # Open after 5 failures
        circuit_breaker_recovery_timeout=60,  # Try recovery after 60s
        circuit_breaker_error_rate=0.5,  # Open if 50% requests fail
    )
    # Constructing it connected nothing; the first query does.
    async with pool:
        print(f"pool {pool.name!r} -> {pool.dsn}")
        version = await pool.fetchval("SHOW server_version")
        print(f"connected: PostgreSQL {version}")
        status = await pool.get_circuit_breaker_status()
        config = status["config"]
        print(
            f"breaker: state={status['state']}, failure_threshold={config['failure_threshold']}, "
            f"recovery_timeout={config['recovery_timeout']}s, error_rate={config['error_rate']}"
        )
        assert status["state"] == "closed"


if __name__ == "__main__":
    asyncio.run(main())
