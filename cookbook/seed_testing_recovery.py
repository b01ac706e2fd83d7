"""Seed guide, "Best Practices 4: Test Recovery Logic".

The guide's block, as written: force the circuit open by hand, then check
that the service answers from its fallback. ``_transition_to`` is kept for
the guide's sake; ``transition_to`` is the public name of the same method.
Back to CLOSED afterwards, the service reads the database again.

Run: ``python cookbook/seed_testing_recovery.py`` (``RESILIENCE_PG_DSN`` picks the server)
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar

from resilience import CircuitBreakerOpenError, CircuitState
from resilience.integrations.asyncpg import WorkflowConnectionPool

DSN = os.environ.get("RESILIENCE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


class Service:
    """A service whose reads fall back to a static answer when the circuit is open."""

    FALLBACK: ClassVar[dict[str, Any]] = {"source": "fallback", "value": None}

    def __init__(self, pool: WorkflowConnectionPool) -> None:
        self.pool = pool

    async def get_data(self) -> dict[str, Any]:
        try:
            value = await self.pool.fetchval("SELECT 42")
        except CircuitBreakerOpenError:
            return self.FALLBACK
        return {"source": "database", "value": value}


async def main() -> None:
    async with WorkflowConnectionPool(DSN, name="recovery_pool") as pool:
        your_service = Service(pool)
        print("normal:       ", await your_service.get_data())

        # -- the guide's block ----------------------------------------------
        # Force circuit to open (testing only)
        await pool.circuit_breaker._transition_to(CircuitState.OPEN)

        # Verify your fallback logic works
        result = await your_service.get_data()  # Should use fallback
        # -------------------------------------------------------------------
        print("forced open:  ", result)
        assert result["source"] == "fallback"
        assert pool.get_circuit_breaker_metrics()["rejected_calls"] == 1

        await pool.circuit_breaker.transition_to(CircuitState.CLOSED, reason="test over")
        result = await your_service.get_data()
        print("closed again: ", result)
        assert result == {"source": "database", "value": 42}


if __name__ == "__main__":
    asyncio.run(main())
