"""RedisStore against a real Redis: breakers of several processes (each a
Registry with its own store, its own connections and threads; one test
spawns real processes) share their transitions.

Every wait is on a condition with a deadline; nothing sleeps to let time pass
for an assertion. Keys live under a fresh prefix per test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

redis = pytest.importorskip("redis")

from resilience import CircuitBreaker, CircuitOpenError, CircuitState, Registry  # noqa: E402
from resilience.integrations.redis import RedisStore  # noqa: E402
from resilience.testing import FaultProxy  # noqa: E402

WAIT = 10.0  # the longest any condition may take on a loaded machine


class Down(ConnectionError):
    """The dependency is down."""


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A fresh key prefix; its keys are deleted afterwards."""
    name = f"rt-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def fleet(redis_url: str, prefix: str) -> Iterator[Callable[..., Registry]]:
    """Make 'processes': registries sharing through stores of their own."""
    stores: list[RedisStore] = []

    def make(url: str | None = None, **options: Any) -> Registry:
        options.setdefault("refresh_interval", 0.5)
        store = RedisStore(url or redis_url, prefix=prefix, **options)
        stores.append(store)
        return Registry(store=store)

    yield make
    for store in stores:
        store.close()


async def until(condition: Callable[[], bool], what: str, limit: float = WAIT) -> None:
    """Wait for ``condition()`` to hold (polling), or fail naming ``what``."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        await asyncio.sleep(0.01)


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.config.failure_threshold):
        permit = breaker.try_acquire()
        assert permit is not None
        permit.failure(Down())


SETTINGS: dict[str, Any] = {
    "failure_threshold": 2,
    "recovery_timeout": 0.4,
    "success_threshold": 1,
    "half_open_max_calls": 1,
}


async def test_a_trip_in_one_process_opens_the_breaker_in_every_other(
    fleet: Callable[..., Registry],
) -> None:
    """One process's trip reaches the others by pub/sub: they reject without a failure."""
    regs = [fleet() for _ in range(3)]
    breakers = [r.get_or_create("dep", failure_threshold=3, recovery_timeout=30) for r in regs]
    trip(breakers[0])
    await until(
        lambda: all(b.state is CircuitState.OPEN for b in breakers), "every process to open"
    )
    for b in breakers[1:]:
        assert b.metrics()["failed_calls"] == 0
        assert b.status()["sharing"] == "fleet"
        with pytest.raises(CircuitOpenError) as info:
            await b.call(_ok)
        assert 0 < (info.value.retry_after or 0) <= 30


async def _ok() -> int:
    return 1


async def _down() -> int:
    raise Down("still down")


async def test_one_probe_for_the_whole_fleet_per_half_open_round(
    fleet: Callable[..., Registry],
) -> None:
    """When the open period ends, exactly half_open_max_calls dependency calls are made
    fleet-wide per round, however many processes call; a success closes every process."""
    regs = [fleet() for _ in range(4)]
    breakers = [r.get_or_create("db", **SETTINGS) for r in regs]
    stores = [r.store for r in regs]
    trip(breakers[0])
    await until(lambda: all(b.state is CircuitState.OPEN for b in breakers), "all open")
    dependency_up = False
    probes: list[int] = []  # the fleet round (the row's epoch) of each dependency call

    def dependency_for(store: Any, breaker: CircuitBreaker) -> Callable[[], Any]:
        async def dependency() -> int:
            if breaker.status()["state"] != "closed":  # a probe, not a call after closing
                probes.append(store._rows["db"].epoch)
            if not dependency_up:
                raise Down()
            return 1

        return dependency

    calls = [dependency_for(store, b) for store, b in zip(stores, breakers, strict=True)]

    async def everyone_calls() -> None:
        for b, call in zip(breakers, calls, strict=True):
            try:
                await b.call(call)
            except (CircuitOpenError, Down):
                pass

    deadline = time.monotonic() + WAIT
    while len(set(probes)) < 3:  # three failed rounds
        assert time.monotonic() < deadline, f"rounds so far: {probes}"
        await everyone_calls()
        await asyncio.sleep(0.005)
    rounds = [probes.count(epoch) for epoch in sorted(set(probes))]
    assert rounds == [1] * len(rounds)  # one probe per round, fleet-wide
    dependency_up = True
    while not all(b.state is CircuitState.CLOSED for b in breakers):
        assert time.monotonic() < deadline + WAIT, "the fleet did not close"
        await everyone_calls()
        await asyncio.sleep(0.005)
    rounds = [probes.count(epoch) for epoch in sorted(set(probes))]
    assert rounds == [1] * len(rounds)


