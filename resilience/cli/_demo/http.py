"""A minimal HTTP/1.1 client for the load generator, on asyncio streams.

Why not httpx: its connection pool scans every connection on each request,
so with hundreds of requests in flight against a stalled app the client
itself ate the event loop and every latency measured was the client's own.
This one only speaks to the demo's app: ``GET``, keep-alive, responses with
a ``Content-Length`` (what uvicorn sends for JSON), loopback only.
"""

from __future__ import annotations

import asyncio

__all__ = ("HttpClient", "HttpError", "Response")


class HttpError(Exception):
    """The connection failed or the answer was not HTTP as expected."""


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class HttpClient:
    """Keep-alive connections to one ``host:port``; idle ones are reused."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._idle: list[_Conn] = []
        self._all: set[asyncio.StreamWriter] = set()

    async def get(self, path: str) -> Response:
        """``GET path``. A cancelled or failed request closes its connection.

        Raises:
            HttpError: the connection failed or the answer was malformed.
        """
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            try:
                reader, writer = await asyncio.open_connection(self._host, self._port)
            except OSError as exc:
                raise HttpError(f"cannot connect: {exc}") from exc
            self._all.add(writer)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {self._host}\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        except BaseException as exc:
            self._discard(writer)
            if isinstance(
                exc,
                OSError
                | asyncio.IncompleteReadError
                | asyncio.LimitOverrunError
                | ValueError
                | IndexError,
            ):
                raise HttpError(f"{type(exc).__name__}: {exc}") from exc
            raise
        if headers.get("connection", "").lower() == "close":
            self._discard(writer)
        else:
            self._idle.append((reader, writer))
        return Response(status, headers, body)

    def _discard(self, writer: asyncio.StreamWriter) -> None:
        self._all.discard(writer)
        writer.transport.abort()

    async def aclose(self) -> None:
        """Close every connection."""
        self._idle.clear()
        for writer in list(self._all):
            self._discard(writer)
