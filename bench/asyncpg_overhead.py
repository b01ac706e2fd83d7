"""How much ResilientPool costs, and what it saves.

1. Per-query overhead of ``ResilientPool.fetchval`` over a plain asyncpg
   pool's ``fetchval`` on the same server (``SELECT 1``), sequential and with
   concurrent callers. Rounds alternate between the two to cancel drift.
2. How long callers wait during an outage (server black-holed or refusing,
   through :class:`resilience.testing.FaultProxy`), with and without the breaker.

Run: ``python bench/asyncpg_overhead.py`` (env ``RESILIENCE_PG_DSN``, default
``postgresql://postgres@127.0.0.1:5432/test``). Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from resilience import Registry
from resilience.integrations.asyncpg import ResilientPool
from resilience.testing import FaultProxy

DSN = os.environ.get("RESILIENCE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


Timing = tuple[float, float]  # (wall seconds, client CPU seconds) per query


async def _time_sequential(fetchval: Callable[[str], Awaitable[Any]], n: int) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await fetchval("SELECT 1")
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


async def _time_concurrent(
    fetchval: Callable[[str], Awaitable[Any]], n: int, workers: int
) -> Timing:
    per_worker = n // workers

    async def worker() -> None:
        for _ in range(per_worker):
            await fetchval("SELECT 1")

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(workers)))
    done = per_worker * workers
    return (time.perf_counter() - wall) / done, (time.process_time() - cpu) / done


def _trimmed_mean(values: list[float], cut: float = 0.05) -> float:
    ordered = sorted(values)
    k = int(len(ordered) * cut)
    kept = ordered[k : len(ordered) - k] or ordered
    return sum(kept) / len(kept)


async def _interleaved(
    a: Callable[[str], Awaitable[Any]], b: Callable[[str], Awaitable[Any]], pairs: int
) -> tuple[list[Timing], list[Timing]]:
    """Time ``a`` and ``b`` one query each in turn, so drift hits both alike."""
    wall, cpu = time.perf_counter, time.process_time
    out_a: list[Timing] = []
    out_b: list[Timing] = []
    for i in range(pairs):
        for f, out in ((a, out_a), (b, out_b)) if i % 2 else ((b, out_b), (a, out_a)):
            w, c = wall(), cpu()
            await f("SELECT 1")
            out.append((wall() - w, cpu() - c))
    return out_a, out_b


def _row(label: str, plain_t: list[Timing], guarded_t: list[Timing]) -> None:
    pairs = list(zip(plain_t, guarded_t, strict=True))
    wall_a = _trimmed_mean([t[0] for t in plain_t]) * 1e6
    wall_b = _trimmed_mean([t[0] for t in guarded_t]) * 1e6
    wall_d = _trimmed_mean([g[0] - p[0] for p, g in pairs]) * 1e6
    cpu_a = _trimmed_mean([t[1] for t in plain_t]) * 1e6
    cpu_b = _trimmed_mean([t[1] for t in guarded_t]) * 1e6
    cpu_d = _trimmed_mean([g[1] - p[1] for p, g in pairs]) * 1e6
    print(
        f"{label:<24}{wall_a:>11.1f}us{wall_b:>10.1f}us{wall_d / wall_a:>8.1%}"
        f"{cpu_a:>10.1f}us{cpu_b:>9.1f}us{cpu_d:>9.2f}{cpu_d / wall_a:>10.2%}"
    )


async def overhead(rounds: int, batch: int, workers: int) -> None:
    size = max(workers, 1)
    # The same asyncpg settings on both sides (ResilientPool's defaults), so
    # the difference is the breaker and the slot bookkeeping only.
    plain = await asyncpg.create_pool(
        DSN, min_size=size, max_size=size, timeout=5.0, command_timeout=30.0
    )
    guarded = ResilientPool(DSN, name="bench", min_size=size, max_size=size, registry=Registry())
    try:
        for _ in range(500):  # warm both up: connections, statement caches
            await plain.fetchval("SELECT 1")
            await guarded.fetchval("SELECT 1")
        print(
            f"\nPer-query cost of fetchval('SELECT 1'), 5%-trimmed means. Sequential: "
            f"{rounds * batch} queries each, one of each in turn. Concurrent: {rounds} pairs "
            f"of batches of {batch}.\nWall = latency a caller sees (server included, noisy "
            "on a busy machine); CPU = this process only, where the breaker's cost lives."
        )
        print(
            f"{'mode':<24}{'wall asyncpg':>13}{'wall resil.':>12}{'wall +':>8}"
            f"{'cpu asyncpg':>12}{'cpu resil.':>11}{'cpu +us':>9}{'+cpu/wall':>10}"
        )
        _row("sequential", *await _interleaved(plain.fetchval, guarded.fetchval, rounds * batch))
        plain_t: list[Timing] = []
        guarded_t: list[Timing] = []
        for i in range(rounds):
            if i % 2:
                plain_t.append(await _time_concurrent(plain.fetchval, batch, workers))
                guarded_t.append(await _time_concurrent(guarded.fetchval, batch, workers))
            else:
                guarded_t.append(await _time_concurrent(guarded.fetchval, batch, workers))
                plain_t.append(await _time_concurrent(plain.fetchval, batch, workers))
        _row(f"{workers} concurrent callers", plain_t, guarded_t)
    finally:
        await plain.close()
        await guarded.close()


async def command_timeout_cost(rounds: int, batch: int) -> None:
    """What asyncpg's command_timeout costs by itself (a timer per query and per reset)."""
    without = await asyncpg.create_pool(DSN, min_size=1, max_size=1)
    with_timeout = await asyncpg.create_pool(DSN, min_size=1, max_size=1, command_timeout=30.0)
    try:
        for _ in range(300):
            await without.fetchval("SELECT 1")
            await with_timeout.fetchval("SELECT 1")
        diffs = []
        for i in range(rounds):
            if i % 2:
                a = (await _time_sequential(without.fetchval, batch))[1]
                b = (await _time_sequential(with_timeout.fetchval, batch))[1]
            else:
                b = (await _time_sequential(with_timeout.fetchval, batch))[1]
                a = (await _time_sequential(without.fetchval, batch))[1]
            diffs.append((b - a) * 1e6)
        print(
            "plain asyncpg, command_timeout=30 vs none (for reference, not the breaker): "
            f"{statistics.median(diffs):+.2f} us of client CPU per query"
        )
    finally:
        await without.close()
        await with_timeout.close()


