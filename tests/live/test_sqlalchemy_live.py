"""classify() and a breaker on real PostgreSQL errors through SQLAlchemy (asyncpg
and psycopg drivers, async and sync): caller mistakes never trip; a dead server does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

sa = pytest.importorskip("sqlalchemy")
pytest.importorskip("psycopg")

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: E402

from resilience import (  # noqa: E402
    CircuitBreaker,
    CircuitState,
    ErrorCategory,
    classify,
    is_transient,
)
from resilience.testing import FakeClock, FaultProxy  # noqa: E402

C = ErrorCategory
DRIVERS = ["asyncpg", "psycopg"]


def url_for(dsn: str, driver: str, *, user: str | None = None, port: int | None = None) -> str:
    parts = urlsplit(dsn)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user or parts.username or 'postgres'}@{host}:{port or parts.port or 5432}"
    return urlunsplit((f"postgresql+{driver}", netloc, parts.path, parts.query, ""))


@pytest.fixture(params=DRIVERS)
async def engine(request: pytest.FixtureRequest, pg_dsn: str) -> AsyncIterator[AsyncEngine]:
    """An async engine on the real PostgreSQL, through each driver."""
    the_engine = create_async_engine(url_for(pg_dsn, request.param), pool_size=1, max_overflow=0)
    yield the_engine
    await the_engine.dispose()


async def error_of(engine: AsyncEngine, sql: str) -> BaseException:
    with pytest.raises(sa.exc.SQLAlchemyError) as info:
        async with engine.connect() as conn:
            await conn.execute(sa.text(sql))
    return info.value


def raising(sqlstate: str) -> str:
    """A statement that makes the server raise ``sqlstate`` (a real server error)."""
    return f"DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{sqlstate}'; END $$"


@pytest.mark.parametrize(
    ("sql", "category"),
    [
        ("SELEC 1", C.QUERY_ERROR),
        ("SELECT 1/0", C.QUERY_ERROR),
        ("SELECT * FROM no_such_table_i14", C.QUERY_ERROR),
        (raising("57014"), C.TIMEOUT_ERROR),
        (raising("53300"), C.RESOURCE_ERROR),
        (raising("40001"), C.DATABASE_ERROR),
    ],
    ids=["syntax", "division", "undefined-table", "57014", "53300", "40001"],
)
async def test_server_errors_classify_through_sqlalchemy(
    engine: AsyncEngine, sql: str, category: ErrorCategory
) -> None:
    """The SQLSTATE under SQLAlchemy's wrapper decides, for both drivers."""
    assert classify(await error_of(engine, sql)) is category


async def test_a_wrapped_serialization_failure_is_retried_by_default(engine: AsyncEngine) -> None:
    """40001 under SQLAlchemy is transient, as it is bare."""
    assert is_transient(await error_of(engine, raising("40001")))


async def test_statement_timeout_is_a_timeout(engine: AsyncEngine) -> None:
    """A real statement_timeout (57014) through each driver."""
    async with engine.connect() as conn:
        await conn.execute(sa.text("SET statement_timeout = 10"))
        with pytest.raises(sa.exc.SQLAlchemyError) as info:
            await conn.execute(sa.text("SELECT pg_sleep(1)"))
    assert classify(info.value) is C.TIMEOUT_ERROR


async def test_caller_mistakes_leave_the_breaker_closed(engine: AsyncEngine) -> None:
    """Bad SQL, a division by zero, a missing table: ten of them, still CLOSED."""
    breaker = CircuitBreaker("sa-mistakes", clock=FakeClock(), failure_threshold=2)

    async def run(sql: str) -> None:
        async with engine.connect() as conn:
            await conn.execute(sa.text(sql))

    for sql in ["SELEC 1", "SELECT 1/0", "SELECT * FROM no_such_table_i14"] * 3:
        with pytest.raises(sa.exc.SQLAlchemyError):
            await breaker.call(run, sql)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics()["ignored_calls"] == 9


@pytest.mark.parametrize("driver", DRIVERS)
async def test_unknown_role(pg_dsn: str, driver: str) -> None:
    """asyncpg reports SQLSTATE 28000 (authentication); libpq gives psycopg
    none at connect time, so it reads as a connection error (documented)."""
    engine = create_async_engine(url_for(pg_dsn, driver, user="no_such_role_i14"))
    try:
        exc = await error_of(engine, "SELECT 1")
    finally:
        await engine.dispose()
    expected = C.AUTHENTICATION_ERROR if driver == "asyncpg" else C.CONNECTION_ERROR
    assert classify(exc) is expected


@pytest.mark.parametrize("driver", DRIVERS)
async def test_a_dead_server_opens_the_breaker(
    pg_host_port: tuple[str, int], pg_dsn: str, driver: str
) -> None:
    """With the server refusing connections, two failures open the circuit."""
    async with FaultProxy(*pg_host_port) as proxy:
        engine = create_async_engine(url_for(pg_dsn, driver, port=proxy.port))
        breaker = CircuitBreaker("sa-dead", clock=FakeClock(), failure_threshold=2)

        async def select_one() -> Any:
            async with engine.connect() as conn:
                return (await conn.execute(sa.text("SELECT 1"))).scalar()

        try:
            assert await breaker.call(select_one) == 1
            proxy.refuse()
            await engine.dispose()  # no pooled connection survives the cut
            for _ in range(2):
                with pytest.raises(Exception) as info:
                    await breaker.call(select_one)
                assert classify(info.value) is C.CONNECTION_ERROR
            assert breaker.state is CircuitState.OPEN
        finally:
            await engine.dispose()


async def test_pool_exhaustion_is_a_resource_error(pg_dsn: str) -> None:
    """SQLAlchemy's pool TimeoutError (no connection free in time)."""
    engine = create_async_engine(
        url_for(pg_dsn, "asyncpg"), pool_size=1, max_overflow=0, pool_timeout=0.05
    )
    try:
        async with engine.connect():
            with pytest.raises(sa.exc.TimeoutError) as info:
                async with engine.connect():
                    pass
        assert classify(info.value) is C.RESOURCE_ERROR
    finally:
        await engine.dispose()


@pytest.fixture
def sync_engine(pg_dsn: str) -> Iterator[Any]:
    """A sync engine through psycopg."""
    the_engine = sa.create_engine(url_for(pg_dsn, "psycopg"), pool_size=1, max_overflow=0)
    yield the_engine
    the_engine.dispose()


def test_sync_sqlalchemy_errors_classify_too(sync_engine: Any) -> None:
    """The sync engine wraps the same way: bad SQL is a query error."""
    with pytest.raises(sa.exc.ProgrammingError) as info, sync_engine.connect() as conn:
        conn.execute(sa.text("SELEC 1"))
    assert classify(info.value) is C.QUERY_ERROR


def test_sync_refused_connection_is_a_connection_error(pg_dsn: str) -> None:
    """psycopg's OperationalError without SQLSTATE, under SQLAlchemy's."""
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = sa.create_engine(url_for(pg_dsn, "psycopg", port=port))
    try:
        with pytest.raises(sa.exc.OperationalError) as info, engine.connect():
            pass
    finally:
        engine.dispose()
    assert classify(info.value) is C.CONNECTION_ERROR