async def test_a_new_process_rejects_from_its_first_call_during_a_known_outage(
    fleet: Callable[..., Registry],
) -> None:
    """A process that starts while the fleet is open reads the row at attach."""
    first = fleet().get_or_create("svc", failure_threshold=1, recovery_timeout=30)
    trip(first)
    await until(lambda: first.status()["sharing"] == "fleet", "sharing")
    # Wait until the row is written (the proposal is asynchronous).
    await until(lambda: _row_state(fleet, "svc") == "open", "the row to be written")
    late = fleet().get_or_create("svc", failure_threshold=1, recovery_timeout=30)
    assert late.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        await late.call(_ok)


def _row_state(fleet: Any, name: str) -> str:
    store: RedisStore = fleet().store  # a throwaway reader on the same prefix
    raw = store._client.hget(store._key(name), "state")
    store.close()
    return raw.decode() if raw else ""


class OffsetClock:
    """A process whose clocks are an hour ahead."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def time(self) -> float:
        return time.time() + self.offset


async def test_clocks_offset_by_an_hour_see_the_same_deadline(redis_url: str, prefix: str) -> None:
    """Deadlines travel as remaining milliseconds: a process an hour ahead agrees."""
    clock = OffsetClock(3600.0)
    a = RedisStore(redis_url, prefix=prefix, refresh_interval=0.5)
    b = RedisStore(redis_url, prefix=prefix, refresh_interval=0.5, clock=clock)
    try:
        ra, rb = Registry(store=a), Registry(store=b, clock=clock)
        ba = ra.get_or_create("x", failure_threshold=1, recovery_timeout=20)
        bb = rb.get_or_create("x", failure_threshold=1, recovery_timeout=20)
        trip(ba)
        await until(lambda: bb.state is CircuitState.OPEN, "the offset process to open")
        left = bb.status()["retry_after"]
        assert 15 < left <= 20  # not 3,620 s, not 0
    finally:
        a.close()
        b.close()


@pytest.fixture
async def redis_proxy(redis_host_port: tuple[str, int]) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(*redis_host_port) as proxy:
        yield proxy


async def test_with_redis_down_breakers_trip_locally_and_reshare_when_it_returns(
    fleet: Callable[..., Registry], redis_proxy: FaultProxy, redis_url: str
) -> None:
    """Redis refusing: local trips still happen, every call keeps its cost; when Redis
    returns the open state is proposed again and the others hear it."""
    db = redis_url.rsplit("/", 1)[-1]
    through = fleet(f"redis://{redis_proxy.address}/{db}")
    other = fleet()
    mine = through.get_or_create("flaky", failure_threshold=2, recovery_timeout=60)
    theirs = other.get_or_create("flaky", failure_threshold=2, recovery_timeout=60)
    redis_proxy.refuse()
    store = through.store
    assert isinstance(store, RedisStore)
    store._post_reconcile()  # the next turn reads, and fails
    await until(lambda: not store.healthy, "the store to notice")
    assert mine.status()["sharing"] == "local"
    trip(mine)
    assert mine.state is CircuitState.OPEN  # a local trip, Redis or not
    assert theirs.state is CircuitState.CLOSED
    redis_proxy.pass_through()
    await until(lambda: store.healthy, "the store to recover")
    await until(lambda: theirs.state is CircuitState.OPEN, "the open state to be re-shared")


async def test_an_emptied_redis_closes_nothing(
    fleet: Callable[..., Registry], redis_url: str, prefix: str
) -> None:
    """The row deleted while open: nobody closes, and the open state is proposed again."""
    regs = [fleet() for _ in range(2)]
    breakers = [r.get_or_create("gone", failure_threshold=1, recovery_timeout=30) for r in regs]
    trip(breakers[0])
    await until(lambda: all(b.state is CircuitState.OPEN for b in breakers), "all open")
    client = redis.Redis.from_url(redis_url)
    try:
        await until(lambda: client.exists(f"{prefix}:{{gone}}") == 1, "the row")
        client.delete(f"{prefix}:{{gone}}")
        await until(lambda: client.exists(f"{prefix}:{{gone}}") == 1, "the row proposed again")
    finally:
        client.close()
    assert all(b.state is CircuitState.OPEN for b in breakers)


async def test_the_hot_path_sends_redis_nothing(
    fleet: Callable[..., Registry], redis_url: str
) -> None:
    """Closed calls and rejections send no command: the store's counters do not move."""
    reg = fleet()
    store = reg.store
    assert isinstance(store, RedisStore)
    guarded = reg.get_or_create("hot", failure_threshold=1, recovery_timeout=30)(_ok)
    for _ in range(200):
        await guarded()
    assert store.script_calls == 0
    trip(reg.get_or_create("hot"))
    await until(lambda: store.script_calls == 1, "the one proposal")
    for _ in range(200):
        with pytest.raises(CircuitOpenError):
            await guarded()
    assert store.script_calls == 1


