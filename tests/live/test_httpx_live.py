"""httpx against a real local HTTP server (raw asyncio): classify(), @circuit and
ResilientTransport. Client errors never trip; a dead server does."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from resilience import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ErrorCategory,
    Registry,
    circuit,
    classify,
)
from resilience.integrations.httpx import ResilientTransport
from resilience.testing import FakeClock

C = ErrorCategory


class Server:
    """``GET /status/<code>`` answers that status (``?retry_after=N`` adds the
    header); ``/hang`` never answers. Counts the requests it read."""

    def __init__(self) -> None:
        self.requests = 0
        self.hanging = asyncio.Event()  # set once a /hang request is held
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            target = head.split(b" ", 2)[1].decode()
            if target == "/hang":
                self.hanging.set()
                await asyncio.sleep(3600)
            path, _, query = target.partition("?")
            status = int(path.rsplit("/", 1)[1])
            extra = ""
            if query.startswith("retry_after="):
                extra = f"Retry-After: {query.partition('=')[2]}\r\n"
            head_out = f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n"
            writer.write(f"{head_out}{extra}\r\n".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    the_server = Server()
    await the_server.start()
    yield the_server
    await the_server.stop()


def refused_url() -> str:
    with socket.socket() as probe:  # bound, never listening: connections are refused
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/"


async def test_raise_for_status_errors_classify_by_status(server: Server) -> None:
    """404 a query error, 401 authentication, 503 resource, 500 unknown."""
    expected = {404: C.QUERY_ERROR, 401: C.AUTHENTICATION_ERROR, 503: C.RESOURCE_ERROR,
                500: C.UNKNOWN_ERROR, 429: C.RESOURCE_ERROR}  # fmt: skip
    async with httpx.AsyncClient() as client:
        for status, category in expected.items():
            response = await client.get(f"{server.url}/status/{status}")
            with pytest.raises(httpx.HTTPStatusError) as info:
                response.raise_for_status()
            assert classify(info.value) is category


async def test_a_refused_connection_is_a_connection_error() -> None:
    """httpx.ConnectError from a real refused port."""
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError) as info:
            await client.get(refused_url())
    assert classify(info.value) is C.CONNECTION_ERROR


async def test_a_read_timeout_is_a_timeout(server: Server) -> None:
    """A server that never answers: ReadTimeout, classified TIMEOUT."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=0.2)) as client:
        with pytest.raises(httpx.ReadTimeout) as info:
            await client.get(f"{server.url}/hang")
    assert classify(info.value) is C.TIMEOUT_ERROR


async def test_an_exhausted_client_pool_is_a_resource_error(server: Server) -> None:
    """One connection, held by a hanging request: the next gets PoolTimeout."""
    limits = httpx.Limits(max_connections=1)
    timeout = httpx.Timeout(5.0, pool=0.1)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        hanging = asyncio.create_task(client.get(f"{server.url}/hang"))
        await asyncio.wait_for(server.hanging.wait(), 5)
        with pytest.raises(httpx.PoolTimeout) as info:
            await client.get(f"{server.url}/status/200")
        hanging.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hanging
    assert classify(info.value) is C.RESOURCE_ERROR


async def test_circuit_around_raise_for_status(server: Server) -> None:
    """404s leave @circuit CLOSED; two 500s open it."""
    registry = Registry(clock=FakeClock())

    @circuit("catalog", registry=registry, failure_threshold=2)
    async def fetch(client: httpx.AsyncClient, status: int) -> httpx.Response:
        response = await client.get(f"{server.url}/status/{status}")
        return response.raise_for_status()

    async with httpx.AsyncClient() as client:
        for _ in range(5):
            with pytest.raises(httpx.HTTPStatusError):
                await fetch(client, 404)
        assert fetch.breaker.state is CircuitState.CLOSED  # type: ignore[attr-defined]
        for _ in range(2):
            with pytest.raises(httpx.HTTPStatusError):
                await fetch(client, 500)
    assert fetch.breaker.state is CircuitState.OPEN  # type: ignore[attr-defined]


async def test_transport_counts_real_statuses_and_stops_sending(server: Server) -> None:
    """404s pass; 503s open the origin's circuit; then nothing reaches the server."""
    transport = ResilientTransport(registry=Registry(clock=FakeClock()), failure_threshold=2)
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(3):
            assert (await client.get(f"{server.url}/status/404")).status_code == 404
        for _ in range(2):
            assert (await client.get(f"{server.url}/status/503")).status_code == 503
        seen = server.requests
        with pytest.raises(CircuitOpenError):
            await client.get(f"{server.url}/status/200")
    assert server.requests == seen == 5


async def test_transport_opens_on_a_dead_server() -> None:
    """Refused connections are failures: two open the circuit."""
    transport = ResilientTransport(registry=Registry(clock=FakeClock()), failure_threshold=2)
    url = refused_url()
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(2):
            with pytest.raises(httpx.ConnectError):
                await client.get(url)
        with pytest.raises(CircuitOpenError):
            await client.get(url)
    breaker: CircuitBreaker = transport.breaker_for(url)
    assert breaker.metrics()["failures_by_category"] == {"CONNECTION_ERROR": 2}


async def test_transport_honours_a_real_retry_after(server: Server) -> None:
    """A real 503 with Retry-After: 300 holds the circuit open 300 s."""
    clock = FakeClock()
    transport = ResilientTransport(
        registry=Registry(clock=clock), failure_threshold=1, recovery_timeout=5
    )
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(f"{server.url}/status/503?retry_after=300")
    breaker = transport.breaker_for(server.url)
    assert breaker.status()["retry_after"] == pytest.approx(300)
    clock.advance(299)
    assert breaker.state is CircuitState.OPEN


async def test_sync_transport_against_the_real_server(server: Server) -> None:
    """httpx.Client through ResilientTransport's default sync transport (in a thread)."""
    transport = ResilientTransport(registry=Registry(clock=FakeClock()), failure_threshold=1)
    url = server.url

    def run(status: int) -> int:
        with httpx.Client(transport=transport) as client:
            return client.get(f"{url}/status/{status}").status_code

    assert await asyncio.to_thread(run, 204) == 204
    assert await asyncio.to_thread(run, 502) == 502
    with pytest.raises(CircuitOpenError):
        await asyncio.to_thread(run, 204)
