"""ResilientPool against a real PostgreSQL, with faults injected by FaultProxy.

Breaker time runs on a FakeClock (advanced, never slept); network timeouts
are real but small.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

asyncpg = pytest.importorskip("asyncpg")

from resilience import CircuitOpenError, CircuitState, Registry  # noqa: E402
from resilience.integrations.asyncpg import (  # noqa: E402
    PoolExhaustedError,
    ResilientPool,
)
from resilience.testing import FakeClock, FaultProxy  # noqa: E402

pytestmark = pytest.mark.integration

CONNECT_TIMEOUT = 0.5
# What a caller sees when the server is unreachable: refused or reset while
# connecting (OSError), or a pooled connection found dead (08xxx).
DOWN = (OSError, asyncpg.PostgresConnectionError)
MakePool = Callable[..., ResilientPool]


def _with_address(dsn: str, address: str) -> str:
    parts = urlsplit(dsn)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{address}" if userinfo else address
    return urlunsplit(parts._replace(netloc=netloc))


def _with_user_and_db(dsn: str, *, user: str | None = None, database: str | None = None) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc
    if user is not None:
        netloc = f"{user}@{netloc.rpartition('@')[2]}"
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry(clock: FakeClock) -> Registry:
    return Registry(clock=clock)


@pytest.fixture
async def proxy(pg_host_port: tuple[str, int]) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(*pg_host_port) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def proxied_dsn(pg_dsn: str, proxy: FaultProxy) -> str:
    return _with_address(pg_dsn, proxy.address)


@pytest.fixture
async def make_pool(registry: Registry) -> AsyncIterator[MakePool]:
    """Build pools on the test's registry (fake clock); all closed afterwards."""
    pools: list[ResilientPool] = []

    def build(dsn: str, **options: Any) -> ResilientPool:
        options.setdefault("name", f"pg-{uuid.uuid4().hex[:8]}")
        options.setdefault("registry", registry)
        options.setdefault("connect_timeout", CONNECT_TIMEOUT)
        options.setdefault("command_timeout", 5.0)
        options.setdefault("acquire_timeout", 2.0)
        pool = ResilientPool(dsn, **options)
        pools.append(pool)
        return pool

    yield build
    for pool in pools:
        await pool.close(timeout=1.0)


@pytest.fixture
async def admin(pg_dsn: str) -> AsyncIterator[Any]:
    con = await asyncpg.connect(pg_dsn)
    yield con
    await con.close()


async def _until(condition: Any, what: str, limit: float = 5.0) -> None:
    """Poll ``await condition()`` until true: wait on a real signal, not a guess."""
    try:
        async with asyncio.timeout(limit):
            # Polling the server's own view: no client-side event exists for it.
            while not await condition():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {limit}s waiting for {what}") from None


def _running(admin: Any, marker: str) -> Any:
    """A condition: a statement containing ``marker`` is executing on the server."""

    async def check() -> bool:
        found = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
            "AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()",
            marker,
        )
        return bool(found)

    return check


def _gone(admin: Any, pid: int) -> Any:
    """A condition: the backend ``pid`` has exited."""

    async def check() -> bool:
        return not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)

    return check


@pytest.fixture
async def limited_role(admin: Any) -> AsyncIterator[str]:
    """A login role allowed one connection at a time (dropped afterwards)."""
    role = f"rp_limit_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 1')
    yield role
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
    )
    await admin.execute(f'DROP ROLE "{role}"')


async def _fails(
    call: Awaitable[Any], exc_type: type[BaseException] | tuple[type[BaseException], ...]
) -> BaseException:
    with pytest.raises(exc_type) as info:
        await call
    return info.value


# -- starting ------------------------------------------------------------------


async def test_constructing_never_connects(
    make_pool: MakePool, proxied_dsn: str, proxy: FaultProxy
) -> None:
    """A new pool opens no connection until its first call."""
    pool = make_pool(proxied_dsn)
    await asyncio.sleep(0)
    assert proxy.connections_total == 0
    assert (await pool.get_circuit_breaker_status())["pool"]["started"] is False


async def test_first_call_starts_the_pool(make_pool: MakePool, pg_dsn: str) -> None:
    """The first query starts the pool and returns its result."""
    pool = make_pool(pg_dsn)
    assert await pool.fetchval("SELECT 41 + 1") == 42
    assert (await pool.get_circuit_breaker_status())["pool"]["started"] is True


