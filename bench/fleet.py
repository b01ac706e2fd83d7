"""Breakers shared through Redis (RedisStore) side by side with LocalStore, one run.

    python bench/fleet.py [--calls N] [--processes P] [--rounds R]

Starts a private redis-server (ThrowawayRedis, so INFO commandstats counts
only this run) and prints:

- the closed path and a rejection, ns per call, with LocalStore and with
  RedisStore, and the Redis commands sent per call (commandstats deltas);
- how long a trip takes to be seen by P other "processes" (stores with their
  own connections and threads in this process; p50/p99 over R trips);
- dependency calls per half-open round, fleet-wide, over R rounds;
- the hot path with Redis refusing connections (FaultProxy), and whether
  local trips still happen;
- script calls per store per refresh_interval in steady state.

Never asserted in tests. The machine is usually shared: compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

import redis

from resilience import CircuitOpenError, CircuitState, Registry
from resilience.integrations.redis import RedisStore
from resilience.testing import FaultProxy, ThrowawayRedis


class Down(ConnectionError):
    pass


async def ok(x: int) -> int:
    return x


def commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_"))


async def per_call(fn: Any, calls: int, rejects: bool = False) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for i in range(calls):
            if rejects:
                try:
                    await fn(i)
                except CircuitOpenError:
                    pass
            else:
                await fn(i)
        best = min(best, (time.perf_counter() - start) / calls * 1e9)
    return best


async def hot_path(url: str, client: redis.Redis, calls: int) -> list[tuple[str, float, float]]:
    rows = []
    for label, store in (("LocalStore", None), ("RedisStore", RedisStore(url, prefix=_p()))):
        reg = Registry(store=store) if store is not None else Registry()
        guarded = reg.get_or_create("hot", failure_threshold=1, recovery_timeout=3600)(ok)
        for i in range(200):  # settle the window
            await guarded(i)
        before = commands(client)
        closed = await per_call(guarded, calls)
        sent = (commands(client) - before - 1) / (5 * calls)  # -1: the INFO itself
        rows.append((f"{label}: closed call", closed, max(sent, 0.0)))
        permit = reg.get_or_create("hot").try_acquire()
        assert permit is not None
        permit.failure(Down())
        await asyncio.sleep(0.2)  # the store's one proposal
        before = commands(client)
        rejected = await per_call(guarded, calls, rejects=True)
        sent = (commands(client) - before - 1) / (5 * calls)
        rows.append((f"{label}: rejection", rejected, max(sent, 0.0)))
        if store is not None:
            store.close()
    return rows


def _p() -> str:
    return f"bench-{uuid.uuid4().hex[:8]}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def propagation(url: str, processes: int, rounds: int) -> list[float]:
    """Seconds from a trip to the moment every other store's breaker is OPEN."""
    prefix = _p()
    stores = [RedisStore(url, prefix=prefix, refresh_interval=1.0) for _ in range(processes + 1)]
    seen: list[float] = []
    try:
        for r in range(rounds):
            name = f"trip-{r}"
            breakers = [Registry(store=s).get_or_create(name, failure_threshold=1) for s in stores]
            await asyncio.sleep(0.3 if r == 0 else 0.05)  # every store subscribed
            start = time.perf_counter()
            permit = breakers[0].try_acquire()
            assert permit is not None
            permit.failure(Down())
            while not all(b._m.state is CircuitState.OPEN for b in breakers[1:]):  # noqa: ASYNC110
                await asyncio.sleep(0.0002)
            seen.append(time.perf_counter() - start)
    finally:
        for s in stores:
            s.close()
    return seen


