"""Success-path cost of the decorators, printed side by side in one run.

    python bench/decorators.py [--calls N] [--rounds R] [--redis-url URL] [--no-redis]

Prints nanoseconds per call (median of R rounds, cases interleaved so drift
hits all alike) and the overhead over a bare ``await``. Every call succeeds:
this is what a healthy service pays. ``@fallback(cache)`` writes behind: the
call hands its value to the cache's writer and returns, so the first table
is the call path; the "+ writes" rows also count the writer's own work (the
writes are flushed inside the timing), which the loop pays but no call waits for.

With a Redis (``--redis-url``, default the local one), two more tables, from
the same run: a good call's latency percentiles with the cache 50 ms away
(a ``FaultProxy`` in latency mode in front of Redis, 25 ms each way) against
``@circuit`` alone, and the staleness of the cache after a success (how long
until the value is in Redis). Never asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import tenacity

from resilience import Registry, bulkhead, circuit, fallback, retry, timeout

Case = Callable[[int], Awaitable[Any]]


async def target(x: int) -> int:
    return x


class DictCache:
    """The smallest async cache: a dict behind async get/set."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    async def get(self, key: str) -> Any:
        return self.data.get(key)

    async def set(self, key: str, value: Any, ttl: Any = None) -> bool:
        self.data[key] = value
        return True


def build_cases(redis: Any = None) -> dict[str, Case]:
    reg = Registry()

    def guarded(name: str) -> Case:
        return circuit(name, registry=reg)(target)

    cases: dict[str, Case] = {
        "bare await": target,
        "@circuit": guarded("circuit"),
        "@retry @circuit": retry(attempts=3)(guarded("retry")),
        "@fallback() @circuit (built-in LRU)": fallback()(guarded("fallback-local")),
        "@fallback(dict cache) @circuit": fallback(DictCache())(guarded("fallback-dict")),
        "@fallback(default=None) @circuit": fallback(default=None)(guarded("fallback-default")),
        "@timeout(5)": timeout(5)(target),
        "@bulkhead(100)": bulkhead(100)(target),
        "@chain(a, b) (first answers)": _chained(),
    }
    try:
        from resilience.integrations.aiocache import memory_cache
    except ImportError:  # aiocache not installed
        pass
    else:
        cases["@fallback(aiocache memory, copy=False) @circuit"] = fallback(
            memory_cache(copy=False)
        )(guarded("fallback-aiocache"))
        cases["@fallback(aiocache memory, pickled) @circuit"] = fallback(memory_cache())(
            guarded("fallback-aiocache-pickle")
        )
    if redis is not None:
        cases["@fallback(redis_cache) @circuit"] = fallback(redis)(guarded("fallback-redis"))
    cases["tenacity AsyncRetrying (for scale)"] = _tenacity_case()
    return cases


FLUSHED = " + writes"  # the case's writes flushed inside its timing


async def _flush(fn: Case) -> None:
    control = getattr(fn, "fallback", None)
    if control is not None:
        await control.flush()


def _chained() -> Case:
    from resilience import chain

    @chain("a", "b")
    async def find(resource: str, x: int) -> int:
        return x

    return find  # type: ignore[return-value]


def _tenacity_case() -> Case:
    @tenacity.retry(stop=tenacity.stop_after_attempt(3), reraise=True)
    async def plain_tenacity(x: int) -> int:
        return x

    return plain_tenacity


async def time_case(fn: Case, calls: int) -> float:
    start = time.perf_counter()
    for i in range(calls):
        await fn(i % 100)  # 100 distinct keys for the caches
    return (time.perf_counter() - start) / calls * 1e9


async def time_case_flushed(fn: Case, calls: int) -> float:
    start = time.perf_counter()
    for i in range(calls):
        await fn(i % 100)
        if i % 100 == 99:
            await _flush(fn)  # as a loop that yields now and then would let it write
    await _flush(fn)
    return (time.perf_counter() - start) / calls * 1e9


async def measure(calls: int, rounds: int, redis: Any = None) -> list[tuple[str, float]]:
    cases = build_cases(redis)
    for fn in cases.values():  # warm up: fill caches, build keys once
        await time_case(fn, 200)
        await _flush(fn)
    with_writer = [name for name, fn in cases.items() if _has_writer(fn)]
    samples: dict[str, list[float]] = {name: [] for name in cases}
    samples.update({name + FLUSHED: [] for name in with_writer})
    for _ in range(rounds):
        for name, fn in cases.items():
            await _flush(fn)
            samples[name].append(await time_case(fn, calls))
            if name in with_writer:
                samples[name + FLUSHED].append(await time_case_flushed(fn, calls))
    return [(name, statistics.median(v)) for name, v in samples.items()]


def _has_writer(fn: Case) -> bool:
    control = getattr(fn, "fallback", None)
    return control is not None and control._policy.writer is not None


# -- a good call's latency with the cache 50 ms away ------------------------------


async def dependency(x: int) -> int:
    await asyncio.sleep(0.001)  # a 1 ms query
    return x