async def test_start_with_database_down_fails_fast_then_recovers(
    make_pool: MakePool, proxied_dsn: str, proxy: FaultProxy, clock: FakeClock
) -> None:
    """Started with the database down, calls fail fast, open it, and recover when it returns."""
    proxy.refuse()
    pool = make_pool(proxied_dsn, circuit_breaker_recovery_timeout=30)
    for _ in range(5):
        started = time.perf_counter()
        await _fails(pool.fetchval("SELECT 1"), DOWN)
        assert time.perf_counter() - started < CONNECT_TIMEOUT
    await _fails(pool.fetchval("SELECT 1"), CircuitOpenError)
    proxy.pass_through()
    clock.advance(30)
    for _ in range(3):
        assert await pool.fetchval("SELECT 1") == 1
    assert pool.circuit_breaker.state is CircuitState.CLOSED


async def test_pool_with_min_size_starts_while_database_down(
    make_pool: MakePool, proxied_dsn: str, proxy: FaultProxy, clock: FakeClock
) -> None:
    """A pool that pre-connects (min_size=2) retries its creation on the next call."""
    proxy.refuse()
    pool = make_pool(proxied_dsn, min_size=2, circuit_breaker_failure_threshold=2)
    await _fails(pool.fetchval("SELECT 1"), DOWN)
    await _fails(pool.fetchval("SELECT 1"), DOWN)
    await _fails(pool.fetchval("SELECT 1"), CircuitOpenError)
    proxy.pass_through()
    clock.advance(60)
    assert await pool.fetchval("SELECT 1") == 1
    assert (await pool.get_circuit_breaker_status())["pool"]["size"] >= 1


async def test_concurrent_first_calls_share_one_pool_creation(
    make_pool: MakePool, proxied_dsn: str, proxy: FaultProxy
) -> None:
    """Fifty concurrent first calls while the server hangs make one creation attempt."""
    proxy.blackhole()
    pool = make_pool(proxied_dsn, min_size=1, circuit_breaker_failure_threshold=100)
    results = await asyncio.gather(
        *(pool.fetchval("SELECT 1") for _ in range(50)), return_exceptions=True
    )
    assert all(isinstance(r, TimeoutError) for r in results)
    assert len({id(r) for r in results}) == 50  # every caller has its own error
    assert proxy.connections_total == 1


# -- outage and recovery -----------------------------------------------------


async def test_outage_opens_the_circuit(
    make_pool: MakePool, proxied_dsn: str, proxy: FaultProxy
) -> None:
    """Refused connections count as failures: the fifth opens the circuit."""
    pool = make_pool(proxied_dsn)
    assert await pool.fetchval("SELECT 1") == 1
    proxy.refuse()
    for _ in range(5):
        await _fails(pool.fetchval("SELECT 1"), DOWN)
    assert pool.circuit_breaker.state is CircuitState.OPEN
    status = await pool.get_circuit_breaker_status()
    assert status["last_failure_category"] == "CONNECTION_ERROR"


async def test_open_circuit_sends_nothing(
    make_pool: MakePool, proxied_dsn: str, proxy: FaultProxy
) -> None:
    """While open, calls are rejected without opening a connection."""
    pool = make_pool(proxied_dsn, circuit_breaker_failure_threshold=1)
    proxy.blackhole()
    await _fails(pool.fetchval("SELECT 1"), TimeoutError)
    before = proxy.connections_total
    error = await _fails(pool.fetchval("SELECT 1"), CircuitOpenError)
    assert isinstance(error, CircuitOpenError)
    assert error.retry_after == pytest.approx(60.0)
    assert proxy.connections_total == before


async def test_recovery_closes_the_circuit(
    make_pool: MakePool, proxied_dsn: str, proxy: FaultProxy, clock: FakeClock
) -> None:
    """After the recovery timeout, successful probes close the circuit on the same pool."""
    pool = make_pool(
        proxied_dsn,
        circuit_breaker_failure_threshold=2,
        circuit_breaker_recovery_timeout=10,
        circuit_breaker_success_threshold=2,
    )
    assert await pool.fetchval("SELECT 1") == 1
    proxy.refuse()
    for _ in range(2):
        await _fails(pool.fetchval("SELECT 1"), DOWN)
    proxy.pass_through()
    await _fails(pool.fetchval("SELECT 1"), CircuitOpenError)
    clock.advance(10)
    assert await pool.fetchval("SELECT 2") == 2
    assert pool.circuit_breaker.state is CircuitState.HALF_OPEN
    assert await pool.fetchval("SELECT 3") == 3
    assert pool.circuit_breaker.state is CircuitState.CLOSED


