"""FaultProxy: every mode, against a local echo server and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from resilience.testing import FaultProxy

# Every network wait in this file is bounded by one of these.
IO_TIMEOUT = 2.0
SILENCE = 0.3  # how long "nothing arrives" is watched for


class EchoServer:
    """A tiny asyncio echo server that counts and can drop its connections."""

    def __init__(self) -> None:
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        while self._tasks:
            await asyncio.wait(set(self._tasks))
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.accepted += 1
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._writers.discard(writer)
            self._tasks.discard(task)


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def proxy(echo: EchoServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", echo.port) as fault_proxy:
        yield fault_proxy


@contextlib.asynccontextmanager
async def client(
    proxy: FaultProxy,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    async with asyncio.timeout(IO_TIMEOUT):
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            async with asyncio.timeout(IO_TIMEOUT):
                await writer.wait_closed()


async def round_trip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes = b"ping"
) -> bytes:
    async with asyncio.timeout(IO_TIMEOUT):
        writer.write(payload)
        await writer.drain()
        return await reader.readexactly(len(payload))


async def wait_for(condition: object, what: str) -> None:
    """Poll ``condition()`` until true, for at most IO_TIMEOUT."""
    assert callable(condition)
    deadline = time.monotonic() + IO_TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def open_socket_inodes() -> set[str]:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:"):
                inodes.add(target)
    return inodes


# -- pass ----------------------------------------------------------------------------


async def test_pass_through_echoes_bytes(proxy: FaultProxy) -> None:
    """In pass mode bytes go to the server and its answer comes back."""
    async with client(proxy) as (reader, writer):
        assert await round_trip(reader, writer, b"hello") == b"hello"


async def test_large_payload_passes_intact(proxy: FaultProxy) -> None:
    """A payload spanning many chunks arrives complete and in order."""
    payload = os.urandom(1024 * 1024)
    async with client(proxy) as (reader, writer):
        assert await round_trip(reader, writer, payload) == payload


async def test_counters_follow_connections(proxy: FaultProxy) -> None:
    """connections_total counts accepts; active_connections drops when a client leaves."""
    async with client(proxy) as (reader, writer):
        await round_trip(reader, writer)
        assert (proxy.connections_total, proxy.active_connections) == (1, 1)
    await wait_for(lambda: proxy.active_connections == 0, "the link to close")
    assert proxy.connections_total == 1


# -- refuse --------------------------------------------------------------------------


async def test_refuse_fails_new_connections_fast(proxy: FaultProxy) -> None:
    """In refuse mode a connect fails at once with connection refused."""
    proxy.refuse()
    async with asyncio.timeout(1.0):
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(proxy.host, proxy.port)
    assert proxy.mode == "refuse"


async def test_refuse_cuts_open_connections(proxy: FaultProxy) -> None:
    """Switching to refuse resets connections that were already open."""
    async with client(proxy) as (reader, writer):
        await round_trip(reader, writer)
        proxy.refuse()
        with pytest.raises(ConnectionResetError):
            await round_trip(reader, writer)
    assert proxy.active_connections == 0


async def test_pass_after_refuse_reopens_same_port(proxy: FaultProxy) -> None:
    """Going back to pass re-opens the same port and traffic flows again."""
    port = proxy.port
    proxy.refuse()
    proxy.pass_through()
    assert proxy.port == port
    async with client(proxy) as (reader, writer):
        assert await round_trip(reader, writer) == b"ping"


# -- blackhole -----------------------------------------------------------------------


async def test_blackhole_accepts_but_never_answers(proxy: FaultProxy) -> None:
    """In blackhole mode a connect succeeds but no answer ever comes."""
    proxy.blackhole()
    async with client(proxy) as (reader, writer):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(round_trip(reader, writer), SILENCE)


async def test_blackhole_stops_open_connections(proxy: FaultProxy) -> None:
    """Switching to blackhole silences a connection that was already forwarding."""
    async with client(proxy) as (reader, writer):
        await round_trip(reader, writer)
        proxy.blackhole()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(round_trip(reader, writer), SILENCE)


async def test_blackhole_never_reaches_the_server(proxy: FaultProxy, echo: EchoServer) -> None:
    """A connection accepted while black-holed opens no connection upstream."""
    proxy.blackhole()
    async with client(proxy) as (_, writer):
        writer.write(b"ping")
        await asyncio.sleep(SILENCE)
        assert echo.accepted == 0


async def test_pass_after_blackhole_delivers_held_bytes(proxy: FaultProxy) -> None:
    """Bytes held back by blackhole are delivered, in order, once pass resumes."""
    async with client(proxy) as (reader, writer):
        proxy.blackhole()
        writer.write(b"held")
        await asyncio.sleep(0.05)
        proxy.pass_through()
        async with asyncio.timeout(IO_TIMEOUT):
            assert await reader.readexactly(4) == b"held"


# -- reset ---------------------------------------------------------------------------


async def test_reset_aborts_open_connections(proxy: FaultProxy) -> None:
    """Switching to reset aborts open connections with an RST."""
    async with client(proxy) as (reader, writer):
        await round_trip(reader, writer)
        proxy.reset()
        with pytest.raises(ConnectionResetError):
            await round_trip(reader, writer)


async def test_reset_aborts_new_connection_on_first_bytes(proxy: FaultProxy) -> None:
    """In reset mode a new connection is accepted, then reset when it sends."""
    proxy.reset()
    async with client(proxy) as (reader, writer):
        with pytest.raises(ConnectionResetError):
            await round_trip(reader, writer)


async def test_pass_after_reset_recovers(proxy: FaultProxy) -> None:
    """New connections work again once the proxy is back in pass mode."""
    proxy.reset()
    proxy.pass_through()
    async with client(proxy) as (reader, writer):
        assert await round_trip(reader, writer) == b"ping"


# -- latency -------------------------------------------------------------------------


async def test_latency_delays_each_direction(proxy: FaultProxy) -> None:
    """A round trip through latency mode takes at least twice the delay."""
    delay = 0.15
    async with client(proxy) as (reader, writer):
        proxy.latency(delay)
        started = time.monotonic()
        await round_trip(reader, writer)
        assert time.monotonic() - started >= 2 * delay * 0.9


async def test_latency_keeps_bytes_in_order(proxy: FaultProxy) -> None:
    """Chunks delayed by latency mode arrive complete and in order."""
    proxy.latency(0.02)
    payload = b"".join(b"%04d" % i for i in range(50))
    async with client(proxy) as (reader, writer):
        for i in range(0, len(payload), 8):
            writer.write(payload[i : i + 8])
            await writer.drain()
        async with asyncio.timeout(IO_TIMEOUT):
            assert await reader.readexactly(len(payload)) == payload


# -- modes by name, validation -------------------------------------------------------


def test_set_mode_switches_by_name() -> None:
    """set_mode takes a mode name and its parameters."""
    fault_proxy = FaultProxy("127.0.0.1", 5432)
    fault_proxy.set_mode("latency", seconds=0.25)
    assert (fault_proxy.mode, fault_proxy.latency_seconds) == ("latency", 0.25)
    fault_proxy.set_mode("blackhole")
    assert (fault_proxy.mode, fault_proxy.latency_seconds) == ("blackhole", 0.0)


async def test_mode_can_be_assigned_by_name(proxy: FaultProxy) -> None:
    """`proxy.mode = "refuse"` switches like refuse(); latency still needs its delay."""
    proxy.mode = "refuse"
    assert proxy.mode == "refuse"
    with pytest.raises(OSError):
        async with asyncio.timeout(IO_TIMEOUT):
            await asyncio.open_connection(proxy.host, proxy.port)
    proxy.mode = "pass"
    async with client(proxy) as (reader, writer):
        assert await round_trip(reader, writer, b"back") == b"back"
    with pytest.raises(TypeError, match="seconds"):
        proxy.mode = "latency"


def test_set_mode_rejects_unknown_name() -> None:
    """An unknown mode name is a ValueError that names it."""
    with pytest.raises(ValueError, match="'partition'"):
        FaultProxy("127.0.0.1", 5432).set_mode("partition")


@pytest.mark.parametrize("seconds", [-0.1, float("nan"), float("inf")])
def test_latency_rejects_bad_seconds(seconds: float) -> None:
    """A negative or non-finite latency is a ValueError naming the latency."""
    with pytest.raises(ValueError, match="latency"):
        FaultProxy("127.0.0.1", 5432).latency(seconds)


def test_set_mode_rejects_negative_latency() -> None:
    """set_mode("latency") validates seconds like latency() does."""
    with pytest.raises(ValueError, match="latency"):
        FaultProxy("127.0.0.1", 5432).set_mode("latency", seconds=-1)


def test_set_mode_rejects_unexpected_parameters() -> None:
    """Parameters a mode does not take are a TypeError."""
    with pytest.raises(TypeError, match="seconds"):
        FaultProxy("127.0.0.1", 5432).set_mode("pass", seconds=1.0)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::"])
def test_rejects_non_loopback_listen_host(host: str) -> None:
    """A listen host that is not loopback is a ValueError naming listen_host."""
    with pytest.raises(ValueError, match="listen_host"):
        FaultProxy("127.0.0.1", 5432, listen_host=host)


@pytest.mark.parametrize("host", ["10.0.0.5", "db.example.com", "2001:db8::1"])
def test_rejects_non_loopback_target_host(host: str) -> None:
    """A target host that is not loopback is a ValueError naming target_host."""
    with pytest.raises(ValueError, match="target_host"):
        FaultProxy(host, 5432)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost", "LOCALHOST"])
def test_accepts_loopback_hosts(host: str) -> None:
    """Any 127.0.0.0/8 address, ::1 and localhost are accepted on both sides."""
    FaultProxy(host, 5432, listen_host=host)


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_rejects_bad_target_port(port: int) -> None:
    """A target port outside [1, 65535] is a ValueError naming target_port."""
    with pytest.raises(ValueError, match="target_port"):
        FaultProxy("127.0.0.1", port)


def test_port_before_start_raises() -> None:
    """With listen_port=0 the port is unknown until start()."""
    with pytest.raises(RuntimeError, match="start"):
        _ = FaultProxy("127.0.0.1", 5432).port


async def test_address_is_host_and_port(proxy: FaultProxy) -> None:
    """address is "host:port" of the listening socket."""
    assert proxy.address == f"127.0.0.1:{proxy.port}"


async def test_localhost_listens_on_ipv4_loopback(echo: EchoServer) -> None:
    """listen_host="localhost" binds exactly 127.0.0.1."""
    async with FaultProxy("localhost", echo.port, listen_host="localhost") as fault_proxy:
        assert fault_proxy.host == "127.0.0.1"
        async with client(fault_proxy) as (reader, writer):
            assert await round_trip(reader, writer) == b"ping"


async def test_mode_set_before_start_applies_at_start(echo: EchoServer) -> None:
    """A mode chosen before start() is in force as soon as the proxy runs."""
    fault_proxy = FaultProxy("127.0.0.1", echo.port)
    fault_proxy.refuse()
    async with fault_proxy:
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(fault_proxy.host, fault_proxy.port)


async def test_unreachable_target_resets_client() -> None:
    """When the target refuses, the proxy resets the client's connection."""
    async with (
        FaultProxy("127.0.0.1", closed_port()) as fault_proxy,
        client(fault_proxy) as (reader, writer),
    ):
        with pytest.raises(ConnectionResetError):
            await round_trip(reader, writer)


