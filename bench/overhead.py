"""Hot-path cost of the breaker, printed side by side with baselines in one run.

    python bench/overhead.py [--calls N] [--rounds R]

Prints nanoseconds per call (median of R rounds) and the overhead over a bare
``await``; then bytes per breaker. Peers are measured too when installed
(pybreaker, purgatory, circuitbreaker, aiobreaker). Never asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

from resilience import CircuitBreaker, CircuitOpenError, Registry, circuit

Case = Callable[[int], Awaitable[Any]]


async def target(x: int) -> int:
    return x


async def hand_wrapper(x: int) -> int:
    try:
        result = await target(x)
    except Exception:
        raise
    return result


def build_cases() -> dict[str, tuple[Case, bool]]:
    reg = Registry()
    cases: dict[str, tuple[Case, bool]] = {
        "bare await": (target, False),
        "hand-written async wrapper": (hand_wrapper, False),
        "@circuit (count window)": (circuit("count", registry=reg)(target), False),
        "@circuit (time window + slow calls)": (
            circuit("time", registry=reg, window_duration=60, slow_call_duration=1.0)(target),
            False,
        ),
    }
    plain = reg.get_or_create("call")
    cases["breaker.call(fn, x)"] = (lambda x: plain.call(target, x), False)
    opened = reg.get_or_create("open", recovery_timeout=3600)
    opened.force_open()
    cases["rejection when open (raises CircuitOpenError)"] = (
        circuit("open", registry=reg)(target),
        True,
    )

    async def try_acquire_rejected(x: int, b: CircuitBreaker = opened) -> None:
        if b.try_acquire() is None:
            return None
        raise AssertionError("admitted")

    cases["rejection via try_acquire() (no exception)"] = (try_acquire_rejected, False)
    cases.update(peer_cases())
    return cases


def peer_cases() -> dict[str, tuple[Case, bool]]:
    peers: dict[str, tuple[Case, bool]] = {}
    if importlib.util.find_spec("circuitbreaker"):
        import circuitbreaker

        peers["peer: circuitbreaker 2.x"] = (circuitbreaker.circuit(target), False)
    if importlib.util.find_spec("purgatory"):
        from purgatory import AsyncCircuitBreakerFactory

        factory = AsyncCircuitBreakerFactory()
        peers["peer: purgatory"] = (factory("purgatory")(target), False)
    if importlib.util.find_spec("aiobreaker"):
        import aiobreaker

        peers["peer: aiobreaker"] = (aiobreaker.CircuitBreaker()(target), False)
    if importlib.util.find_spec("pybreaker"):
        import pybreaker

        sync_breaker = pybreaker.CircuitBreaker()

        async def via_pybreaker(x: int) -> int:
            return await sync_breaker.call_async(target, x)  # type: ignore[no-any-return]

        if hasattr(sync_breaker, "call_async"):
            peers["peer: pybreaker (call_async, needs tornado)"] = (via_pybreaker, False)
    return peers


async def time_case(fn: Case, rejects: bool, calls: int) -> float:
    if rejects:
        start = time.perf_counter()
        for i in range(calls):
            try:
                await fn(i)
            except CircuitOpenError:
                pass
        return (time.perf_counter() - start) / calls * 1e9
    start = time.perf_counter()
    for i in range(calls):
        await fn(i)
    return (time.perf_counter() - start) / calls * 1e9


async def measure(calls: int, rounds: int) -> list[tuple[str, float]]:
    cases = build_cases()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (fn, rejects) in cases.items():  # interleaved, so drift hits all alike
            try:
                samples[name].append(await time_case(fn, rejects, calls))
            except Exception as exc:  # a peer that cannot run here
                print(f"  ({name} skipped: {type(exc).__name__}: {exc})", file=sys.stderr)
                samples[name] = []
                cases[name] = (target, False)
    return [(name, statistics.median(v)) for name, v in samples.items() if v]


def bytes_per_breaker(n: int = 10_000, exercised: bool = False) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    breakers = [CircuitBreaker(f"b{i}") for i in range(n)]
    if exercised:
        for b in breakers:  # fill the window and the latency histogram
            for _ in range(3):
                b.call_sync(int)
            permit = b.try_acquire()
            assert permit is not None
            permit.failure(ConnectionError())
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del breakers
    return (after - before) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"CPython {platform.python_version()} on {platform.machine()}, "
          f"{args.calls} calls x {args.rounds} rounds (median)\n")  # fmt: skip
    rows = asyncio.run(measure(args.calls, args.rounds))
    base = dict(rows)["bare await"]
    print(f"{'case':<52} {'ns/call':>9} {'overhead':>9}")
    print("-" * 72)
    for name, ns in rows:
        print(f"{name:<52} {ns:9.0f} {ns - base:+9.0f}")
    print()
    print(f"{'memory':<52} {'bytes':>9}")
    print("-" * 72)
    print(f"{'per breaker, fresh (10,000 CircuitBreaker)':<52} {bytes_per_breaker():9.0f}")
    print(f"{'per breaker, after calls and a failure':<52} "
          f"{bytes_per_breaker(exercised=True):9.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