async def test_failed_probe_reopens(
    make_pool: MakePool, proxied_dsn: str, proxy: FaultProxy, clock: FakeClock
) -> None:
    """A probe that fails while the server is still down re-opens the circuit."""
    pool = make_pool(proxied_dsn, circuit_breaker_failure_threshold=1)
    proxy.refuse()
    await _fails(pool.fetchval("SELECT 1"), DOWN)
    clock.advance(60)
    await _fails(pool.fetchval("SELECT 1"), DOWN)
    assert pool.circuit_breaker.state is CircuitState.OPEN


async def test_blackhole_trips_on_connect_timeouts(
    make_pool: MakePool, proxied_dsn: str, proxy: FaultProxy
) -> None:
    """A silent server fails each call within the connect timeout, then opens the circuit."""
    pool = make_pool(proxied_dsn, circuit_breaker_failure_threshold=2)
    proxy.blackhole()
    for _ in range(2):
        started = time.perf_counter()
        await _fails(pool.fetchval("SELECT 1"), TimeoutError)
        assert time.perf_counter() - started < CONNECT_TIMEOUT + 2.0
    assert pool.circuit_breaker.state is CircuitState.OPEN
    metrics = pool.get_circuit_breaker_metrics()
    assert metrics["failures_by_category"] == {"TIMEOUT_ERROR": 2}


async def test_blackhole_on_open_connection_trips_on_command_timeout(
    make_pool: MakePool, proxied_dsn: str, proxy: FaultProxy
) -> None:
    """A query on an open connection that stops answering fails within command_timeout."""
    pool = make_pool(
        proxied_dsn, command_timeout=0.5, connect_timeout=3.0, circuit_breaker_failure_threshold=1
    )
    assert await pool.fetchval("SELECT 1") == 1
    proxy.blackhole()
    started = time.perf_counter()
    await _fails(pool.fetchval("SELECT 1"), TimeoutError)
    # Not command_timeout + connect_timeout: asyncpg's cancel request (a new
    # connection to the silent server) runs in the background.
    assert time.perf_counter() - started < 0.5 + 2.0  # not + connect_timeout (3 s)
    assert pool.circuit_breaker.state is CircuitState.OPEN
    assert (await pool.get_circuit_breaker_status())["pool"]["in_use"] == 1


async def test_reset_mid_query_is_a_connection_failure(
    make_pool: MakePool, proxied_dsn: str, proxy: FaultProxy, admin: Any
) -> None:
    """A connection reset during a query is a CONNECTION_ERROR failure; the next call reconnects."""
    pool = make_pool(proxied_dsn)
    assert await pool.fetchval("SELECT 1") == 1
    query = asyncio.ensure_future(pool.fetchval("SELECT pg_sleep(5) /* reset-mid-query */"))
    await _until(_running(admin, "reset-mid-query"), "the query to run")
    proxy.reset()
    await _fails(query, DOWN)
    proxy.pass_through()
    assert await pool.fetchval("SELECT 1") == 1
    metrics = pool.get_circuit_breaker_metrics()
    assert metrics["failures_by_category"] == {"CONNECTION_ERROR": 1}


async def test_terminated_backend_mid_query_is_a_connection_failure(
    make_pool: MakePool, pg_dsn: str, admin: Any
) -> None:
    """pg_terminate_backend during a query fails it as CONNECTION_ERROR; the pool reconnects."""
    pool = make_pool(pg_dsn)
    pid = await pool.fetchval("SELECT pg_backend_pid()")
    query = asyncio.ensure_future(pool.fetchval("SELECT pg_sleep(5) /* terminate-mid-query */"))
    await _until(_running(admin, "terminate-mid-query"), "the query to run")
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    await _fails(query, asyncpg.PostgresConnectionError)
    assert await pool.fetchval("SELECT pg_backend_pid()") != pid
    assert pool.get_circuit_breaker_metrics()["failures_by_category"] == {"CONNECTION_ERROR": 1}