WORKER = textwrap.dedent(
    """
    import sys, time
    from resilience import Registry, CircuitState
    from resilience.integrations.redis import RedisStore

    store = RedisStore(sys.argv[1], prefix=sys.argv[2], refresh_interval=0.5)
    breaker = Registry(store=store).get_or_create("shared", failure_threshold=1,
                                                  recovery_timeout=30)
    print("ready", flush=True)
    deadline = time.monotonic() + 20
    while breaker.state is not CircuitState.OPEN and time.monotonic() < deadline:
        time.sleep(0.005)
    print("open" if breaker.state is CircuitState.OPEN else "never", flush=True)
    store.close()
    """
)


@contextlib.contextmanager
def spawned(script: str, n: int, *args: str) -> Iterator[list[subprocess.Popen[str]]]:
    """``n`` processes running ``script`` with ``args``, each past its
    "ready" line; killed on the way out if still running."""
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(n)
    ]
    try:
        for w in workers:
            assert w.stdout is not None
            assert w.stdout.readline().strip() == "ready"
        yield workers
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()


def test_real_processes_hear_a_trip(redis_url: str, prefix: str) -> None:
    """Three spawned worker processes each see a trip made in this one."""
    with (
        spawned(WORKER, 3, redis_url, prefix) as workers,
        RedisStore(redis_url, prefix=prefix, refresh_interval=0.5) as store,
    ):
        breaker = Registry(store=store).get_or_create("shared", failure_threshold=1,
                                                      recovery_timeout=30)  # fmt: skip
        trip(breaker)
        for w in workers:
            out, _ = w.communicate(timeout=30)
            assert out.strip() == "open"
            assert w.returncode == 0


async def test_a_killed_prober_is_replaced_when_its_lease_runs_out(
    fleet: Callable[..., Registry],
) -> None:
    """The process holding the probe lease dies mid-probe: another probes after the lease."""
    regs = [fleet(probe_lease=0.6) for _ in range(3)]
    breakers = [r.get_or_create("lease", **SETTINGS) for r in regs]
    trip(breakers[0])
    await until(lambda: all(b.state is CircuitState.OPEN for b in breakers), "all open")
    hung: list[int] = []

    async def never_answers() -> int:
        hung.append(1)
        await asyncio.Event().wait()  # the prober hangs...
        return 1

    # Everyone calls until one process starts a probe that never ends.
    probing: asyncio.Task[int] | None = None
    deadline = time.monotonic() + WAIT
    while probing is None:
        assert time.monotonic() < deadline, "no process probed"
        for i, b in enumerate(breakers):
            if b.state is CircuitState.HALF_OPEN or b.rejection() is None:
                probing = asyncio.create_task(b.call(never_answers))
                dead = i
                break
        await asyncio.sleep(0.01)
    await until(lambda: bool(hung), "the probe to start")
    regs[dead].store.close()  # ...and its process is killed  # type: ignore[union-attr]
    survivors = [b for i, b in enumerate(breakers) if i != dead]

    async def recovered() -> int:
        return 1

    while not any(b.state is CircuitState.CLOSED for b in survivors):
        assert time.monotonic() < deadline + WAIT, "nobody took over the probe"
        for b in survivors:
            try:
                await b.call(recovered)
            except CircuitOpenError:
                pass
        await asyncio.sleep(0.01)
    probing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probing


