"""@bulkhead: a cap on concurrent calls, async and threaded."""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any

import pytest

from resilience import Bulkhead, BulkheadFullError, ResilienceError, bulkhead


class Gate:
    """Calls that enter and wait until released, counting the peak."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.running = 0
        self.peak = 0
        self.entered: list[int] = []
        self.arrived = asyncio.Event()

    async def __call__(self, tag: int = 0) -> int:
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.entered.append(tag)
        self.arrived.set()
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return tag


async def _settle() -> None:
    # Let every ready task run up to its next real suspension point.
    for _ in range(5):
        await asyncio.sleep(0)


async def test_calls_within_the_limit_run_concurrently() -> None:
    """max_concurrent calls run at once."""
    gate = Gate()

    @bulkhead(3)
    async def f(tag: int) -> int:
        return await gate(tag)

    tasks = [asyncio.create_task(f(i)) for i in range(3)]
    await _settle()
    assert gate.running == 3
    gate.release.set()
    assert await asyncio.gather(*tasks) == [0, 1, 2]


async def test_a_call_beyond_the_limit_is_rejected() -> None:
    """No waiting place: BulkheadFullError at once, the function not called."""
    gate = Gate()

    @bulkhead(2)
    async def f(tag: int) -> int:
        return await gate(tag)

    tasks = [asyncio.create_task(f(i)) for i in range(2)]
    await _settle()
    with pytest.raises(BulkheadFullError) as raised:
        await f(99)
    assert 99 not in gate.entered
    assert (raised.value.max_concurrent, raised.value.max_waiting) == (2, 0)
    assert raised.value.name.endswith("f")
    assert isinstance(raised.value, ResilienceError)
    gate.release.set()
    await asyncio.gather(*tasks)


async def test_waiters_run_in_arrival_order() -> None:
    """Queued callers get slots first come, first served."""
    gate = Gate()
    order: list[int] = []

    @bulkhead(1, max_waiting=3)
    async def f(tag: int) -> int:
        order.append(tag)
        return await gate(tag)

    tasks = [asyncio.create_task(f(i)) for i in range(4)]
    await _settle()
    assert order == [0]
    assert f.bulkhead.waiting == 3  # type: ignore[attr-defined]
    gate.release.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]
    assert gate.peak == 1


async def test_beyond_the_waiting_places_is_rejected() -> None:
    """max_concurrent running and max_waiting waiting: the next is refused."""
    gate = Gate()

    @bulkhead(1, max_waiting=1)
    async def f(tag: int) -> int:
        return await gate(tag)

    tasks = [asyncio.create_task(f(i)) for i in range(2)]
    await _settle()
    with pytest.raises(BulkheadFullError):
        await f(2)
    gate.release.set()
    await asyncio.gather(*tasks)


async def test_the_slot_is_freed_when_the_call_fails() -> None:
    """An exception returns the slot."""

    @bulkhead(1)
    async def f() -> None:
        raise ConnectionError

    for _ in range(3):
        with pytest.raises(ConnectionError):
            await f()
    assert f.bulkhead.active == 0  # type: ignore[attr-defined]


async def test_the_slot_is_freed_when_the_call_is_cancelled() -> None:
    """A cancelled running call returns its slot."""
    gate = Gate()

    @bulkhead(1)
    async def f() -> int:
        return await gate()

    task = asyncio.create_task(f())
    await gate.arrived.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert f.bulkhead.active == 0  # type: ignore[attr-defined]


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    """A waiter cancelled before its turn frees its place."""
    gate = Gate()

    @bulkhead(1, max_waiting=1)
    async def f(tag: int) -> int:
        return await gate(tag)

    running = asyncio.create_task(f(0))
    waiter = asyncio.create_task(f(1))
    await _settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert f.bulkhead.waiting == 0  # type: ignore[attr-defined]
    late = asyncio.create_task(f(2))  # the freed place can be taken
    await _settle()
    gate.release.set()
    assert await asyncio.gather(running, late) == [0, 2]
    assert gate.entered == [0, 2]


async def test_a_waiter_cancelled_after_its_grant_passes_the_slot_on() -> None:
    """Granted and cancelled in the same tick: the next waiter gets the slot."""
    gate = Gate()

    @bulkhead(1, max_waiting=2)
    async def f(tag: int) -> int:
        return await gate(tag)

    async def run_then_cancel_first() -> int:
        try:
            return await f(0)  # on return, the slot is granted to `first`...
        finally:
            first.cancel()  # ...which is cancelled in the same tick, before it runs

    running = asyncio.create_task(run_then_cancel_first())
    first = asyncio.create_task(f(1))
    second = asyncio.create_task(f(2))
    await _settle()
    gate.release.set()
    assert await running == 0
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second == 2
    assert gate.entered == [0, 2]
    assert f.bulkhead.active == 0  # type: ignore[attr-defined]
    assert f.bulkhead.waiting == 0  # type: ignore[attr-defined]


async def test_one_bulkhead_shared_by_two_functions() -> None:
    """Reusing a Bulkhead caps its functions together."""
    gate = Gate()
    db = bulkhead(1)

    @db
    async def read() -> int:
        return await gate()

    @db
    async def write() -> int:
        return 1

    task = asyncio.create_task(read())
    await gate.arrived.wait()
    with pytest.raises(BulkheadFullError) as raised:
        await write()
    assert raised.value.name.endswith("write")
    gate.release.set()
    await task


async def test_a_named_bulkhead_names_its_errors() -> None:
    """name= is the name in BulkheadFullError."""
    gate = Gate()
    db = bulkhead(1, name="orders-db")

    @db
    async def f() -> int:
        return await gate()

    task = asyncio.create_task(f())
    await gate.arrived.wait()
    with pytest.raises(BulkheadFullError, match="orders-db"):
        await f()
    gate.release.set()
    await task


def test_sync_functions_are_capped_across_threads() -> None:
    """Threads beyond max_concurrent with no waiting place are rejected."""
    release = threading.Event()
    inside = threading.Barrier(3)  # two callers and the test

    @bulkhead(2)
    def f() -> str:
        inside.wait(timeout=5)
        release.wait(timeout=5)
        return "done"

    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(f())) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait(timeout=5)
    with pytest.raises(BulkheadFullError):
        f()
    release.set()
    for t in threads:
        t.join(timeout=5)
    assert results == ["done", "done"]
    assert f.bulkhead.active == 0  # type: ignore[attr-defined]


def test_sync_waiters_get_the_slot_in_turn() -> None:
    """A thread waits for a slot when max_waiting allows."""
    release = threading.Event()
    started = threading.Event()

    @bulkhead(1, max_waiting=1)
    def f(tag: int) -> int:
        if tag == 0:
            started.set()
            release.wait(timeout=5)
        return tag

    results: list[int] = []
    first = threading.Thread(target=lambda: results.append(f(0)))
    first.start()
    started.wait(timeout=5)
    second = threading.Thread(target=lambda: results.append(f(1)))
    second.start()
    while f.bulkhead.waiting == 0:  # type: ignore[attr-defined]
        threading.Event().wait(0.001)
    release.set()
    first.join(timeout=5)
    second.join(timeout=5)
    assert results == [0, 1]


async def test_async_callers_and_threads_share_one_compartment() -> None:
    """A sync function in a thread and an async one share the same cap."""
    db = bulkhead(1)
    release = threading.Event()
    entered = threading.Event()

    @db
    def blocking() -> str:
        entered.set()
        release.wait(timeout=5)
        return "sync"

    @db
    async def non_blocking() -> str:
        return "async"

    worker = asyncio.create_task(asyncio.to_thread(blocking))
    await asyncio.to_thread(entered.wait, 5)
    with pytest.raises(BulkheadFullError):
        await non_blocking()
    release.set()
    assert await worker == "sync"
    assert await non_blocking() == "async"


async def test_methods_share_the_bulkhead_across_instances() -> None:
    """The cap is per decorated function, not per instance."""
    gate = Gate()

    class Repo:
        @bulkhead(1)
        async def get(self) -> int:
            return await gate()

    task = asyncio.create_task(Repo().get())
    await gate.arrived.wait()
    with pytest.raises(BulkheadFullError):
        await Repo().get()
    gate.release.set()
    await task


def test_signature_and_kind_are_preserved() -> None:
    """wrapt keeps the signature and coroutine-function-ness."""

    @bulkhead(2)
    async def fetch(customer_id: int, *, limit: int = 5) -> list[int]:
        return []

    assert list(inspect.signature(fetch).parameters) == ["customer_id", "limit"]
    assert inspect.iscoroutinefunction(fetch)
    assert isinstance(fetch.bulkhead, Bulkhead)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((0,), {}, ValueError),
        ((-1,), {}, ValueError),
        ((1, -1), {}, ValueError),
        ((1.5,), {}, TypeError),
        ((True,), {}, TypeError),
        ((1, "2"), {}, TypeError),
        ((1,), {"name": ""}, TypeError),
    ],
)
def test_bad_settings_are_refused(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    """Limits are ints in range."""
    with pytest.raises(error):
        bulkhead(*args, **kwargs)


def test_generators_are_refused() -> None:
    """Capping a generator would only cap creating it."""
    with pytest.raises(TypeError, match="generator"):

        @bulkhead(1)
        def rows() -> Any:
            yield 1


def test_repr_shows_the_occupancy() -> None:
    """repr(Bulkhead) says how full it is."""
    assert "0/3 running" in repr(Bulkhead(3, 1, name="x"))
