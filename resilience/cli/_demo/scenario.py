"""The demo's scenario: set everything up, run it with breakers and without,
and stop everything it started, however it ends."""

from __future__ import annotations

import asyncio
import gc
import inspect
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from resilience import CircuitBreaker, CircuitState

from ..._redact import redact_url
from ._dsn import dsn_with_host_port, plain_tcp
from ._plan import RUN_KINDS, DemoOptions, Plan, make_plan
from .app import STATUS_PATH, build_app
from .database import Database, connect_database, seeded_schema
from .http import HttpClient
from .live import View
from .load import LoadGenerator
from .recorder import RunRecord
from .server import AppSwitch, serve

__all__ = ("Scenario", "run_scenario")

REPORT_RESERVE = 4.0
"""seconds of --duration kept for stopping everything and writing the report
(about 2 s on the CI machine; up to 3.7 s when a coverage tool traces it)."""
RUN_OVERHEAD = 0.7
"""seconds per run spent building, warming and closing the app."""
EXIT_RESERVE = 0.75
"""seconds for the interpreter's exit (threads joined; a coverage tool or a
profiler writing its data), which --duration also covers."""
MIN_RUN = 6.0
TICK = 0.25


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


async def set_mode(proxy: Any, mode: str) -> None:
    """Put a FaultProxy in ``mode`` (``pass``, ``refuse`` or ``blackhole``)."""
    method = {"pass": "pass_through", "refuse": "refuse", "blackhole": "blackhole"}[mode]
    await _maybe_await(getattr(proxy, method)())


@dataclass
class Scenario:
    """What the set-up phase started, for the runs."""

    options: DemoOptions
    view: View
    database: Database
    schema: str
    primary_proxy: Any
    replica_proxy: Any
    switch: AppSwitch
    base_url: str
    client: HttpClient
    cache_label: str
    make_cache: Callable[[str], Any]


def _cache_factory(redis_url: str | None) -> tuple[str, Callable[[str], Any]]:
    from aiocache import Cache

    if redis_url is None:
        return "in-memory (aiocache)", lambda namespace: Cache(Cache.MEMORY, namespace=namespace)

    import urllib.parse

    from aiocache.serializers import PickleSerializer

    parts = urllib.parse.urlsplit(redis_url)
    db = int(parts.path.strip("/") or 0)

    def make(namespace: str) -> Any:
        return Cache(
            Cache.REDIS,
            endpoint=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=db,
            password=parts.password,
            namespace=namespace,
            serializer=PickleSerializer(),
        )

    return f"Redis at {parts.hostname}:{parts.port or 6379}", make  # no credentials shown


async def run_scenario(
    options: DemoOptions, view: View, began: float | None = None
) -> tuple[list[RunRecord], Plan, dict[str, Any]]:
    """Set up, run both runs, tear down. Returns the records, the plan and
    the settings for the report. Cancellation (Ctrl-C) stops everything.

    ``began``: the monotonic time the demo's ``--duration`` counts from
    (default now); whatever was spent since then comes out of the runs."""
    if began is None:
        began = time.monotonic()
    records: list[RunRecord] = []
    # The report's drawing library takes a second or more to import: import
    # it now, during setup, so its cost comes out of the runs' budget rather
    # than overrunning --duration at the end.
    await asyncio.to_thread(_preload_report_libraries)
    # Its many long-lived objects would lengthen every full garbage
    # collection during the runs (tens of ms, enough to move the p99): keep
    # what exists now out of the collector's scans.
    gc.freeze()
    async with AsyncExitStack() as stack:
        if options.dsn is None:
            view.message("starting a throwaway PostgreSQL (no --dsn given)...")
        else:
            view.message(f"using PostgreSQL at {redact_url(options.dsn)}")
        database = await stack.enter_async_context(connect_database(options.dsn))
        schema = await stack.enter_async_context(seeded_schema(database.dsn, seed=options.seed))
        view.message(f"seeded schema {schema} (users, products, orders)")

        from resilience.testing import FaultProxy

        proxies = []
        for _ in range(2):
            proxy = FaultProxy(database.host, database.port)
            await _maybe_await(proxy.start())
            stack.push_async_callback(_stop, proxy)
            proxies.append(proxy)
        switch = AppSwitch()
        base_url = await stack.enter_async_context(serve(switch))
        client = HttpClient("127.0.0.1", int(base_url.rsplit(":", 1)[1]))
        stack.push_async_callback(client.aclose)
        cache_label, make_cache = _cache_factory(options.redis_url)
        view.message(
            f"app at {base_url} (circuits: {base_url}{STATUS_PATH}); "
            f"primary proxy 127.0.0.1:{proxies[0].port}, replica proxy 127.0.0.1:{proxies[1].port}"
        )
        scenario = Scenario(
            options=options,
            view=view,
            database=database,
            schema=schema,
            primary_proxy=proxies[0],
            replica_proxy=proxies[1],
            switch=switch,
            base_url=base_url,
            client=client,
            cache_label=cache_label,
            make_cache=make_cache,
        )
        setup = time.monotonic() - began
        budget = (
            options.duration - setup - REPORT_RESERVE - EXIT_RESERVE - len(RUN_KINDS) * RUN_OVERHEAD
        )
        plan = make_plan(max(MIN_RUN, budget / len(RUN_KINDS)))
        for number, kind in enumerate(RUN_KINDS, 1):
            records.append(await _run_once(scenario, plan, kind, number))
    settings = {
        "duration": options.duration,
        "setup_seconds": round(setup, 2),
        "rate": options.rate,
        "concurrency": options.concurrency,
        "seed": options.seed,
        "throwaway_postgres": database.throwaway,
        "schema": schema,
        "cache": cache_label,
        "app_url": base_url,
        "status_path": STATUS_PATH,
        "ports": {
            "app": int(base_url.rsplit(":", 1)[1]),
            "primary_proxy": proxies[0].port,
            "replica_proxy": proxies[1].port,
        },
    }
    return records, plan, settings