async def half_open_rounds(url: str, processes: int, rounds: int) -> list[int]:
    """Dependency calls per half-open round, fleet-wide (the dependency stays down)."""
    prefix = _p()
    stores = [RedisStore(url, prefix=prefix, refresh_interval=1.0) for _ in range(processes)]
    settings = {"failure_threshold": 1, "recovery_timeout": 0.2, "half_open_max_calls": 1,
                "success_threshold": 1}  # fmt: skip
    breakers = [Registry(store=s).get_or_create("db", **settings) for s in stores]
    probes: dict[int, int] = {}

    def dependency_for(store: RedisStore, breaker: Any) -> Any:
        async def dependency() -> int:
            if breaker._m.state is CircuitState.HALF_OPEN:  # a probe
                epoch = store._rows["db"].epoch
                probes[epoch] = probes.get(epoch, 0) + 1
            raise Down()

        return dependency

    calls = [dependency_for(s, b) for s, b in zip(stores, breakers, strict=True)]
    await asyncio.sleep(0.5)  # every store subscribed
    permit = breakers[0].try_acquire()
    assert permit is not None
    permit.failure(Down())
    deadline = time.monotonic() + rounds * 2.0 + 10
    try:
        while len(probes) < rounds and time.monotonic() < deadline:
            for b, call in zip(breakers, calls, strict=True):
                for _ in range(5):  # several callers per process
                    try:
                        await b.call(call)
                    except (CircuitOpenError, Down):
                        pass
            await asyncio.sleep(0.002)
    finally:
        for s in stores:
            s.close()
    return list(probes.values())


async def redis_down(url: str, calls: int) -> tuple[float, float, bool]:
    host, port = url.removeprefix("redis://").split("/")[0].split(":")
    async with FaultProxy(host, int(port)) as proxy:
        store = RedisStore(f"redis://{proxy.address}/0", prefix=_p(), refresh_interval=0.5)
        reg = Registry(store=store)
        guarded = reg.get_or_create("down", failure_threshold=3, recovery_timeout=3600)(ok)
        for i in range(200):
            await guarded(i)
        await asyncio.sleep(0.5)  # the store's threads settled
        up = await per_call(guarded, calls)
        proxy.refuse()
        store._post_reconcile()
        while store.healthy:  # noqa: ASYNC110 - polling the store's flag
            await asyncio.sleep(0.01)
        down = await per_call(guarded, calls)
        breaker = reg.get_or_create("down")
        for _ in range(3):
            permit = breaker.try_acquire()
            assert permit is not None
            permit.failure(Down())
        tripped = breaker.state is CircuitState.OPEN
        store.close()
    return up, down, tripped


async def steady_scripts(url: str, seconds: float) -> float:
    """Script calls per store per refresh_interval with nothing happening."""
    store = RedisStore(url, prefix=_p(), refresh_interval=0.5)
    reg = Registry(store=store)
    for i in range(10):
        reg.get_or_create(f"idle-{i}")
    before = store.script_calls
    await asyncio.sleep(seconds)
    rate = (store.script_calls - before) / (seconds / 0.5)
    store.close()
    return rate


async def main(args: argparse.Namespace) -> None:
    with ThrowawayRedis() as server:
        url = server.url
        client = redis.Redis.from_url(url)
        print(f"private redis-server at {url}; the machine may be shared: compare rows\n")
        print(f"{'hot path':<34} {'ns/call':>9} {'Redis commands/call':>21}")
        print("-" * 66)
        for label, ns, sent in await hot_path(url, client, args.calls):
            print(f"{label:<34} {ns:9.0f} {sent:21.3f}")
        seen = await propagation(url, args.processes, args.rounds)
        print(f"\ntrip seen by {args.processes} other stores, {args.rounds} trips: "
              f"p50 {statistics.median(seen) * 1000:.1f} ms, "
              f"p99 {percentile(seen, 0.99) * 1000:.1f} ms")  # fmt: skip
        rounds = await half_open_rounds(url, args.processes, args.rounds)
        exact = sum(1 for r in rounds if r == 1)
        print(f"dependency calls per half-open round ({args.processes} processes x 5 callers): "
              f"{exact} of {len(rounds)} rounds made exactly 1 (half_open_max_calls=1); "
              f"counts {sorted(set(rounds))}")  # fmt: skip
        up, down, tripped = await redis_down(url, args.calls)
        print(f"hot path, Redis up {up:.0f} ns, Redis refusing {down:.0f} ns "
              f"({down / up:.2f}x); local trip with Redis down: {tripped}")  # fmt: skip
        rate = await steady_scripts(url, 3.0)
        print(f"script calls per store per refresh_interval, steady state: {rate:.2f}")
        client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=30)
    asyncio.run(main(parser.parse_args()))
