"""Hot-path cost of the breaker, printed side by side with baselines in one run.

    python bench/overhead.py [--calls N] [--rounds R]

Prints nanoseconds per call (the best of R interleaved rounds, as ``timeit``
does: on a shared machine the slower rounds measure the neighbours, not the
code) and the overhead over a bare ``await``; then bytes per breaker. Peers
are measured too when installed (pybreaker, purgatory, circuitbreaker,
aiobreaker). Never asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import platform
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import wrapt

from resilience import CircuitBreaker, CircuitOpenError, CircuitState, Registry, circuit

Case = Callable[[int], Awaitable[Any]]


async def target(x: int) -> int:
    return x


async def hand_wrapper(x: int) -> int:
    try:
        result = await target(x)
    except Exception:
        raise
    return result


def _wrapt_subclass() -> Case:
    # A FunctionWrapper subclass with its own ``__call__`` that adds one
    # coroutine level, as the issue's advice ("one coroutine level per call,
    # not two") implies: on the machine the goal was set on, about 200 ns.
    class Passthrough(wrapt.FunctionWrapper):  # type: ignore[misc]
        async def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return await self.__wrapped__(*args, **kwargs)

    return Passthrough(target, lambda wrapped, instance, args, kwargs: None)  # type: ignore[no-any-return]


def _wrapt_decorated() -> Case:
    @wrapt.decorator  # type: ignore[misc]
    async def passthrough(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        return await wrapped(*args, **kwargs)

    return passthrough(target)  # type: ignore[no-any-return]


def _raise_floor() -> Case:
    """What any raising rejection costs before deciding anything: one clock
    read and one error built the way the breaker builds it (everything
    pre-bound, as the breaker's guard has it)."""
    now, new, error, state = (
        time.monotonic,
        BaseException.__new__,
        CircuitOpenError,
        CircuitState.OPEN,
    )

    async def raise_floor(x: int) -> None:
        t = now()
        raise new(error, "floor", state, 1.0 - t, None)

    return raise_floor


def build_cases() -> dict[str, tuple[Case, bool]]:
    """Ours first, then the peers that are installed."""
    reg = Registry()
    cases: dict[str, tuple[Case, bool]] = {
        "bare await": (target, False),
        "hand-written async wrapper": (hand_wrapper, False),
        # The yardsticks the speed goal was set against (issue 2): what wrapt
        # itself costs on this machine.
        "calibration: wrapt FunctionWrapper subclass, async __call__": (_wrapt_subclass(), False),
        "calibration: plain wrapt.decorator": (_wrapt_decorated(), False),
        "@circuit (count window)": (circuit("count", registry=reg)(target), False),
        "@circuit (time window + slow calls)": (
            circuit("time", registry=reg, window_duration=60, slow_call_duration=1.0)(target),
            False,
        ),
    }

    class Repository:
        @circuit("method", registry=reg)
        async def get(self, x: int) -> int:
            return x

    cases["@circuit on a method (count window)"] = (Repository().get, False)
    plain = reg.get_or_create("call")
    cases["breaker.call(fn, x)"] = (lambda x: plain.call(target, x), False)
    # Tripped by a failure (OPEN, an hour to go), as in an outage.
    opened = reg.get_or_create("open", failure_threshold=1, recovery_timeout=3600)
    permit = opened.try_acquire()
    assert permit is not None
    permit.failure(ConnectionError("down"))
    assert opened.state is CircuitState.OPEN
    cases["rejection when open (raises CircuitOpenError)"] = (
        circuit("open", registry=reg)(target),
        True,
    )

    async def try_acquire_rejected(x: int, b: CircuitBreaker = opened) -> None:
        if b.try_acquire() is None:
            return None
        raise AssertionError("admitted")

    cases["rejection via try_acquire() (no exception)"] = (try_acquire_rejected, False)
    cases["floor: raise a CircuitOpenError after a clock read (no breaker)"] = (
        _raise_floor(),
        True,
    )
    cases.update(peer_cases())
    return cases


async def failing(x: int) -> int:
    raise ConnectionError("down")


async def _open_peer(fn: Case) -> None:
    for _ in range(3):
        try:
            await fn(0)
        except Exception:
            pass


def peer_cases() -> dict[str, tuple[Case, bool]]:
    """Peers, when installed: the closed path, and a rejection once opened."""
    peers: dict[str, tuple[Case, bool]] = {}
    opened: list[Case] = []
    if importlib.util.find_spec("circuitbreaker"):
        import circuitbreaker

        peers["peer: circuitbreaker (closed)"] = (circuitbreaker.circuit(target), False)
        cb = circuitbreaker.circuit(failure_threshold=1, recovery_timeout=3600)(failing)
        opened.append(cb)
        peers["peer: circuitbreaker (rejection)"] = (cb, True)
    if importlib.util.find_spec("purgatory"):
        from purgatory import AsyncCircuitBreakerFactory

        factory = AsyncCircuitBreakerFactory(default_threshold=1, default_ttl=3600)
        peers["peer: purgatory (closed)"] = (factory("purgatory-ok")(target), False)
        pg = factory("purgatory-down")(failing)
        opened.append(pg)
        peers["peer: purgatory (rejection)"] = (pg, True)
    if importlib.util.find_spec("aiobreaker"):
        import datetime

        import aiobreaker

        peers["peer: aiobreaker (closed)"] = (aiobreaker.CircuitBreaker()(target), False)
        ab = aiobreaker.CircuitBreaker(fail_max=1, timeout_duration=datetime.timedelta(hours=1))(
            failing
        )
        opened.append(ab)
        peers["peer: aiobreaker (rejection)"] = (ab, True)
    if importlib.util.find_spec("pybreaker"):
        import pybreaker

        sync_breaker = pybreaker.CircuitBreaker()

        async def via_pybreaker(x: int) -> int:
            # pybreaker on an async def guards only creating the coroutine.
            return await sync_breaker.call(target, x)  # type: ignore[no-any-return]

        peers["peer: pybreaker (guards coroutine creation only)"] = (via_pybreaker, False)

    PEERS_TO_OPEN.extend(opened)
    return peers


PEERS_TO_OPEN: list[Case] = []


async def time_case(fn: Case, rejects: bool, calls: int) -> float:
    if rejects:
        start = time.perf_counter()
        for i in range(calls):
            try:
                await fn(i)
            except Exception:  # CircuitOpenError, or a peer's own rejection
                pass
        return (time.perf_counter() - start) / calls * 1e9
    start = time.perf_counter()
    for i in range(calls):
        await fn(i)
    return (time.perf_counter() - start) / calls * 1e9


async def measure(calls: int, rounds: int) -> list[tuple[str, float]]:
    cases = build_cases()
    for fn in PEERS_TO_OPEN:
        await _open_peer(fn)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (fn, rejects) in list(cases.items()):  # interleaved: drift hits all alike
            try:
                samples[name].append(await time_case(fn, rejects, calls))
            except Exception as exc:  # a peer that cannot run here
                print(f"  ({name} skipped: {type(exc).__name__}: {exc})", file=sys.stderr)
                del cases[name], samples[name]
    return [(name, min(v)) for name, v in samples.items() if v]


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
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print(f"CPython {platform.python_version()} on {platform.machine()}, "
          f"{args.calls} calls x {args.rounds} rounds (best round)\n")  # fmt: skip
    rows = asyncio.run(measure(args.calls, args.rounds))
    base = dict(rows)["bare await"]
    print(f"{'case':<66} {'ns/call':>9} {'overhead':>9}")
    print("-" * 86)
    for name, ns in rows:
        print(f"{name:<66} {ns:9.0f} {ns - base:+9.0f}")
    over = {name: ns - base for name, ns in rows}
    # What the issue quotes for the yardsticks, on the machine its goals were
    # set on: their ratio here says how this machine compares.
    factor = (
        over["calibration: wrapt FunctionWrapper subclass, async __call__"] / 200
        + over["calibration: plain wrapt.decorator"] / 500
    ) / 2
    print()
    print("Goal (issue 2). The yardsticks (a wrapt subclass with an async __call__,")
    print("~200 ns where the goal was set, and wrapt.decorator, ~500 ns) put this")
    print(f"machine at {factor:.2f}x that one; 'scaled' is the goal times that.")
    for name, goal in (
        ("@circuit (count window)", 300),
        ("@circuit (time window + slow calls)", 300),
        ("rejection when open (raises CircuitOpenError)", 600),
    ):
        print(
            f"  {name:<48} {over[name]:+5.0f} ns = {over[name] / goal:4.2f} x goal "
            f"({goal} ns), {over[name] / (goal * factor):4.2f} x scaled"
        )
    print()
    print(f"{'memory':<52} {'bytes':>9}")
    print("-" * 72)
    print(f"{'per breaker, fresh (10,000 CircuitBreaker)':<52} {bytes_per_breaker():9.0f}")
    print(f"{'per breaker, after calls and a failure':<52} "
          f"{bytes_per_breaker(exercised=True):9.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