async def test_a_lost_pubsub_connection_is_covered_by_reconciliation(
    fleet: Callable[..., Registry], redis_proxy: FaultProxy, redis_url: str
) -> None:
    """Pub/sub cut while another process trips: the reconnect reads the row and opens."""
    db = redis_url.rsplit("/", 1)[-1]
    deaf = fleet(f"redis://{redis_proxy.address}/{db}", refresh_interval=5.0)
    loud = fleet()
    mine = deaf.get_or_create("cut", failure_threshold=1, recovery_timeout=30)
    theirs = loud.get_or_create("cut", failure_threshold=1, recovery_timeout=30)
    redis_proxy.blackhole()  # the subscription hears nothing from now on
    trip(theirs)
    redis_proxy.reset()  # ...then its connection is cut
    redis_proxy.pass_through()
    await until(lambda: mine.state is CircuitState.OPEN, "the reconnect to catch up")
    assert mine.metrics()["failed_calls"] == 0


PROBER = textwrap.dedent(
    """
    import asyncio, sys, time
    from resilience import Registry, CircuitState, CircuitOpenError
    from resilience.integrations.redis import RedisStore

    class Down(ConnectionError):
        pass

    store = RedisStore(sys.argv[1], prefix=sys.argv[2], refresh_interval=0.5)
    breaker = Registry(store=store).get_or_create(
        "herd", failure_threshold=1, recovery_timeout=0.3, half_open_max_calls=1,
        success_threshold=1)

    async def dependency():
        if breaker._m.state is CircuitState.HALF_OPEN:
            print("probe", store._rows["herd"].epoch, flush=True)
        raise Down()

    async def caller(until):
        while time.monotonic() < until:
            try:
                await breaker.call(dependency)
            except (CircuitOpenError, Down):
                pass
            await asyncio.sleep(0.005)

    print("ready", flush=True)
    sys.stdin.readline()  # go
    until = time.monotonic() + float(sys.argv[3])
    async def main():
        await asyncio.gather(*(caller(until) for _ in range(5)))
    asyncio.run(main())
    store.close()
    print("done", flush=True)
    """
)


def test_eight_processes_send_one_probe_per_round(redis_url: str, prefix: str) -> None:
    """8 spawned processes x 5 callers each, at every deadline: one dependency call per
    half-open round, fleet-wide."""
    with (
        spawned(PROBER, 8, redis_url, prefix, "4.0") as workers,
        RedisStore(redis_url, prefix=prefix, refresh_interval=0.5) as store,
    ):
        breaker = Registry(store=store).get_or_create(
            "herd", failure_threshold=1, recovery_timeout=0.3, half_open_max_calls=1,
            success_threshold=1,
        )  # fmt: skip
        time.sleep(0.3)  # every worker subscribed
        trip(breaker)
        for w in workers:
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        probes: dict[int, int] = {}
        for w in workers:
            out, _ = w.communicate(timeout=60)
            assert w.returncode == 0
            for line in out.splitlines():
                if line.startswith("probe "):
                    epoch = int(line.split()[1])
                    probes[epoch] = probes.get(epoch, 0) + 1
        assert len(probes) >= 3  # several rounds in 4 s
        assert set(probes.values()) == {1}, probes


async def test_workers_leaving_and_joining_during_an_outage(
    fleet: Callable[..., Registry],
) -> None:
    """Processes leave and new ones join while open: the newcomers reject from their first
    call, and each round still makes one probe."""
    regs = [fleet() for _ in range(3)]
    breakers = [r.get_or_create("churn", **SETTINGS) for r in regs]
    trip(breakers[0])
    await until(lambda: all(b.state is CircuitState.OPEN for b in breakers), "all open")
    regs[1].store.close()  # type: ignore[union-attr]
    regs[2].store.close()  # type: ignore[union-attr]
    joined = [fleet() for _ in range(2)]
    newcomers = [r.get_or_create("churn", **SETTINGS) for r in joined]
    assert all(b.state is not CircuitState.CLOSED for b in newcomers)
    live = [breakers[0], *newcomers]
    stores = [regs[0].store, *(r.store for r in joined)]
    probes: list[int] = []

    def dependency_for(store: Any, breaker: CircuitBreaker) -> Callable[[], Any]:
        async def dependency() -> int:
            if breaker.status()["state"] == "half_open":
                probes.append(store._rows["churn"].epoch)
            raise Down()

        return dependency

    calls = [dependency_for(s, b) for s, b in zip(stores, live, strict=True)]
    deadline = time.monotonic() + WAIT
    while len(set(probes)) < 3:
        assert time.monotonic() < deadline, f"rounds so far: {probes}"
        for b, call in zip(live, calls, strict=True):
            try:
                await b.call(call)
            except (CircuitOpenError, Down):
                pass
        await asyncio.sleep(0.005)
    assert [probes.count(e) for e in sorted(set(probes))] == [1] * len(set(probes))