def _preload_report_libraries() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot


async def _stop(proxy: Any) -> None:
    await _maybe_await(proxy.stop())


async def _run_once(s: Scenario, plan: Plan, kind: str, number: int) -> RunRecord:
    resilient = kind == "breakers"
    proxy_dsn = plain_tcp(dsn_with_host_port(s.database.dsn, "127.0.0.1", s.primary_proxy.port))
    replica_dsn = plain_tcp(dsn_with_host_port(s.database.dsn, "127.0.0.1", s.replica_proxy.port))
    cache = s.make_cache(f"resilience-demo-{s.schema}-{kind}")
    app = build_app(
        resilient=resilient,
        primary_dsn=proxy_dsn,
        replica_dsn=replica_dsn,
        schema=s.schema,
        cache=cache,
        db_timeout=plan.db_timeout,
        breaker_fields=plan.breaker,
    )
    unsubscribe: list[Callable[[], None]] = []
    load_task: asyncio.Task[None] | None = None
    try:
        await set_mode(s.primary_proxy, "pass")
        s.switch.app = app.asgi
        # Open the pools' connections before the clock starts.
        for path in ("/products", "/users/1", "/orders/1"):
            await s.client.get(path)
        record = RunRecord(kind, plan)
        watched: set[str] = set()
        s.view.run_started(record, number, plan.run_seconds)
        load = LoadGenerator(
            s.client,
            record,
            rate=s.options.rate,
            concurrency=s.options.concurrency,
            client_timeout=plan.client_timeout,
            seed=s.options.seed * 1000 + number,
        )
        load_task = asyncio.create_task(load.run(plan.run_seconds, plan.drain_seconds))
        for phase in plan.phases:
            await set_mode(s.primary_proxy, phase.mode)
            s.view.phase_started(record, phase)
            while (now := record.now()) < phase.end:
                states = {}
                for breaker in app.registry.all():
                    if breaker.name not in watched:
                        watched.add(breaker.name)
                        unsubscribe.append(breaker.add_listener(_listener(record, breaker)))
                    states[breaker.name] = breaker.state.value
                record.add_states(states)
                s.view.tick(record, states, load.in_flight)
                await asyncio.sleep(min(TICK, max(0.0, phase.end - now)))
        await load_task
        s.view.run_finished(record)
        return record
    finally:
        if load_task is not None and not load_task.done():
            load_task.cancel()
            await asyncio.wait([load_task])
        for fn in unsubscribe:
            fn()
        s.switch.app = None
        await set_mode(s.primary_proxy, "pass")
        await app.close()
        await _close_cache(cache)


def _listener(record: RunRecord, breaker: CircuitBreaker) -> Callable[[Any, Any, str], None]:
    name = breaker.name

    def on_transition(old: Any, new: Any, reason: str) -> None:
        category = breaker.status()["last_failure_category"]
        if new == CircuitState.OPEN and category and category not in reason:
            reason = f"{reason} ({category})"
        record.add_transition(name, old, new, reason)

    return on_transition


async def _close_cache(cache: Any) -> None:
    # Always name the namespace: aiocache's clear() without one empties the
    # whole Redis database (FLUSHDB), which may not be the demo's.
    namespace = cache.namespace
    try:
        if namespace:
            await cache.clear(namespace=namespace)
    finally:
        await cache.close()
