"""Seed guide, "Common Patterns: Circuit Breaker Chaining".

The guide's block, as written (only its imports adapted): a primary and a
more tolerant backup pool, each with its own breaker; queries go to the
backup once the primary's circuit is open. Then the same with ``@chain``,
which also fails over on the errors that open the circuit (so no caller sees
them), skips an open primary without calling it, and raises one
``ChainExhaustedError`` with every cause when both are down.

The pools are in-memory stand-ins with the pool's interface
(``execute_query`` through a real ``CircuitBreaker``, built from the guide's
``circuit_breaker_*`` keywords) that raise ``ConnectionError`` while "down".
No network, no sleeps beyond 0.3 s.

Run: ``python cookbook/circuit_breaker_chaining.py``
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from resilience import (
    ChainExhaustedError,
    CircuitBreaker,
    CircuitBreakerOpenError,
    chain,
)

logging.basicConfig(level=logging.WARNING, format="  log: %(message)s")
logger = logging.getLogger("cookbook")


class WorkflowConnectionPool:
    """An in-memory stand-in for ``resilience.integrations.asyncpg.WorkflowConnectionPool``."""

    def __init__(
        self,
        name: str,
        circuit_breaker_failure_threshold: int = 5,
        circuit_breaker_recovery_timeout: float = 0.3,
    ) -> None:
        self.name = name
        self.circuit_breaker = CircuitBreaker(
            name,
            failure_threshold=circuit_breaker_failure_threshold,
            recovery_timeout=circuit_breaker_recovery_timeout,
            success_threshold=1,
        )
        self.down = False
        self.calls = 0

    async def execute_query(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        return await self.circuit_breaker.call(self._run, query)

    async def _run(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        self.calls += 1
        await asyncio.sleep(0)
        if self.down:
            raise ConnectionError(f"{self.name}: connection refused")
        return [{"served_by": self.name, "query": query["query"]}]


# -- the guide's block (only the imports above are adapted) ---------------------
# Primary and backup pools with circuit breakers
primary_pool = WorkflowConnectionPool(
    name="primary",
    circuit_breaker_failure_threshold=5
)  # fmt: skip

backup_pool = WorkflowConnectionPool(
    name="backup",
    circuit_breaker_failure_threshold=10  # More tolerant
)  # fmt: skip


async def execute_with_fallback(query):  # type: ignore[no-untyped-def]
    try:
        return await primary_pool.execute_query(query)
    except CircuitBreakerOpenError:
        logger.warning("Primary circuit open, using backup")
        return await backup_pool.execute_query(query)


# -- the same with @chain ---------------------------------------------------------
primary = WorkflowConnectionPool(name="primary-2", circuit_breaker_failure_threshold=5)
backup = WorkflowConnectionPool(name="backup-2", circuit_breaker_failure_threshold=10)


@chain(primary, backup)
async def execute(pool: WorkflowConnectionPool, query: dict[str, Any]) -> list[dict[str, Any]]:
    return await pool.execute_query(query)


QUERY = {"query": "SELECT * FROM orders WHERE customer_id = $1", "parameters": [42]}


async def guide_version() -> None:
    print("== the guide's try/except ==")
    print("all up:            ", await execute_with_fallback(QUERY))
    primary_pool.down = True
    print("-- the primary goes down --")
    for attempt in range(1, 8):
        try:
            rows = await execute_with_fallback(QUERY)
            print(f"attempt {attempt}:          {rows}")
        except ConnectionError as exc:
            # Until the primary's circuit opens, its errors reach the caller.
            print(f"attempt {attempt}:          ConnectionError: {exc}")


async def decorated_version() -> None:
    print("\n== @chain(primary, backup) ==")
    print("all up:            ", await execute(QUERY))
    primary.down = True
    print("-- the primary goes down --")
    for attempt in range(1, 8):
        rows = await execute(QUERY)
        state = primary.circuit_breaker.state.value
        print(f"attempt {attempt}:          {rows} (primary {state}, {primary.calls} calls so far)")
    calls = primary.calls
    await execute(QUERY)
    assert primary.calls == calls, "an open primary is skipped without a call"

    print("-- the backup goes down too --")
    backup.down = True
    try:
        await execute(QUERY)
    except ChainExhaustedError as exc:
        for cause in exc.exceptions:
            print(f"  cause: {type(cause).__name__}: {cause}")

    print("-- both come back; after the recovery timeout the primary is probed again --")
    primary.down = backup.down = False
    await asyncio.sleep(0.35)
    print("recovered:         ", await execute(QUERY))
    assert primary.circuit_breaker.state.value == "closed"


async def main() -> None:
    await guide_version()
    await decorated_version()


if __name__ == "__main__":
    asyncio.run(main())