# -- lifecycle -----------------------------------------------------------------------


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
async def test_stop_leaves_no_open_sockets(echo: EchoServer) -> None:
    """After stop() the proxy holds no socket: listener, clients and upstreams are closed."""
    before = open_socket_inodes()
    fault_proxy = FaultProxy("127.0.0.1", echo.port)
    await fault_proxy.start()
    async with client(fault_proxy) as (reader, writer):
        await round_trip(reader, writer)
        fault_proxy.blackhole()
        async with client(fault_proxy) as (_, held_writer):
            held_writer.write(b"held")
            await wait_for(lambda: fault_proxy.active_connections == 2, "two links")
            await fault_proxy.stop()
    # The echo server closes its end of the upstream a moment after the RST.
    await wait_for(lambda: open_socket_inodes() <= before, "every proxy socket to close")
    assert fault_proxy.active_connections == 0


async def test_stop_closes_the_port(echo: EchoServer) -> None:
    """Once stopped, the proxy's port refuses connections."""
    async with FaultProxy("127.0.0.1", echo.port) as fault_proxy:
        pass
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(fault_proxy.host, fault_proxy.port)


async def test_stop_twice_is_harmless(proxy: FaultProxy) -> None:
    """stop() may be called again, and on a proxy that never started."""
    await proxy.stop()
    await proxy.stop()
    await FaultProxy("127.0.0.1", 5432).stop()