async def latencies(fn: Case, tasks: int, calls: int) -> list[float]:
    samples: list[float] = []

    async def worker(w: int) -> None:
        for i in range(calls):
            start = time.perf_counter()
            await fn(w * 1000 + i)  # a new key each call: every call writes
            samples.append(time.perf_counter() - start)

    await asyncio.gather(*(worker(w) for w in range(tasks)))
    return samples


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class ProxyThread:
    """A FaultProxy on an event loop of its own, in a thread, so its work
    (delaying every chunk) is not counted in the loop being measured."""

    def __init__(self, host: str, port: int) -> None:
        from resilience.testing import FaultProxy

        self.proxy = FaultProxy(host, port)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.proxy.start())
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.proxy.stop())
        self.loop.close()

    def __enter__(self) -> ProxyThread:
        self.thread.start()
        self.ready.wait(10)
        return self

    def latency(self, seconds: float) -> None:
        self.loop.call_soon_threadsafe(self.proxy.latency, seconds)

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def slow_redis_tables(redis_url: str, rounds: int) -> None:
    from resilience.integrations.aiocache import redis_cache

    host, _, port = redis_url.split("//", 1)[1].split("/", 1)[0].rpartition(":")
    namespace = f"bench-{uuid.uuid4().hex}:"
    with ProxyThread(host or "127.0.0.1", int(port or 6379)) as proxy:
        cache = redis_cache(f"redis://{proxy.proxy.address}/0", namespace=namespace)
        reg = Registry()
        baseline = circuit("p99-base", registry=reg)(dependency)
        slow = fallback(cache)(circuit("p99-fallback", registry=reg)(dependency))
        try:
            await slow(0)  # connects while the proxy passes at full speed
            await slow.fallback.flush()  # type: ignore[attr-defined]
            proxy.latency(0.025)
            samples: dict[str, list[float]] = {
                "@circuit (no cache)": [],
                "@fallback(redis 50 ms away) @circuit": [],
            }
            for _ in range(rounds):  # interleaved, so load on the machine hits both
                samples["@circuit (no cache)"] += await latencies(baseline, 20, 25)
                samples["@fallback(redis 50 ms away) @circuit"] += await latencies(slow, 20, 25)
            print(
                "\nA good call's latency, 20 concurrent callers, 1 ms dependency, Redis 50 ms away"
            )
            print(f"{'case':<40}  {'calls':>6}  {'p50 ms':>7}  {'p99 ms':>7}  {'max ms':>7}")
            p99s = []
            for name, values in samples.items():
                p99s.append(percentile(values, 0.99))
                print(
                    f"{name:<40}  {len(values):6d}  {percentile(values, 0.5) * 1e3:7.2f}  "
                    f"{p99s[-1] * 1e3:7.2f}  {max(values) * 1e3:7.2f}"
                )
            print(f"p99 with the slow cache / without: {p99s[1] / p99s[0]:.2f}")
            print(f"writer metrics: {slow.fallback.metrics()}")  # type: ignore[attr-defined]
            await slow.fallback.flush()  # type: ignore[attr-defined]

            # Staleness: from a success returning to its value being in Redis.
            lags: list[float] = []
            for i in range(20):
                start = time.perf_counter()
                await slow(1_000_000 + i)
                await slow.fallback.flush()  # type: ignore[attr-defined]
                lags.append(time.perf_counter() - start)
            refresh = slow.fallback.metrics()["refresh"]  # type: ignore[attr-defined]
            print("\nStaleness after a success (a changed value; 50 ms round trip)")
            print(
                f"until written: p50 {percentile(lags, 0.5) * 1e3:.1f} ms, "
                f"max {max(lags) * 1e3:.1f} ms; an unchanged value is rewritten every "
                f"refresh = {refresh:g} s, so a stored value is at most {refresh:g} s + "
                f"{max(lags) * 1e3:.0f} ms old after a success"
            )
        finally:
            proxy.latency(0)
            with contextlib.suppress(Exception):
                keys = await cache.client.keys(f"{namespace}*")
                if keys:
                    await cache.client.delete(*keys)
            await cache.close()


async def open_redis(url: str) -> Any:
    """A redis_cache with a namespace of its own, or None when Redis does not answer."""
    try:
        from resilience.integrations.aiocache import redis_cache
    except ImportError:
        return None
    cache = redis_cache(url, namespace=f"bench-{uuid.uuid4().hex}:")
    try:
        await cache.set("ping", 1, ttl=10)
    except Exception:
        await cache.close()
        return None
    return cache


async def run(args: argparse.Namespace) -> list[tuple[str, float]]:
    redis = None if args.no_redis else await open_redis(args.redis_url)
    try:
        return await measure(args.calls, args.rounds, redis)
    finally:
        if redis is not None:
            with contextlib.suppress(Exception):
                keys = await redis.client.keys(f"{redis.namespace}*")
                if keys:
                    await redis.client.delete(*keys)
            await redis.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (the median is shown)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis cases")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    base = dict(results)["bare await"]
    circuit_alone = dict(results)["@circuit"]
    print(f"Python {platform.python_version()} on {platform.machine()}, {sys.platform}")
    print(f"{args.calls} calls x {args.rounds} rounds, success path, median ns per call\n")
    width = max(len(name) for name, _ in results)
    print(f"{'case':<{width}}  {'ns/call':>9}  {'over bare':>10}  {'over @circuit':>13}")
    for name, ns in results:
        over_circuit = f"{ns - circuit_alone:+10.0f}" if "@circuit" in name else ""
        print(f"{name:<{width}}  {ns:9.0f}  {ns - base:+10.0f}  {over_circuit:>13}")
    if not args.no_redis and any("redis" in name for name, _ in results):
        asyncio.run(slow_redis_tables(args.redis_url, max(1, args.rounds // 2)))


if __name__ == "__main__":
    main()