async def test_a_breaker_registered_by_hand_is_shared_too(
    fleet: Callable[..., Registry],
) -> None:
    """Registry.register() shares a breaker built directly through the registry's store."""
    shared = fleet()
    own = shared.register(CircuitBreaker("by-hand", failure_threshold=1, recovery_timeout=30))
    other = fleet().get_or_create("by-hand", failure_threshold=1, recovery_timeout=30)
    assert own.status()["sharing"] == "fleet"
    trip(own)
    await until(lambda: other.state is CircuitState.OPEN, "the other process to open")


# -- the row bookkeeping under races (an independent review's findings) -------


def _store(registry: Registry) -> RedisStore:
    store = registry.store
    assert isinstance(store, RedisStore)
    return store


async def test_a_trip_that_loses_to_a_close_it_had_not_heard_of_stays_open(
    fleet: Callable[..., Registry], redis_url: str, prefix: str
) -> None:
    """A process behind the fleet (it missed an opening and a close) trips:
    its proposal loses the epoch compare-and-set to the newer closed row, and
    it proposes again at that epoch instead of adopting the close."""
    a_reg = fleet(refresh_interval=30)  # no reconciliation to catch up meanwhile
    a = a_reg.get_or_create("dep", **{**SETTINGS, "recovery_timeout": 30})
    client = redis.Redis.from_url(redis_url)
    key = f"{prefix}:{{dep}}"
    try:
        client.hset(key, mapping={"epoch": 2, "state": "closed", "until": 0})
        assert _store(a_reg)._rows["dep"].epoch == 0  # A heard nothing of it
        trip(a)
        await until(lambda: client.hget(key, "epoch") == b"3", "A's opening shared")
        assert client.hget(key, "state") == b"open"
        await asyncio.sleep(0.3)
        assert a.state is CircuitState.OPEN
    finally:
        client.close()


async def test_async_listeners_hear_fleet_transitions(fleet: Callable[..., Registry]) -> None:
    """A transition applied on the store's thread runs async listeners on the
    loop they were added on."""
    a = fleet().get_or_create("dep", **SETTINGS)
    b = fleet().get_or_create("dep", **SETTINGS)
    heard: list[tuple[CircuitState, CircuitState]] = []

    async def listener(old: CircuitState, new: CircuitState, reason: str) -> None:
        heard.append((old, new))

    b.add_listener(listener)
    trip(a)
    await until(lambda: heard == [(CircuitState.CLOSED, CircuitState.OPEN)], "B's async listener")


async def test_a_listener_may_use_the_registry_from_the_stores_thread(
    fleet: Callable[..., Registry],
) -> None:
    """A sync listener that creates another shared breaker while the store
    delivers a fleet transition neither deadlocks the store nor stalls it."""
    a_reg, b_reg = fleet(), fleet()
    a = a_reg.get_or_create("dep", **SETTINGS)
    b = b_reg.get_or_create("dep", **SETTINGS)
    trip(a_reg.get_or_create("other", **SETTINGS))  # a row to read when it is attached
    created: list[CircuitBreaker] = []
    b.add_listener(lambda old, new, reason: created.append(b_reg.get_or_create("other")))
    trip(a)
    await until(lambda: len(created) == 1, "the listener's breaker")
    await until(lambda: created[0].state is CircuitState.OPEN, "its row adopted")
    trip(a_reg.get_or_create("third", **SETTINGS))
    third = b_reg.get_or_create("third", **SETTINGS)
    await until(lambda: third.state is CircuitState.OPEN, "the store still working")