async def test_terminated_idle_backend_is_replaced_silently(
    make_pool: MakePool, pg_dsn: str, admin: Any
) -> None:
    """A pooled connection killed while idle is replaced on the next call, with no error."""
    pool = make_pool(pg_dsn)
    pid = await pool.fetchval("SELECT pg_backend_pid()")
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    await _until(_gone(admin, pid), "the backend to exit")

    async def client_noticed() -> bool:
        # asyncpg's own view of its idle connection (private, test-only): the
        # pool can only replace a connection once the client has read the
        # server's goodbye, which may come a moment after the backend exits.
        holders = pool._pool._holders if pool._pool is not None else []
        return not any(h._con is not None and not h._con.is_closed() for h in holders)

    await _until(client_noticed, "the client to see its connection closed")
    assert await pool.fetchval("SELECT pg_backend_pid()") != pid
    assert pool.get_circuit_breaker_metrics()["failed_calls"] == 0


async def test_statement_timeout_is_a_timeout_failure(make_pool: MakePool, pg_dsn: str) -> None:
    """A server-side statement timeout (57014) counts as a TIMEOUT_ERROR failure."""
    pool = make_pool(pg_dsn, pool_kwargs={"server_settings": {"statement_timeout": "50"}})
    await _fails(pool.fetchval("SELECT pg_sleep(1)"), asyncpg.QueryCanceledError)
    assert pool.get_circuit_breaker_metrics()["failures_by_category"] == {"TIMEOUT_ERROR": 1}


async def test_too_many_connections_is_a_resource_failure(
    make_pool: MakePool, pg_dsn: str, limited_role: str
) -> None:
    """A role over its CONNECTION LIMIT gets TooManyConnectionsError, a RESOURCE_ERROR failure."""
    pool = make_pool(_with_user_and_db(pg_dsn, user=limited_role), max_size=2)
    async with pool.acquire() as con:
        assert await con.fetchval("SELECT 1") == 1
        await _fails(pool.fetchval("SELECT 1"), asyncpg.TooManyConnectionsError)
    assert pool.get_circuit_breaker_metrics()["failures_by_category"] == {"RESOURCE_ERROR": 1}


async def test_unknown_role_never_trips(make_pool: MakePool, pg_dsn: str) -> None:
    """Authentication errors (unknown role, 28000) are raised but never open the circuit."""
    role = f"rp_nobody_{uuid.uuid4().hex[:10]}"
    pool = make_pool(_with_user_and_db(pg_dsn, user=role), circuit_breaker_failure_threshold=2)
    for _ in range(6):
        await _fails(pool.fetchval("SELECT 1"), asyncpg.InvalidAuthorizationSpecificationError)
    assert pool.circuit_breaker.state is CircuitState.CLOSED
    assert pool.get_circuit_breaker_metrics()["ignored_calls"] == 6


async def test_wrong_database_trips(make_pool: MakePool, pg_dsn: str) -> None:
    """An unknown database (3D000) is a DATABASE_ERROR failure that opens the circuit."""
    database = f"rp_missing_{uuid.uuid4().hex[:10]}"
    pool = make_pool(
        _with_user_and_db(pg_dsn, database=database), circuit_breaker_failure_threshold=2
    )
    for _ in range(2):
        await _fails(pool.fetchval("SELECT 1"), asyncpg.InvalidCatalogNameError)
    assert pool.circuit_breaker.state is CircuitState.OPEN
    status = await pool.get_circuit_breaker_status()
    assert status["last_failure_category"] == "DATABASE_ERROR"


async def test_bad_sql_never_trips(make_pool: MakePool, pg_dsn: str) -> None:
    """Syntax errors, unknown tables and bad arguments never open the circuit."""
    pool = make_pool(pg_dsn, circuit_breaker_failure_threshold=1)
    for _ in range(3):
        await _fails(pool.fetchval("SELEC 1"), asyncpg.PostgresSyntaxError)
        await _fails(pool.fetch("SELECT * FROM rp_no_such_table"), asyncpg.UndefinedTableError)
        await _fails(pool.fetchval("SELECT $1::int", "not a number"), asyncpg.DataError)
    assert pool.circuit_breaker.state is CircuitState.CLOSED
    assert pool.get_circuit_breaker_metrics()["ignored_calls"] == 9


