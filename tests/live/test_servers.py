"""Throwaway servers really start, answer and stop; the availability probes tell the truth."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio

from resilience.testing import ThrowawayPostgres, ThrowawayRedis, _servers
from resilience.testing._servers import postgres_available, redis_available

# Starting a server takes about a second; anything past this is a hang.
TEST_TIMEOUT = 60.0


def refuses(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:port any more."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return False
    except ConnectionRefusedError:
        return True


def exists(path: Path) -> bool:
    return path.exists()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_throwaway_postgres_serves_then_stops() -> None:
    """A ThrowawayPostgres answers SELECT 1, and after stop its port refuses and its dir is gone."""
    async with asyncio.timeout(TEST_TIMEOUT):
        async with ThrowawayPostgres() as server:
            connection = await asyncpg.connect(server.dsn, timeout=5)
            try:
                assert await connection.fetchval("SELECT 1") == 1
                assert await connection.fetchval("SELECT current_database()") == "test"
            finally:
                await connection.close()
            port, tmpdir = server.port, server._tmpdir
            assert tmpdir is not None
        assert refuses(port)
        assert not exists(tmpdir)
        assert not server.running


async def test_throwaway_postgres_runs_on_pgservers_bundled_binaries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no system PostgreSQL, the binaries bundled by pgserver (the demo extra) serve."""
    pytest.importorskip("pgserver", reason="pgserver comes with the demo extra")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(_servers, "_PG_BIN_GLOBS", ())
    bundled = _servers._pgserver_bindir()
    assert bundled is not None
    async with asyncio.timeout(TEST_TIMEOUT):
        async with ThrowawayPostgres() as server:
            connection = await asyncpg.connect(server.dsn, timeout=5)
            try:
                assert await connection.fetchval("SELECT 1") == 1
            finally:
                await connection.close()
            assert server._command is not None and server._command.bindir == bundled


def test_throwaway_redis_serves_then_stops() -> None:
    """A ThrowawayRedis answers PING, and after stop its port refuses and its dir is gone."""

    async def ping(url: str) -> bool:
        client = redis.asyncio.from_url(url, socket_timeout=5)
        try:
            return bool(await client.ping())
        finally:
            await client.aclose()

    with ThrowawayRedis(start_timeout=TEST_TIMEOUT) as server:
        assert asyncio.run(ping(server.url))
        port, tmpdir = server.port, server._tmpdir
        assert tmpdir is not None
    assert refuses(port)
    assert not exists(tmpdir)


def test_stop_is_idempotent() -> None:
    """stop() may be called twice, and before start()."""
    server = ThrowawayRedis()
    server.stop()
    server.start()
    server.stop()
    server.stop()
    assert not server.running


def test_port_before_start_raises() -> None:
    """A server that is not running has no port (nor DSN)."""
    with pytest.raises(RuntimeError, match="not running"):
        _ = ThrowawayPostgres().dsn


def test_missing_postgres_binaries_raise_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without initdb/pg_ctl anywhere, start() raises a RuntimeError saying what is missing."""
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(_servers, "_PG_BIN_GLOBS", ())
    monkeypatch.setitem(sys.modules, "pgserver", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "pgserver._commands", None)
    with pytest.raises(RuntimeError, match="initdb"):
        ThrowawayPostgres().start()


def test_missing_redis_server_raises_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without redis-server on PATH, start() raises a RuntimeError naming it."""
    monkeypatch.setenv("PATH", "")
    with pytest.raises(RuntimeError, match="redis-server"):
        ThrowawayRedis().start()


async def test_postgres_available_for_fixture_dsn(pg_dsn: str) -> None:
    """postgres_available is True for the session's server."""
    assert await postgres_available(pg_dsn)


async def test_postgres_available_false_when_nothing_listens() -> None:
    """postgres_available is False, not an error, for a closed port."""
    assert not await postgres_available(f"postgresql://postgres@127.0.0.1:{closed_port()}/test")


async def test_postgres_available_false_for_missing_database(pg_dsn: str) -> None:
    """postgres_available logs in for real: an unknown database reads as unavailable."""
    dsn = pg_dsn.rsplit("/", 1)[0] + "/no_such_database_here"
    assert not await postgres_available(dsn)


async def test_redis_available_for_fixture_url(redis_url: str) -> None:
    """redis_available is True for the session's server."""
    assert await redis_available(redis_url)


async def test_redis_available_false_when_nothing_listens() -> None:
    """redis_available is False, not an error, for a closed port."""
    assert not await redis_available(f"redis://127.0.0.1:{closed_port()}/0")


async def test_redis_available_false_for_non_redis_server(pg_host_port: tuple[str, int]) -> None:
    """redis_available wants a PONG: a server speaking another protocol reads as unavailable."""
    host, port = pg_host_port
    assert not await redis_available(f"redis://{host}:{port}/0", timeout=1.0)


def test_pg_host_port_points_at_the_server(pg_host_port: tuple[str, int]) -> None:
    """pg_host_port is where the session's PostgreSQL listens."""
    with socket.create_connection(pg_host_port, timeout=2.0):
        pass


def test_tests_here_are_marked_integration(request: pytest.FixtureRequest) -> None:
    """The conftest marks every test in tests/live as integration."""
    assert request.node.get_closest_marker("integration") is not None
