"""``resilience demo --workers N``: the fleet act.

N worker processes (each holding what a web worker of the demo app holds: a
``ResilientPool`` on the primary database and its breaker) call the database
through a FaultProxy while it goes down and comes back; twice: with their
breakers sharing state through Redis (``RedisStore``), and with each process
on its own. The report sets side by side what the outage cost the database
(calls that reached it and failed) and how many probes each recovery period
sent to it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from ..._redact import redact_url
from ._dsn import dsn_with_host_port, plain_tcp
from ._plan import DemoOptions
from ._preflight import OptionError, check_redis

__all__ = ("BREAKER", "run_fleet")

RECOVERY_TIMEOUT = 1.0
BREAKER: dict[str, Any] = {
    "failure_threshold": 3,
    "recovery_timeout": RECOVERY_TIMEOUT,
    "half_open_max_calls": 1,
    "success_threshold": 1,
    "error_rate": None,
}
"""Each worker's breaker: open after 3 failures, probe once a second, one probe at a time."""
CALLERS = 4
DB_TIMEOUT = 0.5
VARIANTS = ("fleet", "local")
TITLES = {"fleet": "shared through Redis", "local": "each process on its own"}
SETUP_RESERVE = 6.0


async def _redis_for(options: DemoOptions, stack: AsyncExitStack, view: Any) -> str:
    """--redis-url, else the machine's Redis if it answers, else a throwaway one."""
    if options.redis_url is not None:
        return options.redis_url
    local = "redis://127.0.0.1:6379/0"
    try:
        check_redis(local)
        view.message("fleet act: sharing through the Redis at 127.0.0.1:6379")
        return local
    except OptionError:
        pass
    from resilience.testing import ThrowawayRedis

    server = ThrowawayRedis()
    await asyncio.to_thread(server.start)
    stack.callback(server.stop)
    view.message(f"fleet act: started a throwaway Redis at {server.url}")
    return server.url


async def _variant(
    variant: str,
    workers: int,
    dsn: str,
    redis_url: str,
    rate: float,
    phases: tuple[float, float, float],
    proxy: Any,
    view: Any,
) -> dict[str, Any]:
    config = {
        "dsn": dsn,
        "redis_url": redis_url if variant == "fleet" else None,
        "prefix": f"demo-fleet-{uuid.uuid4().hex[:8]}",
        "breaker": BREAKER,
        "db_timeout": DB_TIMEOUT,
        "rate": max(1.0, rate / (workers * CALLERS)),
        "callers": CALLERS,
    }
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "resilience.cli._demo.fleet_worker",
            json.dumps(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(workers)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = await asyncio.wait_for(p.stdout.readline(), 30)
            if not line:
                raise RuntimeError("a fleet worker did not start")
        healthy, outage, recovery = phases
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(json.dumps({"seconds": sum(phases)}).encode() + b"\n")
            await p.stdin.drain()
        view.message(f"fleet act, {TITLES[variant]}: {workers} workers, healthy {healthy:.0f} s")
        await asyncio.sleep(healthy)
        proxy.refuse()
        view.message(f"fleet act, {TITLES[variant]}: outage (connections refused) {outage:.0f} s")
        await asyncio.sleep(outage)
        proxy.pass_through()
        view.message(f"fleet act, {TITLES[variant]}: recovery {recovery:.0f} s")
        totals: dict[str, Any] = {"ok": 0, "failed": 0, "rejected": 0, "probes": 0, "opened": 0}
        for p in procs:
            out, _ = await asyncio.wait_for(p.communicate(), sum(phases) + 30)
            counts = json.loads(out.decode().strip().splitlines()[-1])
            for key in totals:
                totals[key] += int(counts[key])
        periods = max(1, int(outage / RECOVERY_TIMEOUT))
        totals["periods"] = periods
        totals["probes_per_period"] = round(totals["probes"] / periods, 2)
        return totals
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()


async def run_fleet(options: DemoOptions, view: Any, began: float) -> dict[str, Any]:
    """Run both variants of the fleet act; returns the report (also written
    to ``fleet-report.json`` and ``fleet-report.md`` in ``options.out``)."""
    from resilience.testing import FaultProxy

    from .database import connect_database

    async with AsyncExitStack() as stack:
        database = await stack.enter_async_context(connect_database(options.dsn))
        view.message(f"fleet act: PostgreSQL at {redact_url(database.dsn)}")
        redis_url = await _redis_for(options, stack, view)
        proxy = FaultProxy(database.host, database.port)
        await proxy.start()
        stack.push_async_callback(proxy.stop)
        dsn = plain_tcp(dsn_with_host_port(database.dsn, "127.0.0.1", proxy.port))
        left = options.duration - (time.monotonic() - began) - SETUP_RESERVE
        per_variant = max(9.0, left / len(VARIANTS) - 3.0)
        phases = (per_variant * 0.15, per_variant * 0.6, per_variant * 0.25)
        results = {}
        for variant in VARIANTS:
            results[variant] = await _variant(
                variant, options.workers, dsn, redis_url, options.rate, phases, proxy, view
            )
    report = {
        "workers": options.workers,
        "phases_seconds": [round(p, 1) for p in phases],
        "breaker": BREAKER,
        "redis": redact_url(redis_url),
        "results": results,
    }
    _write(report, options.out)
    return report


def rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The summary rows: (what, shared through Redis, each on its own)."""
    fleet, local = report["results"]["fleet"], report["results"]["local"]
    return [
        ("failed calls against the dead database", str(fleet["failed"]), str(local["failed"])),
        ("calls rejected without touching it", str(fleet["rejected"]), str(local["rejected"])),
        (
            "probes per recovery period",
            str(fleet["probes_per_period"]),
            str(local["probes_per_period"]),
        ),
        ("calls served", str(fleet["ok"]), str(local["ok"])),
    ]


def _write(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "fleet-report.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# resilience demo: the fleet act ({report['workers']} workers)",
        "",
        "Each worker holds a ResilientPool on the primary database with its own breaker "
        f"({json.dumps(report['breaker'])}); the database refuses connections for the middle "
        f"{report['phases_seconds'][1]} s. Redis: {report['redis']}.",
        "",
        "| | shared through Redis | each process on its own |",
        "|---|---:|---:|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows(report)),
        "",
    ]
    (out / "fleet-report.md").write_text("\n".join(lines))
