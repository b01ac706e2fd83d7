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
import statistics
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


_monotonic = time.monotonic


async def hand_timed_wrapper(x: int) -> int:
    """The hand-written wrapper reading the clock before and after the call:
    what any slow-call rule must do, before deciding anything."""
    start = _monotonic()
    try:
        result = await target(x)
    except Exception:
        raise
    if _monotonic() - start > 1.0:
        raise AssertionError("slow")
    return result


def _wrapt_subclasses() -> dict[str, Case]:
    """FunctionWrapper subclasses with their own ``__call__``, which the issue
    says cost about 200 ns where the goal was set, without saying which
    shape: the three plausible ones, from the most to the least work."""
    fn = target
    wrapper = lambda wrapped, instance, args, kwargs: None  # noqa: E731 - never called

    class AsyncCall(wrapt.FunctionWrapper):  # type: ignore[misc]
        # One coroutine level of its own, like any guard that awaits.
        async def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return await self.__wrapped__(*args, **kwargs)

    class SyncCall(wrapt.FunctionWrapper):  # type: ignore[misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return self.__wrapped__(*args, **kwargs)

    class ClosureCall(wrapt.FunctionWrapper):  # type: ignore[misc]
        # The callee from a closure, not through the proxy: the cheapest.
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

    shapes = {
        "async __call__ awaiting __wrapped__": AsyncCall,
        "__call__ returning __wrapped__(...)": SyncCall,
        "__call__ calling a closure": ClosureCall,
    }
    return {f"yardstick: wrapt subclass, {name}": c(target, wrapper) for name, c in shapes.items()}


