"""One worker process of ``resilience demo --workers N``.

    python -m resilience.cli._demo.fleet_worker CONFIG_JSON

It holds what a web worker of the demo's app holds (a ResilientPool and its
breaker; with ``redis_url``, the breaker shared through a RedisStore), and
calls the database at a steady rate from a few callers until ``stop_at``
(seconds from its start). It prints one JSON line when ready and one with its
counts at the end:

- ``failed``: calls that reached the database side and failed (a refused or
  timed-out connect, a dead connection): what an outage costs;
- ``probes``: of those and of the successes, the calls admitted while the
  breaker was not CLOSED (half-open probes);
- ``rejected``, ``ok``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from resilience import CircuitOpenError, CircuitState, Registry


async def work(config: dict[str, Any]) -> dict[str, Any]:
    from resilience.integrations.asyncpg import ResilientPool

    store = None
    if config.get("redis_url"):
        from resilience.integrations.redis import RedisStore

        store = RedisStore(config["redis_url"], prefix=config["prefix"], refresh_interval=0.5)
    registry = Registry(store=store) if store is not None else Registry()
    breaker = registry.get_or_create("pg-primary", **config["breaker"])
    pool = ResilientPool(
        config["dsn"],
        breaker=breaker,
        max_size=4,
        connect_timeout=config["db_timeout"],
        command_timeout=config["db_timeout"],
        acquire_timeout=config["db_timeout"],
    )
    counts: dict[str, Any] = {"ok": 0, "failed": 0, "rejected": 0, "probes": 0}
    print(json.dumps({"ready": True}), flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)  # the parent's "go"
    started = time.monotonic()
    stop_at = started + float(json.loads(line)["seconds"])
    interval = 1.0 / float(config["rate"])

    async def caller() -> None:
        while time.monotonic() < stop_at:
            # Admitted while not CLOSED: a probe (OPEN -> HALF_OPEN, or HALF_OPEN).
            probing = breaker._m.state is not CircuitState.CLOSED
            try:
                await pool.fetchval("SELECT 1")
                counts["ok"] += 1
            except CircuitOpenError:
                counts["rejected"] += 1
                probing = False
            except Exception:
                counts["failed"] += 1
            if probing:
                counts["probes"] += 1
            await asyncio.sleep(interval)

    try:
        await asyncio.gather(*(caller() for _ in range(int(config["callers"]))))
    finally:
        await pool.close(timeout=1.0)
        if store is not None:
            store.close()
    counts["opened"] = breaker.metrics()["open_count"]
    return counts


def main() -> None:
    config = json.loads(sys.argv[1])
    counts = asyncio.run(work(config))
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