async def breaker_cost(n: int) -> None:
    """The breaker alone, around a coroutine that does nothing."""
    from resilience import CircuitBreaker

    breaker = CircuitBreaker("bench-noop")

    async def noop() -> int:
        return 1

    started = time.perf_counter()
    for _ in range(n):
        await noop()
    bare = (time.perf_counter() - started) / n
    started = time.perf_counter()
    for _ in range(n):
        await breaker.call(noop)
    guarded = (time.perf_counter() - started) / n
    print(f"\nbreaker.call around a no-op coroutine: {(guarded - bare) * 1e6:.2f} us per call")


def _via(address: str) -> str:
    parts = urlsplit(DSN)
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{address}" if userinfo else address))


async def _outage_waits(
    fetchval: Callable[[str], Awaitable[Any]], calls: int, concurrent: bool
) -> list[float]:
    waits: list[float] = []

    async def one() -> None:
        started = time.perf_counter()
        try:
            await fetchval("SELECT 1")
        except Exception:
            pass
        waits.append(time.perf_counter() - started)

    if concurrent:
        await asyncio.gather(*(one() for _ in range(calls)))
    else:
        for _ in range(calls):
            await one()
    return waits


async def outage(calls: int, connect_timeout: float) -> None:
    parts = urlsplit(DSN)
    print(
        f"\nCaller waits during an outage ({calls} calls, connect_timeout={connect_timeout}s, "
        "failure_threshold=5, max_size=10)"
    )
    print(
        f"{'fault':<11}{'callers':<13}{'pool':<18}{'total s':>9}"
        f"{'mean ms':>10}{'p99 ms':>10}{'max ms':>10}"
    )
    for fault in ("blackhole", "refuse"):
        for concurrent in (False, True):
            for label in ("asyncpg", "ResilientPool"):
                async with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
                    dsn = _via(proxy.address)
                    getattr(proxy, fault)()
                    if label == "asyncpg":
                        pool: Any = await asyncpg.create_pool(
                            dsn, min_size=0, max_size=10, timeout=connect_timeout
                        )
                    else:
                        pool = ResilientPool(
                            dsn,
                            name="outage",
                            max_size=10,
                            connect_timeout=connect_timeout,
                            registry=Registry(),
                        )
                    try:
                        waits = await _outage_waits(pool.fetchval, calls, concurrent)
                    finally:
                        proxy.pass_through()
                        pool.terminate()
                waits.sort()
                p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
                print(
                    f"{fault:<11}{'concurrent' if concurrent else 'one by one':<13}{label:<18}"
                    f"{sum(waits):>9.2f}{statistics.mean(waits) * 1e3:>10.1f}"
                    f"{p99 * 1e3:>10.1f}{waits[-1] * 1e3:>10.1f}"
                )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--outage-calls", type=int, default=50)
    parser.add_argument("--connect-timeout", type=float, default=0.5)
    args = parser.parse_args()
    await breaker_cost(200_000)
    await overhead(args.rounds, args.batch, args.workers)
    await command_timeout_cost(args.rounds, args.batch)
    await outage(args.outage_calls, args.connect_timeout)


if __name__ == "__main__":
    asyncio.run(main())
