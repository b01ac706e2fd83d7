"""Success-path cost of the decorators, printed side by side in one run.

    python bench/decorators.py [--calls N] [--rounds R]

Prints nanoseconds per call (median of R rounds, cases interleaved so drift
hits all alike) and the overhead over a bare ``await``. Every call succeeds:
this is what a healthy service pays. ``@fallback(cache)`` writes every success
through, so its cost includes one cache write (the in-process caches here;
a Redis cache adds a round trip). Never asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
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


def build_cases() -> dict[str, Case]:
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
    cases["tenacity AsyncRetrying (for scale)"] = _tenacity_case()
    return cases


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


async def measure(calls: int, rounds: int) -> list[tuple[str, float]]:
    cases = build_cases()
    for fn in cases.values():  # warm up: fill caches, build keys once
        await time_case(fn, 200)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            samples[name].append(await time_case(fn, calls))
    return [(name, statistics.median(v)) for name, v in samples.items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (the median is shown)")
    args = parser.parse_args(argv)
    results = asyncio.run(measure(args.calls, args.rounds))
    base = dict(results)["bare await"]
    circuit_alone = dict(results)["@circuit"]
    print(f"Python {platform.python_version()} on {platform.machine()}, {sys.platform}")
    print(f"{args.calls} calls x {args.rounds} rounds, success path, median ns per call\n")
    width = max(len(name) for name, _ in results)
    print(f"{'case':<{width}}  {'ns/call':>9}  {'over bare':>10}  {'over @circuit':>13}")
    for name, ns in results:
        over_circuit = f"{ns - circuit_alone:+10.0f}" if "@circuit" in name else ""
        print(f"{name:<{width}}  {ns:9.0f}  {ns - base:+10.0f}  {over_circuit:>13}")


if __name__ == "__main__":
    main()
