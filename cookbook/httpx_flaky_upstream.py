"""An httpx client to a flaky upstream: ``ResilientTransport`` and ``@retry``.

The recipe starts its own upstream, a small asyncio HTTP server on
127.0.0.1, and scripts it:

1. **blips**: one request in three gets a 503; ``@retry`` tries again and
   the caller never notices (the circuit counts them, far from tripping);
2. **the caller's mistake**: a 404 is raised at once, never retried, never
   counted as a failure;
3. **an outage**: every answer is 503 with ``Retry-After: 120``; the
   origin's circuit opens after 3 of them, and stays open the 120 s the
   upstream asked for (not its own 5 s ``recovery_timeout``); requests now
   fail fast with ``CircuitOpenError`` and the upstream sees none of them.

Run: ``python cookbook/httpx_flaky_upstream.py``
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from resilience import CircuitOpenError, Registry, retry
from resilience.integrations.httpx import ResilientTransport


class FlakyUpstream:
    """``GET /items/<n>``: 200 with a JSON body, 404 for n > 100; ``mode``
    ``"blips"`` answers 503 to every third read, ``"down"`` 503 to everything."""

    def __init__(self) -> None:
        self.mode = "blips"
        self.requests = 0
        self._reads = 0  # item reads (n <= 100): the blips hit one in three
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FlakyUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            item = int(head.split(b" ", 2)[1].rsplit(b"/", 1)[1])
            if self.mode == "down":
                status, extra, body = 503, "Retry-After: 120\r\n", ""
            elif item > 100:
                status, extra, body = 404, "", ""
            else:
                self._reads += 1
                ok = self._reads % 3 != 0
                status, extra, body = (200, "", f'{{"id": {item}}}') if ok else (503, "", "")
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode()
            )
            await writer.drain()
        finally:
            writer.close()


transport = ResilientTransport(
    registry=Registry(),  # the recipe's own; by default, resilience.registry
    failure_threshold=3,
    recovery_timeout=5,
)


# The default rule retries what classify() calls transient: connect errors,
# timeouts, and 502/503/504/429 from raise_for_status(); never a 404, never
# an open circuit. (For a non-idempotent POST, narrow it: on=httpx.ConnectError.)
@retry(attempts=3, wait=0.01)
async def get_item(client: httpx.AsyncClient, item: int) -> Any:
    response = await client.get(f"/items/{item}")
    response.raise_for_status()
    return response.json()


async def main() -> None:
    async with (
        FlakyUpstream() as upstream,
        httpx.AsyncClient(base_url=upstream.url, transport=transport) as client,
    ):
        breaker = transport.breaker_for(upstream.url)

        print("== 1. blips: one request in three is a 503 ==")
        items = [await get_item(client, n) for n in range(1, 7)]
        print(f"6 items, all served: {items}")
        print(f"upstream saw {upstream.requests} requests; circuit {breaker.state.value}")
        assert breaker.state.value == "closed" and upstream.requests > 6

        print("== 2. the caller's mistake: a 404 ==")
        before = upstream.requests
        try:
            await get_item(client, 404)
        except httpx.HTTPStatusError as exc:
            print(f"item 404: {exc.response.status_code}, sent {upstream.requests - before} time")
        assert upstream.requests - before == 1 and breaker.state.value == "closed"

        print("== 3. an outage: 503 with Retry-After: 120 ==")
        upstream.mode = "down"
        try:
            await get_item(client, 7)
        except httpx.HTTPStatusError as exc:
            print(f"item 7: {exc.response.status_code} after 3 attempts")
        print(f"circuit {breaker.state.value}, retry in {breaker.status()['retry_after']:.0f} s")
        assert breaker.state.value == "open" and breaker.status()["retry_after"] > 100
        before = upstream.requests
        try:
            await get_item(client, 8)
        except CircuitOpenError as exc:
            print(f"item 8: CircuitOpenError at once ({exc.retry_after:.0f} s to wait)")
        assert upstream.requests == before  # nothing was sent


if __name__ == "__main__":
    asyncio.run(main())