def _wrapt_decorated() -> Case:
    @wrapt.decorator  # type: ignore[misc]
    async def passthrough(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        return await wrapped(*args, **kwargs)

    return passthrough(target)  # type: ignore[no-any-return]


class _Lane:
    __slots__ = ("fast", "left", "valid")


def _count_floor() -> Case:
    """What counting a success without the lock needs at the least, with no
    breaker behind it: the guard's untimed lane minus its latency sample (a
    token read before the call, the same token checked after it, a counter
    counted down). The floor under the closed-path budget."""
    lane = _Lane()
    lane.fast = lane.valid = object()
    lane.left = 1 << 20

    def make(fn: Callable[[int], Awaitable[int]] = target) -> Case:
        async def count_floor(x: int) -> int:
            t = lane.fast
            if t is not None:
                try:
                    result = await fn(x)
                except BaseException:
                    raise
                if lane.valid is t:
                    n = lane.left - 1
                    lane.left = n
                    if n:
                        return result
                    lane.left = 1 << 20
                    return result
                return result
            raise AssertionError("no lane")

        return count_floor

    return make()


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


def _raise_any() -> Case:
    """What raising any exception from a coroutine costs: the yardstick of the
    raising-rejection budget."""

    async def raise_any(x: int) -> None:
        raise ValueError(x)

    return raise_any


def build_cases() -> dict[str, tuple[Case, bool]]:
    """Ours first, then the peers that are installed."""
    reg = Registry()
    cases: dict[str, tuple[Case, bool]] = {
        "bare await": (target, False),
        "hand-written async wrapper": (hand_wrapper, False),
        "floor: hand-written wrapper + two clock reads": (hand_timed_wrapper, False),
        "floor: hand-written wrapper + a lock-free count": (_count_floor(), False),
        # The yardsticks the speed goal was set against (issue 2): what wrapt
        # itself costs on this machine.
        **{name: (fn, False) for name, fn in _wrapt_subclasses().items()},
        "yardstick: plain wrapt.decorator": (_wrapt_decorated(), False),
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
    cases["floor: raise any exception (no breaker)"] = (_raise_any(), True)
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


# What the issue quotes, as it cost where the goal was set (ns over a bare
# await; a range's middle).
ISSUE_FIGURES = {
    "yardstick: plain wrapt.decorator": 500,
    "yardstick: wrapt subclass, async __call__ awaiting __wrapped__": 200,
    "yardstick: wrapt subclass, __call__ returning __wrapped__(...)": 200,
    "yardstick: wrapt subclass, __call__ calling a closure": 200,
    "peer: circuitbreaker (closed)": 580,
    "peer: purgatory (closed)": 580,
}
GOALS = (
    ("@circuit (count window)", 300),
    ("@circuit (time window + slow calls)", 300),
    ("rejection when open (raises CircuitOpenError)", 600),
)


def print_goal(over: dict[str, float]) -> None:
    """Each goal case against the goal as written ("on CPython 3.11 here"),
    and against the goal scaled by how this machine compares with the one
    the goal was set on: by the median of the issue's own figures, and by
    the one that makes this machine look fastest (the strictest reading)."""
    factors = {name: over[name] / figure for name, figure in ISSUE_FIGURES.items() if name in over}
    print("\nThis machine against the one the goal was set on (here / the issue's figure):")
    for name, factor in factors.items():
        print(f"  {name:<64} {over[name]:+6.0f} / {ISSUE_FIGURES[name]:4d} = {factor:4.2f}")
    ordered = sorted(factors.values())
    median = statistics.median(ordered)
    strictest = ordered[0]
    print(f"\nGoal (issue 2): overhead / goal, as written; scaled by the median ({median:.2f})")
    print(f"and by the strictest ({strictest:.2f}) of those factors:")
    for name, goal in GOALS:
        ns = over[name]
        print(
            f"  {name:<48} {ns:+5.0f} ns: {ns / goal:4.2f} x {goal} ns, "
            f"{ns / (goal * median):4.2f} x scaled, {ns / (goal * strictest):4.2f} x strictest"
        )


# Issue 11's budget: (case, yardstick, the most the ratio may be).
BUDGET = (
    ("@circuit (count window)", "hand-written async wrapper", 1.6),
    ("@circuit (count window)", "best peer (closed)", 0.35),
    (
        "rejection when open (raises CircuitOpenError)",
        "floor: raise any exception (no breaker)",
        2.0,
    ),
    ("@circuit (time window + slow calls)", "hand-written async wrapper", 2.2),
)


def print_budget(over: dict[str, float], ns: dict[str, float]) -> None:
    """Each budget line: the case's overhead over the yardstick's, as a ratio.

    Overheads are over a bare ``await``, except the raise floor, which is a
    whole call (a rejection and a raise are compared as whole calls)."""
    peers = [v for k, v in over.items() if k.startswith("peer:") and k.endswith("(closed)")]
    if peers:
        over = {**over, "best peer (closed)": min(peers)}
    print("\nBudget (issue 11): ratio to the yardstick, and the most it may be:")
    for case, yardstick, limit in BUDGET:
        if case not in over or yardstick not in over:
            print(
                f"  {case} / {yardstick}: not measured (install the peers: pip install -e .[bench])"
            )
            continue
        if yardstick.startswith("floor:"):
            ratio = ns[case] / ns[yardstick]
        else:
            ratio = over[case] / over[yardstick]
        verdict = "ok" if ratio <= limit else "OVER"
        print(f"  {case:<46} / {yardstick:<40} {ratio:5.2f} <= {limit:4.2f} {verdict}")
    floor = "floor: hand-written wrapper + two clock reads"
    hand = "hand-written async wrapper"
    counted = "floor: hand-written wrapper + a lock-free count"
    if counted in over and hand in over:
        # Any breaker that counts successes without a lock does at least this.
        print(
            f"  (a lock-free count alone: {over[counted] / over[hand]:4.2f} x the hand-written "
            f"wrapper; the count window over it: "
            f"{over['@circuit (count window)'] - over[counted]:+.0f} ns)"
        )
    if floor in over and hand in over:
        # A slow-call rule needs each call's duration: two clock reads, which
        # no breaker can skip. Where they alone pass the 2.2x line, the line
        # cannot be met; the breaker's own share is what is left above them.
        print(
            f"  (two clock reads alone: {over[floor] / over[hand]:4.2f} x the hand-written "
            f"wrapper; time window + slow calls over them: "
            f"{over['@circuit (time window + slow calls)'] - over[floor]:+.0f} ns)"
        )


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
    print_goal(over)
    print_budget(over, dict(rows))
    print()
    print(f"{'memory':<52} {'bytes':>9}")
    print("-" * 72)
    print(f"{'per breaker, fresh (10,000 CircuitBreaker)':<52} {bytes_per_breaker():9.0f}")
    print(f"{'per breaker, after calls and a failure':<52} "
          f"{bytes_per_breaker(exercised=True):9.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