async def test_constraint_violations_never_trip(make_pool: MakePool, pg_dsn: str) -> None:
    """Unique and check violations never open the circuit."""
    pool = make_pool(pg_dsn, circuit_breaker_failure_threshold=1)
    async with pool.acquire() as con:
        await con.execute("CREATE TEMP TABLE t (id int PRIMARY KEY, n int CHECK (n > 0))")
        await con.execute("INSERT INTO t VALUES (1, 1)")
        for _ in range(3):
            await _fails(con.execute("INSERT INTO t VALUES (1, 1)"), asyncpg.UniqueViolationError)
            await _fails(con.execute("INSERT INTO t VALUES (2, -1)"), asyncpg.CheckViolationError)
    assert pool.circuit_breaker.state is CircuitState.CLOSED


async def test_constraint_violation_through_pool_methods_is_ignored(
    make_pool: MakePool, pg_dsn: str
) -> None:
    """A unique violation raised by pool.execute is recorded as ignored."""
    pool = make_pool(pg_dsn, circuit_breaker_failure_threshold=1)
    await pool.execute("SELECT 1")
    for _ in range(3):
        await _fails(
            pool.execute("SELECT 1 / 0"),
            asyncpg.DivisionByZeroError,
        )
    assert pool.circuit_breaker.state is CircuitState.CLOSED
    assert pool.get_circuit_breaker_metrics()["ignored_calls"] == 3


# -- many callers --------------------------------------------------------------


async def test_200_concurrent_calls_fail_fast_once_open(
    make_pool: MakePool, proxied_dsn: str, proxy: FaultProxy
) -> None:
    """With the circuit open, 200 concurrent queries are all rejected at once."""
    pool = make_pool(proxied_dsn, circuit_breaker_failure_threshold=1)
    proxy.blackhole()
    await _fails(pool.fetchval("SELECT 1"), TimeoutError)
    before = proxy.connections_total
    started = time.perf_counter()
    results = await asyncio.gather(
        *(pool.fetchval("SELECT 1") for _ in range(200)), return_exceptions=True
    )
    assert time.perf_counter() - started < CONNECT_TIMEOUT  # no call waited for a connect
    assert all(isinstance(r, CircuitOpenError) for r in results)
    assert proxy.connections_total == before


async def test_200_concurrent_calls_at_outage_start_are_rejected_when_it_opens(
    make_pool: MakePool, proxied_dsn: str, proxy: FaultProxy
) -> None:
    """Callers queued for a connection when the circuit opens are rejected at once."""
    pool = make_pool(proxied_dsn, max_size=10, acquire_timeout=5.0)
    proxy.blackhole()
    waited: list[float] = []

    async def call() -> BaseException | None:
        started = time.perf_counter()
        try:
            await pool.fetchval("SELECT 1")
        except Exception as exc:
            return exc
        finally:
            waited.append(time.perf_counter() - started)
        return None

    results = await asyncio.gather(*(call() for _ in range(200)))
    timeouts = sum(isinstance(r, TimeoutError) for r in results)
    rejected = sum(isinstance(r, CircuitOpenError) for r in results)
    assert timeouts + rejected == 200
    # Only calls that started connecting before the fifth failure opened the
    # circuit wait for a connect timeout: the 10 first, plus at most 4 that
    # took a slot freed by failures 1-4.
    assert timeouts <= 10 + 4
    assert proxy.connections_total == timeouts
    assert max(waited) < 2 * CONNECT_TIMEOUT + 2.0  # never the acquire_timeout (5 s)


async def test_half_open_lets_only_the_probes_through(
    make_pool: MakePool, proxied_dsn: str, proxy: FaultProxy, clock: FakeClock
) -> None:
    """After the recovery timeout, 100 concurrent callers send 3 probes to a server still down."""
    pool = make_pool(proxied_dsn, circuit_breaker_failure_threshold=1)
    proxy.refuse()
    await _fails(pool.fetchval("SELECT 1"), DOWN)
    clock.advance(60)
    results = await asyncio.gather(
        *(pool.fetchval("SELECT 1") for _ in range(100)), return_exceptions=True
    )
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 97
    assert pool.get_circuit_breaker_metrics()["failed_calls"] == 1 + 3
    assert pool.circuit_breaker.state is CircuitState.OPEN