async def test_a_lease_of_an_older_round_lets_nobody_probe(
    fleet: Callable[..., Registry], redis_url: str, prefix: str
) -> None:
    """A process holding the probe lease when the row is lost and a new
    round starts elsewhere does not probe on that dead lease: one prober."""
    a_reg = fleet(refresh_interval=0.3)
    a = a_reg.get_or_create("dep", **SETTINGS)
    client = redis.Redis.from_url(redis_url)
    key = f"{prefix}:{{dep}}"
    try:
        trip(a)
        await until(lambda: client.hget(key, "state") == b"open", "the row open")
        permit = None

        def a_probes() -> bool:
            nonlocal permit
            permit = a.try_acquire()
            return permit is not None

        await until(a_probes, "A claims the lease")
        assert permit is not None
        permit.ignore()  # A is HALF_OPEN with the lease, no probe in flight
        client.delete(key)  # Redis loses the row
        await asyncio.sleep(0.8)
        d = fleet(refresh_interval=0.3).get_or_create("dep", **SETTINGS)
        trip(d)  # a new round, elsewhere
        await until(lambda: a.state is CircuitState.OPEN, "A adopts the new round")
        await asyncio.sleep(SETTINGS["recovery_timeout"])
        got: dict[str, bool] = {"a": False, "d": False}
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not all(got.values()):
            got["d"] = got["d"] or d.try_acquire() is not None
            got["a"] = got["a"] or a.try_acquire() is not None
            await asyncio.sleep(0.01)
        assert sum(got.values()) == 1, got
    finally:
        client.close()


async def test_a_row_restarted_at_a_lower_epoch_is_adopted_when_open(
    fleet: Callable[..., Registry], redis_url: str, prefix: str
) -> None:
    """Redis restarted empty while this process knew epoch 4: the fleet's next
    trip (epoch 1) still opens the breaker here."""
    a_reg = fleet(refresh_interval=0.3)
    a = a_reg.get_or_create("dep", **SETTINGS)
    with _store(a_reg)._locked():
        row = _store(a_reg)._rows["dep"]
        row.epoch, row.state = 4, "closed"
    client = redis.Redis.from_url(redis_url)
    try:
        d = fleet(refresh_interval=0.3).get_or_create("dep", **{**SETTINGS, "recovery_timeout": 30})
        trip(d)
        await until(lambda: client.hget(f"{prefix}:{{dep}}", "epoch") == b"1", "the fleet's row")
        await until(lambda: a.state is CircuitState.OPEN, "A open")
    finally:
        client.close()


def test_a_bad_store_argument_names_its_type_not_its_value() -> None:
    """A URL-like object that is not a string (a pydantic DSN, bytes) is
    refused by its type: its repr, which may hold a password, is not shown."""
    with pytest.raises(TypeError) as err:
        RedisStore(b"redis://:s3cr3t@127.0.0.1:6379/0")  # type: ignore[arg-type]
    assert "s3cr3t" not in str(err.value)
    assert "bytes" in str(err.value)


def test_closing_the_store_leaves_a_client_passed_in_working(redis_url: str, prefix: str) -> None:
    """``close()`` stops the store's threads; a ``redis.Redis`` the caller
    passed in is the caller's, and still answers."""
    client = redis.Redis.from_url(redis_url, socket_timeout=1.0)
    closed: list[bool] = []
    close = client.close
    client.close = lambda: closed.append(True)  # type: ignore[method-assign]
    try:
        store = RedisStore(client, prefix=prefix)
        Registry(store=store).get_or_create("dep", **SETTINGS)
        store.close()
        assert not store._worker.is_alive() and not store._listener.is_alive()
        assert closed == []  # its pool (and connections other threads use) left alone
        assert client.ping()
    finally:
        close()


async def test_a_trip_during_a_redis_outage_is_shared_with_its_deadline_when_it_returns(
    fleet: Callable[..., Registry], redis_proxy: FaultProxy, redis_url: str, prefix: str
) -> None:
    """Open in the fleet before the outage, re-tripped locally during it with
    a later deadline: when Redis answers again, the open state is proposed
    again (a new epoch), not taken as already known."""
    db = redis_url.rsplit("/", 1)[-1]
    a_reg = fleet(f"redis://{redis_proxy.address}/{db}", refresh_interval=0.3)
    a = a_reg.get_or_create("dep", **{**SETTINGS, "recovery_timeout": 30})
    client = redis.Redis.from_url(redis_url)
    key = f"{prefix}:{{dep}}"

    def epoch() -> int:
        return int(client.hget(key, "epoch") or 0)

    try:
        trip(a)
        await until(lambda: epoch() >= 1, "the opening shared")
        await until(lambda: _store(a_reg).healthy, "the store settled")
        redis_proxy.refuse()
        _store(a_reg)._post_reconcile()  # the next turn reads, and fails
        await until(lambda: not _store(a_reg).healthy, "the store sees Redis gone")
        before = epoch()
        a.reset()
        trip(a)  # tripped again, locally, with a later deadline
        redis_proxy.pass_through()
        await until(lambda: _store(a_reg).healthy, "Redis back")
        await until(lambda: epoch() > before, "the open state proposed again")
        assert client.hget(key, "state") == b"open"
    finally:
        client.close()


