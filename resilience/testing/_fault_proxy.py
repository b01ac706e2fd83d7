"""An asyncio TCP proxy that injects network faults, to rehearse outages.

Put a :class:`FaultProxy` between a client and a real server, point the
client at ``proxy.address`` and switch the mode while the test runs::

    pass       forward bytes both ways (the default)
    refuse     cut every open connection; new ones get "connection refused"
    blackhole  accept, then forward nothing either way: callers hang until
               their own timeout (held bytes flow again after ``pass``)
    reset      abort open connections with an RST at once, new ones on
               their first bytes
    latency    forward, each chunk delayed by ``seconds`` in each direction

Only loopback addresses are accepted, on both sides: the proxy is a test
double, never something to expose on a network.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import os
import socket
import struct
from collections.abc import Callable
from types import TracebackType
from typing import Literal, Self

__all__ = ("FaultProxy",)

FaultMode = Literal["pass", "refuse", "blackhole", "reset", "latency"]
_MODES: tuple[FaultMode, ...] = ("pass", "refuse", "blackhole", "reset", "latency")
_FORWARDING: frozenset[str] = frozenset({"pass", "latency"})

_CHUNK = 64 * 1024
# Chunks buffered per direction before the proxy stops reading, so a slow or
# black-holed side pushes back through TCP flow control instead of filling memory.
_QUEUE_CHUNKS = 16
_BACKLOG = 128
# SO_LINGER on, timeout 0: close() sends an RST instead of a FIN.
_LINGER_RST = struct.pack("ii", 1, 0)

_Chunk = tuple[float, bytes]  # (loop time it arrived, payload)
_ProtocolFactory = Callable[[], asyncio.StreamReaderProtocol]


def _loopback(argument: str, host: str) -> str:
    if not isinstance(host, str):
        raise TypeError(f"FaultProxy: {argument} must be a str, got {type(host).__name__}")
    if host.lower() == "localhost":
        return host
    try:
        is_loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        is_loopback = False
    if not is_loopback:
        raise ValueError(
            f"FaultProxy: {argument} must be a loopback address "
            f"(127.0.0.0/8, ::1 or 'localhost'), got {host!r}"
        )
    return host


def _port_number(argument: str, port: int, *, allow_zero: bool) -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"FaultProxy: {argument} must be an int, got {type(port).__name__}")
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"FaultProxy: {argument} must be in [{low}, 65535], got {port!r}")
    return port


def _latency_seconds(seconds: float) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"FaultProxy: latency seconds must be a number, got {seconds!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"FaultProxy: latency seconds must be finite and >= 0, got {seconds!r}")
    return float(seconds)


def _abort(transport: asyncio.WriteTransport) -> None:
    """Close ``transport`` with an RST, discarding anything still buffered."""
    if transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    transport.abort()


class FaultProxy:
    """A TCP proxy in front of a real server that can fail on demand.

    Modes can be switched at any time, before or while the proxy runs; a
    switch takes effect at once for open and new connections. Mode switches
    and counters must be used from the event loop the proxy runs on.

    Args:
        target_host: the server to forward to; a loopback address
            (127.0.0.0/8, ``::1``) or ``"localhost"``.
        target_port: the server's port, in [1, 65535].
        listen_host: where the proxy listens; loopback only
            (default ``"127.0.0.1"``; ``"localhost"`` means ``127.0.0.1``).
        listen_port: where the proxy listens, in [0, 65535]; 0 (the
            default) picks a free port at :meth:`start`. The port is kept
            across ``refuse`` and back.

    Raises:
        ValueError: a host is not loopback or a port is out of range.

    Example:
        >>> async def test_get_user_survives_outage(pg_dsn):  # doctest: +SKIP
        ...     async with FaultProxy("127.0.0.1", 5432) as proxy:
        ...         dsn = f"postgresql://postgres@{proxy.address}/test"
        ...         proxy.blackhole()
        ...         ...  # the breaker opens, the fallback answers
        ...         proxy.pass_through()
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self._target_host = _loopback("target_host", target_host)
        self._target_port = _port_number("target_port", target_port, allow_zero=False)
        listen_host = _loopback("listen_host", listen_host)
        # One concrete address, so a refuse/pass cycle rebinds the very same socket
        # address ("localhost" could resolve to two sockets on two ports).
        self._host = "127.0.0.1" if listen_host.lower() == "localhost" else listen_host
        self._port = _port_number("listen_port", listen_port, allow_zero=True)
        self._mode: FaultMode = "pass"
        self._latency = 0.0
        self._running = False
        self._forwarding: asyncio.Event | None = None
        self._listener: _Listener | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepted = 0

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Bind the listening socket and start forwarding in the current mode.

        Raises:
            RuntimeError: the proxy is already running.
            OSError: the listen address cannot be bound.
        """
        if self._running:
            raise RuntimeError("FaultProxy is already running")
        self._forwarding = asyncio.Event()
        if self._mode in _FORWARDING:
            self._forwarding.set()
        listener = self._open_listener()
        self._running = True
        await asyncio.wait({listener.task})
        if not listener.task.cancelled() and (error := listener.task.exception()) is not None:
            await self.stop()
            raise error
        if self._mode == "refuse":
            self._close_listener()

    async def stop(self) -> None:
        """Close the listener and every connection, and wait for all of it.

        Safe to call more than once and on a proxy that never started.
        """
        if not self._running:
            return
        self._running = False
        self._close_listener()
        for link in list(self._links):
            link.abort()
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- where it listens ------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the proxy listens on (``"localhost"`` reads ``"127.0.0.1"``)."""
        return self._host

    @property
    def port(self) -> int:
        """The port the proxy listens on.

        Raises:
            RuntimeError: ``listen_port`` was 0 and the proxy has not started yet.
        """
        if self._port == 0:
            raise RuntimeError("FaultProxy: the port is chosen by start(); start the proxy first")
        return self._port

    @property
    def address(self) -> str:
        """``"host:port"`` to hand to clients (``"[::1]:port"`` for IPv6)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self.port}"

    # -- modes -----------------------------------------------------------------

    @property
    def mode(self) -> FaultMode:
        """The current mode, one of ``pass refuse blackhole reset latency``.

        Assignable for the modes without parameters (``proxy.mode = "refuse"``);
        ``latency`` needs its delay: use :meth:`latency` or :meth:`set_mode`.
        """
        return self._mode

    @mode.setter
    def mode(self, name: str) -> None:
        self.set_mode(name)

    @property
    def latency_seconds(self) -> float:
        """The added one-way delay in ``latency`` mode; 0.0 in every other mode."""
        return self._latency

    def pass_through(self) -> None:
        """Forward bytes both ways; re-opens the port after ``refuse``.

        Bytes held back by ``blackhole`` are delivered now.

        Raises:
            OSError: after ``refuse``, the port was taken by someone else meanwhile.
        """
        self._switch("pass", 0.0)

    def refuse(self) -> None:
        """Cut every open connection (RST) and close the port: connects are refused."""
        self._switch("refuse", 0.0)

    def blackhole(self) -> None:
        """Accept connections but forward nothing either way, for open ones too.

        Callers hang until their own timeout fires. Nothing is dropped: held
        bytes are delivered if the proxy goes back to ``pass``.
        """
        self._switch("blackhole", 0.0)

    def reset(self) -> None:
        """Abort open connections with an RST now, and new ones on their first bytes."""
        self._switch("reset", 0.0)

    def latency(self, seconds: float) -> None:
        """Forward with each chunk delayed by ``seconds`` in each direction.

        A request/response round trip therefore gains about ``2 * seconds``.

        Args:
            seconds: the added one-way delay, finite and >= 0.

        Raises:
            ValueError: ``seconds`` is negative or not finite.
        """
        self._switch("latency", _latency_seconds(seconds))

    def set_mode(self, name: str, **params: float) -> None:
        """Switch mode by name, e.g. ``set_mode("latency", seconds=0.2)``.

        Args:
            name: one of ``"pass"``, ``"refuse"``, ``"blackhole"``, ``"reset"``,
                ``"latency"``.
            **params: ``seconds`` (required) for ``"latency"``; none otherwise.

        Raises:
            ValueError: unknown mode name, or a bad ``seconds``.
            TypeError: a missing or unexpected parameter.
        """
        if name not in _MODES:
            raise ValueError(f"FaultProxy: unknown mode {name!r}; expected one of {_MODES}")
        latency = 0.0
        if name == "latency":
            if "seconds" not in params:
                raise TypeError("FaultProxy: mode 'latency' needs seconds=")
            latency = _latency_seconds(params.pop("seconds"))
        if params:
            raise TypeError(
                f"FaultProxy: unexpected parameters for mode {name!r}: {sorted(params)}"
            )
        self._switch(name, latency)

    # -- counters --------------------------------------------------------------

    @property
    def connections_total(self) -> int:
        """Client connections accepted since the proxy was created."""
        return self._accepted

    @property
    def active_connections(self) -> int:
        """Client connections currently open through the proxy."""
        return len(self._links)

    def __repr__(self) -> str:
        where = self.address if self._port else f"{self._host}:?"
        return (
            f"FaultProxy({where} -> {self._target_host}:{self._target_port}, "
            f"mode={self._mode!r}, active={len(self._links)})"
        )

    # -- internals -------------------------------------------------------------

    def _switch(self, mode: FaultMode, latency: float) -> None:
        if self._running:
            if mode != "refuse" and self._listener is None:
                self._open_listener()  # may raise: nothing has changed yet
            assert self._forwarding is not None
            if mode in _FORWARDING:
                self._forwarding.set()
            else:
                self._forwarding.clear()
            if mode in ("refuse", "reset"):
                for link in list(self._links):
                    link.abort()
            if mode == "refuse":
                self._close_listener()
        self._mode = mode
        self._latency = latency

    def _open_listener(self) -> _Listener:
        # Bound and listening before this returns, so the port accepts at once;
        # asyncio takes over the socket in a task just after.
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio then sets TCP_NODELAY on accepted
        # connections, so the proxy adds no Nagle delay of its own.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            if os.name == "posix":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(_BACKLOG)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        listener = _Listener(sock, self._new_protocol)
        self._listener = listener
        self._track(listener.task)
        return listener

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _new_protocol(self) -> asyncio.StreamReaderProtocol:
        return asyncio.StreamReaderProtocol(asyncio.StreamReader(limit=2 * _CHUNK), self._accept)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._running or self._mode == "refuse":
            # Accepted by the kernel just before the listener closed.
            _abort(writer.transport)
            return
        self._accepted += 1
        link = _Link(self, reader, writer)
        self._links.add(link)
        link.task = asyncio.get_running_loop().create_task(link.run())
        link.task.add_done_callback(lambda _: self._links.discard(link))
        self._track(link.task)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            task.get_loop().call_exception_handler(
                {"message": f"{self!r}: internal task failed", "exception": error, "task": task}
            )

    async def _gate(self) -> None:
        """Wait while the mode forwards nothing (blackhole, and reset for new links)."""
        assert self._forwarding is not None
        await self._forwarding.wait()


class _Listener:
    """One listening socket, bound synchronously and served by asyncio in a task."""

    __slots__ = ("_server", "_sock", "task")

    def __init__(self, sock: socket.socket, factory: _ProtocolFactory) -> None:
        self._sock = sock
        self._server: asyncio.Server | None = None
        self.task = asyncio.get_running_loop().create_task(self._serve(factory))

    async def _serve(self, factory: _ProtocolFactory) -> None:
        loop = asyncio.get_running_loop()
        # start_serving=False: create_server returns without suspending, so
        # _server is set before close() can possibly run.
        self._server = await loop.create_server(factory, sock=self._sock, start_serving=False)
        await self._server.start_serving()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()  # closes the socket synchronously
        else:
            self._sock.close()  # the task has not run: asyncio never saw the socket
        self.task.cancel()


class _Link:
    """One client connection and its upstream, pumped by a task group."""

    __slots__ = ("_client_r", "_client_w", "_proxy", "_upstream_w", "task")

    def __init__(
        self, proxy: FaultProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._proxy = proxy
        self._client_r = reader
        self._client_w = writer
        self._upstream_w: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    def abort(self) -> None:
        self._proxy._links.discard(self)  # no longer active, even before its task ends
        self.abort_transports()
        if self.task is not None:
            self.task.cancel()

    def abort_transports(self) -> None:
        _abort(self._client_w.transport)
        if self._upstream_w is not None:
            _abort(self._upstream_w.transport)

    async def run(self) -> None:
        to_upstream: asyncio.Queue[_Chunk | None] = asyncio.Queue(_QUEUE_CHUNKS)
        finished = False
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read(self._client_r, to_upstream, from_client=True))
                group.create_task(self._connect(group, to_upstream))
            finished = True
        except* OSError:
            pass  # one side failed (reset, refused, ...): the other side gets an RST too
        finally:
            if not finished:
                self.abort_transports()
            await self._close()

    async def _connect(
        self, group: asyncio.TaskGroup, to_upstream: asyncio.Queue[_Chunk | None]
    ) -> None:
        # A link accepted while black-holed (or in reset mode) opens its upstream
        # only once forwarding resumes: the server never sees it before.
        await self._proxy._gate()
        reader, writer = await asyncio.open_connection(
            self._proxy._target_host, self._proxy._target_port, limit=2 * _CHUNK
        )
        self._upstream_w = writer
        to_client: asyncio.Queue[_Chunk | None] = asyncio.Queue(_QUEUE_CHUNKS)
        group.create_task(self._write(to_upstream, writer))
        group.create_task(self._read(reader, to_client, from_client=False))
        await self._write(to_client, self._client_w)

    async def _read(
        self,
        reader: asyncio.StreamReader,
        queue: asyncio.Queue[_Chunk | None],
        *,
        from_client: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await reader.read(_CHUNK)
            if data and from_client and self._proxy._mode == "reset":
                self.abort_transports()
                raise ConnectionResetError("connection reset by FaultProxy")
            if not data:
                await queue.put(None)
                return
            await queue.put((loop.time(), data))

    async def _write(
        self, queue: asyncio.Queue[_Chunk | None], writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        proxy = self._proxy
        while True:
            item = await queue.get()
            await proxy._gate()
            if item is None:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            arrived, data = item
            delay = arrived + proxy._latency - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                await proxy._gate()  # black-holed while it waited
            writer.write(data)
            await writer.drain()

    async def _close(self) -> None:
        writers = [w for w in (self._client_w, self._upstream_w) if w is not None]
        for writer in writers:
            if writer.transport.get_write_buffer_size():
                _abort(writer.transport)  # never wait on a peer that stopped reading
            else:
                writer.close()
        for writer in writers:
            with contextlib.suppress(Exception):
                await writer.wait_closed()