async def test_pool_exhaustion_is_a_resource_failure(make_pool: MakePool, pg_dsn: str) -> None:
    """With every connection busy past acquire_timeout, a call fails with PoolExhaustedError."""
    pool = make_pool(pg_dsn, max_size=1, acquire_timeout=0.2)
    async with pool.acquire():
        started = time.perf_counter()
        error = await _fails(pool.fetchval("SELECT 1"), PoolExhaustedError)
        assert 0.15 < time.perf_counter() - started < 2.0
    assert isinstance(error, PoolExhaustedError)
    assert error.max_size == 1
    assert pool.get_circuit_breaker_metrics()["failures_by_category"] == {"RESOURCE_ERROR": 1}
    assert await pool.fetchval("SELECT 1") == 1


async def test_waiting_callers_are_rejected_when_the_circuit_opens(
    make_pool: MakePool, pg_dsn: str
) -> None:
    """A call waiting for a free connection fails with CircuitOpenError when the circuit opens."""
    pool = make_pool(pg_dsn, max_size=1, acquire_timeout=5.0)
    async with pool.acquire():
        waiting = asyncio.ensure_future(pool.fetchval("SELECT 1"))

        async def queued() -> bool:
            return bool(pool.pool_status()["waiting"] == 1)

        await _until(queued, "the call to queue for a connection")
        assert not waiting.done()
        pool.circuit_breaker.force_open()
        started = time.perf_counter()
        await _fails(waiting, CircuitOpenError)
        assert time.perf_counter() - started < 1.0  # not the acquire_timeout (5 s)
    assert (await pool.get_circuit_breaker_status())["pool"]["in_use"] == 0


async def test_waiting_callers_get_connections_in_turn(make_pool: MakePool, pg_dsn: str) -> None:
    """Twenty calls on a two-connection pool all succeed."""
    pool = make_pool(pg_dsn, max_size=2)
    results = await asyncio.gather(*(pool.fetchval("SELECT $1::int", i) for i in range(20)))
    assert results == list(range(20))
    status = await pool.get_circuit_breaker_status()
    assert status["pool"]["size"] <= 2
    assert status["pool"]["in_use"] == 0


async def test_cancelled_caller_gives_its_connection_back(
    make_pool: MakePool, pg_dsn: str, admin: Any
) -> None:
    """Cancelling a running query is ignored by the breaker and frees the connection."""
    pool = make_pool(pg_dsn, max_size=1)
    query = asyncio.ensure_future(pool.fetchval("SELECT pg_sleep(5) /* cancelled-caller */"))
    await _until(_running(admin, "cancelled-caller"), "the query to run")
    query.cancel()
    with pytest.raises(asyncio.CancelledError):
        await query
    assert await pool.fetchval("SELECT 1") == 1
    metrics = pool.get_circuit_breaker_metrics()
    assert metrics["ignored_calls"] == 1
    assert metrics["failed_calls"] == 0


# -- the guarded connection ----------------------------------------------------


async def test_acquire_runs_the_block_on_one_connection(make_pool: MakePool, pg_dsn: str) -> None:
    """acquire() yields a connection whose session lasts the whole block."""
    pool = make_pool(pg_dsn)
    async with pool.acquire() as con, con.transaction():
        await con.execute("CREATE TEMP TABLE t (n int)")
        await con.executemany("INSERT INTO t VALUES ($1)", [(1,), (2,)])
        assert await con.fetchval("SELECT sum(n) FROM t") == 3
    assert pool.get_circuit_breaker_metrics()["successful_calls"] == 1


async def test_acquire_block_errors_of_the_application_are_not_failures(
    make_pool: MakePool, pg_dsn: str
) -> None:
    """An application exception in an acquire() block propagates and counts as a success."""
    pool = make_pool(pg_dsn, circuit_breaker_failure_threshold=1)

    class Insufficient(Exception):
        pass

    async def withdraw() -> None:
        async with pool.acquire() as con:
            await con.fetchval("SELECT 1")
            raise Insufficient("balance too low")

    for _ in range(3):
        await _fails(withdraw(), Insufficient)
    assert pool.circuit_breaker.state is CircuitState.CLOSED
    assert pool.get_circuit_breaker_metrics()["successful_calls"] == 3