async def test_start_twice_raises(proxy: FaultProxy) -> None:
    """Starting a running proxy is an error."""
    with pytest.raises(RuntimeError, match="already running"):
        await proxy.start()


# -- against a real PostgreSQL ---------------------------------------------------------


@pytest.fixture
async def pg_proxy(pg_dsn: str) -> AsyncIterator[FaultProxy]:
    parts = urlsplit(pg_dsn)
    async with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432) as fault_proxy:
        yield fault_proxy


def through(fault_proxy: FaultProxy, dsn: str) -> str:
    """``dsn`` with its host and port replaced by the proxy's."""
    parts = urlsplit(dsn)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{fault_proxy.address}"))


@contextlib.asynccontextmanager
async def pg_connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(dsn, timeout=IO_TIMEOUT, command_timeout=IO_TIMEOUT)
    try:
        yield connection
    finally:
        connection.terminate()


@pytest.mark.integration
async def test_pg_query_passes_through(pg_proxy: FaultProxy, pg_dsn: str) -> None:
    """asyncpg connects and queries through the proxy in pass mode."""
    async with pg_connection(through(pg_proxy, pg_dsn)) as connection:
        assert await connection.fetchval("SELECT 1") == 1


@pytest.mark.integration
async def test_pg_refuse_fails_connect_fast(pg_proxy: FaultProxy, pg_dsn: str) -> None:
    """In refuse mode asyncpg.connect fails with connection refused within a second."""
    pg_proxy.refuse()
    async with asyncio.timeout(1.0):
        with pytest.raises(ConnectionRefusedError):
            await asyncpg.connect(through(pg_proxy, pg_dsn), timeout=IO_TIMEOUT)