async def test_attaching_a_breaker_waits_for_redis_at_most_the_stores_timeout(
    redis_proxy: FaultProxy, redis_url: str, prefix: str
) -> None:
    """A breaker created on first use inside a request handler is attached
    on the event loop: with Redis black-holed and a client of the caller's
    that would wait 30 s, the loop waits no longer than the store's timeout."""
    db = redis_url.rsplit("/", 1)[-1]
    client = redis.Redis.from_url(f"redis://{redis_proxy.address}/{db}", socket_timeout=30)
    store = RedisStore(client, prefix=prefix, timeout=0.2)
    try:
        registry = Registry(store=store)
        registry.get_or_create("warm", **SETTINGS)
        redis_proxy.blackhole()
        started = time.monotonic()
        registry.get_or_create("on-first-use", **SETTINGS)
        waited = time.monotonic() - started
        assert waited < 2.0  # the store's 0.2 s, with room for a loaded machine; not 30 s
    finally:
        redis_proxy.pass_through()
        store.close()
        client.close()


async def test_a_black_holed_subscription_is_noticed_and_opened_again(
    redis_proxy: FaultProxy, redis_url: str, prefix: str
) -> None:
    """The pub/sub connection stops answering (a NAT dropped it, the network
    black-holes it): the listener pings a quiet connection, gives up on one
    that does not answer, and subscribes again."""
    db = redis_url.rsplit("/", 1)[-1]
    store = RedisStore(f"redis://{redis_proxy.address}/{db}", prefix=prefix, refresh_interval=0.3)
    try:
        await until(lambda: store.status()["subscriptions"] == 1, "the first subscription")
        await asyncio.sleep(0.5)  # quiet, pinged, answered
        assert store.status()["subscriptions"] == 1
        redis_proxy.blackhole()
        await until(lambda: store.status()["subscriptions"] >= 2, "a new subscription")
    finally:
        redis_proxy.pass_through()
        store.close()


def test_a_client_without_timeouts_cannot_hold_the_listener_past_close(prefix: str) -> None:
    """A client of the caller's with no socket timeout (redis-py's default),
    to a server that accepts and never answers: the subscription has the
    store's own timeouts, so ``close()`` stops the listener."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[Any] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept())

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    client = redis.Redis(host="127.0.0.1", port=server.getsockname()[1])
    try:
        store = RedisStore(client, prefix=prefix, timeout=0.2)
        time.sleep(0.5)
        store.close()
        assert not store._listener.is_alive()
    finally:
        stop.set()
        acceptor.join()
        for conn, _ in held:
            conn.close()
        server.close()


async def test_recovering_from_an_outage_does_not_repropose_an_opening_it_only_adopted(
    fleet: Callable[..., Registry], redis_proxy: FaultProxy, redis_url: str, prefix: str
) -> None:
    """A process that heard of an opening (it did not trip) and then lost Redis
    for a moment does not propose that opening again on recovery: a new epoch
    would void the probe lease another process may hold."""
    db = redis_url.rsplit("/", 1)[-1]
    a_reg = fleet(f"redis://{redis_proxy.address}/{db}", refresh_interval=0.3)
    a = a_reg.get_or_create("dep", **{**SETTINGS, "recovery_timeout": 30})
    await until(lambda: _store(a_reg).healthy, "the store settled")
    b = fleet().get_or_create("dep", **{**SETTINGS, "recovery_timeout": 30})
    client = redis.Redis.from_url(redis_url)
    key = f"{prefix}:{{dep}}"
    try:
        trip(b)
        await until(lambda: a.state is CircuitState.OPEN, "A adopts the opening")
        before = client.hget(key, "epoch")
        redis_proxy.refuse()
        _store(a_reg)._post_reconcile()
        await until(lambda: not _store(a_reg).healthy, "the store sees Redis gone")
        redis_proxy.pass_through()
        await until(lambda: _store(a_reg).healthy, "Redis back")
        await asyncio.sleep(0.5)
        assert client.hget(key, "epoch") == before
    finally:
        client.close()