async def test_acquire_block_connection_loss_is_a_failure(
    make_pool: MakePool, pg_dsn: str, admin: Any
) -> None:
    """A connection killed during an acquire() block counts as a CONNECTION_ERROR failure."""
    pool = make_pool(pg_dsn, circuit_breaker_failure_threshold=1)

    async def killed_mid_block() -> None:
        async with pool.acquire() as con:
            pid = await con.fetchval("SELECT pg_backend_pid()")
            sleeper = asyncio.ensure_future(con.fetchval("SELECT pg_sleep(5) /* mid-block */"))
            await _until(_running(admin, "mid-block"), "the query to run")
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            await sleeper

    await _fails(killed_mid_block(), asyncpg.PostgresConnectionError)
    assert pool.circuit_breaker.state is CircuitState.OPEN


async def test_acquire_is_rejected_while_open(make_pool: MakePool, pg_dsn: str) -> None:
    """acquire() raises CircuitOpenError while the circuit is open, and counts the rejection."""
    pool = make_pool(pg_dsn)
    pool.circuit_breaker.force_open()
    with pytest.raises(CircuitOpenError):
        async with pool.acquire():
            pass  # pragma: no cover
    assert pool.get_circuit_breaker_metrics()["rejected_calls"] == 1


# -- settings and lifecycle ------------------------------------------------------


async def test_disabled_breaker_lets_every_call_through(
    make_pool: MakePool, proxied_dsn: str, proxy: FaultProxy
) -> None:
    """circuit_breaker_enabled=False: failures never open the circuit and are not recorded."""
    pool = make_pool(
        proxied_dsn, circuit_breaker_enabled=False, circuit_breaker_failure_threshold=1
    )
    proxy.refuse()
    for _ in range(5):
        await _fails(pool.fetchval("SELECT 1"), DOWN)
    assert pool.circuit_breaker.state is CircuitState.DISABLED
    assert (await pool.get_circuit_breaker_status())["calls_in_window"] == 0


async def test_close_ends_the_pool(make_pool: MakePool, pg_dsn: str) -> None:
    """After close(), calls raise InterfaceError (a misuse, not an outage)."""
    pool = make_pool(pg_dsn)
    assert await pool.fetchval("SELECT 1") == 1
    await pool.close()
    await pool.close()
    await _fails(pool.fetchval("SELECT 1"), asyncpg.InterfaceError)
    assert pool.closed
    assert pool.circuit_breaker.state is CircuitState.CLOSED


async def test_async_with_closes_the_pool(pg_dsn: str, registry: Registry) -> None:
    """async with ResilientPool(...) closes it on exit."""
    async with ResilientPool(pg_dsn, name="ctx", registry=registry) as pool:
        assert await pool.fetchval("SELECT 1") == 1
    assert pool.closed


async def test_close_while_the_server_hangs_is_bounded(
    make_pool: MakePool, proxied_dsn: str, proxy: FaultProxy
) -> None:
    """close() returns within its timeout even when the server stopped answering."""
    pool = make_pool(proxied_dsn)
    assert await pool.fetchval("SELECT 1") == 1
    proxy.blackhole()
    started = time.perf_counter()
    await pool.close(timeout=0.3)
    assert time.perf_counter() - started < 2.0  # not the command_timeout (5 s)


async def test_queries_return_results(make_pool: MakePool, pg_dsn: str) -> None:
    """fetch, fetchrow, fetchval, execute and executemany behave as asyncpg's."""
    pool = make_pool(pg_dsn)
    table = f"rp_t_{uuid.uuid4().hex[:10]}"
    await pool.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, name text)")
    try:
        await pool.executemany(f"INSERT INTO {table} VALUES ($1, $2)", [(1, "a"), (2, "b")])
        rows = await pool.fetch(f"SELECT id, name FROM {table} ORDER BY id")
        assert [tuple(r) for r in rows] == [(1, "a"), (2, "b")]
        row = await pool.fetchrow(f"SELECT name FROM {table} WHERE id = $1", 2)
        assert row is not None and row["name"] == "b"
        assert await pool.fetchrow(f"SELECT name FROM {table} WHERE id = 9") is None
        assert await pool.fetchval(f"SELECT name FROM {table} WHERE id = 1") == "a"
        assert await pool.execute(f"DELETE FROM {table} WHERE id = $1", 1) == "DELETE 1"
    finally:
        await pool.execute(f"DROP TABLE {table}")