@pytest.mark.integration
async def test_pg_refuse_cuts_open_connection(pg_proxy: FaultProxy, pg_dsn: str) -> None:
    """Switching to refuse breaks an open asyncpg connection."""
    async with pg_connection(through(pg_proxy, pg_dsn)) as connection:
        await connection.fetchval("SELECT 1")
        pg_proxy.refuse()
        with pytest.raises((ConnectionResetError, asyncpg.ConnectionDoesNotExistError)):
            await connection.fetchval("SELECT 1")


@pytest.mark.integration
async def test_pg_blackhole_connect_times_out(pg_proxy: FaultProxy, pg_dsn: str) -> None:
    """In blackhole mode asyncpg.connect(timeout=0.5) raises TimeoutError."""
    pg_proxy.blackhole()
    async with asyncio.timeout(IO_TIMEOUT):
        with pytest.raises(TimeoutError):
            await asyncpg.connect(through(pg_proxy, pg_dsn), timeout=0.5)


@pytest.mark.integration
async def test_pg_reset_breaks_query_mid_stream(pg_proxy: FaultProxy, pg_dsn: str) -> None:
    """Switching to reset gives an open connection a reset on its next query."""
    async with pg_connection(through(pg_proxy, pg_dsn)) as connection:
        await connection.fetchval("SELECT 1")
        pg_proxy.reset()
        with pytest.raises((ConnectionResetError, asyncpg.ConnectionDoesNotExistError)):
            await connection.fetchval("SELECT 1")


@pytest.mark.integration
async def test_pg_reset_during_query(pg_proxy: FaultProxy, pg_dsn: str) -> None:
    """A reset while a query is in flight fails that query."""
    async with pg_connection(through(pg_proxy, pg_dsn)) as connection:
        query = asyncio.create_task(connection.fetchval("SELECT pg_sleep(1)"))
        await asyncio.sleep(0.2)
        pg_proxy.reset()
        with pytest.raises((ConnectionResetError, asyncpg.ConnectionDoesNotExistError)):
            await query


@pytest.mark.integration
async def test_pg_latency_slows_queries(pg_proxy: FaultProxy, pg_dsn: str) -> None:
    """In latency mode a query takes at least one delayed round trip."""
    delay = 0.1
    async with pg_connection(through(pg_proxy, pg_dsn)) as connection:
        await connection.fetchval("SELECT 1")
        pg_proxy.latency(delay)
        started = time.monotonic()
        await connection.fetchval("SELECT 1")
        assert time.monotonic() - started >= 2 * delay * 0.9


@pytest.mark.integration
async def test_pg_recovers_after_pass(pg_proxy: FaultProxy, pg_dsn: str) -> None:
    """After refuse then pass, asyncpg connects and queries again."""
    pg_proxy.refuse()
    pg_proxy.pass_through()
    async with pg_connection(through(pg_proxy, pg_dsn)) as connection:
        assert await connection.fetchval("SELECT 1") == 1