async def test_execute_query_fetch_modes(make_pool: MakePool, pg_dsn: str) -> None:
    """execute_query returns dicts, one dict or None, a value, or the status string."""
    pool = make_pool(pg_dsn)
    query = "SELECT g AS n, g * 2 AS twice FROM generate_series(1, $1::int) g"
    assert await pool.execute_query({"query": query, "parameters": [2]}) == [
        {"n": 1, "twice": 2},
        {"n": 2, "twice": 4},
    ]
    one = {"query": query, "parameters": [1], "fetch_mode": "one"}
    assert await pool.execute_query(one) == {"n": 1, "twice": 2}
    none = {"query": query, "parameters": [0], "fetch_mode": "one"}
    assert await pool.execute_query(none) is None
    assert await pool.execute_query({"query": "SELECT 7", "fetch_mode": "val"}) == 7
    assert await pool.execute_query({"query": "SELECT 1", "fetch_mode": "none"}) == "SELECT 1"


async def test_status_reports_breaker_and_pool(make_pool: MakePool, pg_dsn: str) -> None:
    """get_circuit_breaker_status has the breaker's keys and the pool's size and idle count."""
    pool = make_pool(pg_dsn, max_size=3)
    await pool.fetchval("SELECT 1")
    status = await pool.get_circuit_breaker_status()
    for key in ("name", "state", "failure_count", "last_failure_time", "open_count"):
        assert key in status
    assert status["pool"]["size"] == 1
    assert status["pool"]["idle"] == 1
    assert status["pool"]["max_size"] == 3


async def test_listener_sees_the_circuit_open(
    make_pool: MakePool, proxied_dsn: str, proxy: FaultProxy
) -> None:
    """A listener added on pool.circuit_breaker is told when an outage opens it."""
    pool = make_pool(proxied_dsn, circuit_breaker_failure_threshold=1)
    seen: list[tuple[str, str]] = []
    pool.circuit_breaker.add_listener(lambda old, new, reason: seen.append((old.value, new.value)))
    proxy.refuse()
    await _fails(pool.fetchval("SELECT 1"), DOWN)
    assert seen == [("closed", "open")]


async def test_default_settings_never_hang_a_caller_long(
    registry: Registry, proxied_dsn: str, proxy: FaultProxy, admin: Any
) -> None:
    """With default settings and a black-holed server: the query already running fails
    within command_timeout, and new callers within connect_timeout, by which time the
    circuit is open (issue 15: not 30 s, 5 s and 5.3 s)."""
    from resilience.integrations.asyncpg import (
        DEFAULT_COMMAND_TIMEOUT,
        DEFAULT_CONNECT_TIMEOUT,
    )

    pool = ResilientPool(proxied_dsn, registry=registry, name=f"pg-{uuid.uuid4().hex[:8]}")
    try:
        assert await pool.fetchval("SELECT 1") == 1
        marker = f"m{uuid.uuid4().hex[:12]}"
        running = asyncio.create_task(pool.fetchval(f"SELECT pg_sleep(8), '{marker}'"))
        await _until(_running(admin, marker), "the query to run")
        proxy.blackhole()
        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            await running
        # Bounded by command_timeout (plus scheduling slack on a loaded machine).
        assert time.perf_counter() - started < DEFAULT_COMMAND_TIMEOUT + 2.0

        opened: list[float] = []
        pool.circuit_breaker.add_listener(
            lambda old, new, reason: (
                opened.append(time.perf_counter()) if new is CircuitState.OPEN else None
            )
        )
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(pool.fetchval("SELECT 1") for _ in range(12)), return_exceptions=True
        )
        # The circuit opens once the first connects time out; a caller that
        # was handed a slot just before it opened may spend one more connect.
        assert opened and opened[0] - started < DEFAULT_CONNECT_TIMEOUT + 2.0
        assert time.perf_counter() - started < 2 * DEFAULT_CONNECT_TIMEOUT + 2.0
        assert all(isinstance(a, Exception) for a in answers)
        assert pool.circuit_breaker.state is CircuitState.OPEN
        with pytest.raises(CircuitOpenError):
            await pool.fetchval("SELECT 1")  # rejected at once from now on
    finally:
        proxy.pass_through()
        await pool.close(timeout=1.0)
