"""End to end: a Starlette app under uvicorn on a loopback socket, a real HTTP
client, and a real TCP dependency that goes down and comes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import resilience
from resilience import Registry
from resilience.integrations.asgi import ResilienceMiddleware
from resilience.testing import FakeClock


class Downstream:
    """A line-protocol TCP service on 127.0.0.1: ``name\\n`` -> ``value of name\\n``."""

    def __init__(self) -> None:
        self.port = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name = (await reader.readline()).decode().strip()
        writer.write(f"value of {name}\n".encode())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        self.server = None


def build_app(downstream: Downstream, registry: Registry) -> tuple[Starlette, dict[str, int]]:
    db = registry.get_or_create(
        "downstream", failure_threshold=2, recovery_timeout=30, success_threshold=1
    )
    attempts = {"n": 0}

    async def fetch(name: str) -> str:
        attempts["n"] += 1
        reader, writer = await asyncio.open_connection("127.0.0.1", downstream.port)
        try:
            writer.write(f"{name}\n".encode())
            await writer.drain()
            return (await reader.readline()).decode().strip()
        finally:
            writer.close()
            await writer.wait_closed()

    @resilience.fallback()  # a private in-process cache: the last good page per slug
    async def render(slug: str) -> str:
        return await db.call(fetch, f"page {slug}")

    async def user(request: Request) -> Response:
        return JSONResponse({"user": await db.call(fetch, f"user {request.path_params['id']}")})

    async def page(request: Request) -> Response:
        return PlainTextResponse(await render(request.path_params["slug"]))

    app = Starlette(routes=[Route("/users/{id}", user), Route("/pages/{slug}", page)])
    app.add_middleware(ResilienceMiddleware, registry=registry, status_path="/_status")
    return app, attempts


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on a free loopback port; yield its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="off", ws="none", http="h11", log_level="critical"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(10):
            await task


async def test_outage_and_recovery_over_real_http() -> None:
    """An outage becomes fast 503s with Retry-After, cached pages keep serving
    with X-Degraded, and recovery brings back 200s."""
    clock = FakeClock()
    registry = Registry(clock=clock)
    downstream = Downstream()
    await downstream.start()
    app, attempts = build_app(downstream, registry)
    async with (
        asyncio.timeout(30),
        serving(app) as url,
        httpx.AsyncClient(base_url=url, timeout=5) as client,
    ):
        # Healthy: fresh answers, nothing degraded.
        response = await client.get("/users/1")
        assert response.status_code == 200
        assert response.json() == {"user": "value of user 1"}
        response = await client.get("/pages/home")
        assert (response.status_code, response.text) == (200, "value of page home")
        assert "x-degraded" not in response.headers

        # Outage: the first failures are real 500s, then the circuit opens.
        await downstream.stop()
        assert [(await client.get("/users/1")).status_code for _ in range(2)] == [500, 500]
        assert registry["downstream"].state.value == "open"

        # Open: fast 503s with Retry-After; the dependency is not even tried.
        before = attempts["n"]
        started = time.perf_counter()
        rejected = [await client.get(f"/users/{i}") for i in range(20)]
        elapsed = time.perf_counter() - started
        assert {r.status_code for r in rejected} == {503}
        assert {r.headers["retry-after"] for r in rejected} == {"30"}
        assert rejected[0].headers["content-type"] == "application/problem+json"
        assert "downstream" not in rejected[0].text
        assert attempts["n"] == before
        assert elapsed < 5.0  # generous: twenty loopback round trips, no dependency calls

        # Cached pages keep serving, flagged as degraded.
        response = await client.get("/pages/home")
        assert (response.status_code, response.text) == (200, "value of page home")
        assert response.headers["x-degraded"] == "fallback"
        assert (await client.get("/pages/never-cached")).status_code == 503

        # The status endpoint shows the open circuit.
        status = (await client.get("/_status")).json()
        assert status["circuits"][0]["state"] == "open"

        # Recovery: the dependency is back and the open period is over.
        await downstream.start()
        clock.advance(30)
        response = await client.get("/users/1")
        assert response.status_code == 200
        assert registry["downstream"].state.value == "closed"
        response = await client.get("/pages/home")
        assert response.status_code == 200
        assert "x-degraded" not in response.headers
        assert [(await client.get(f"/users/{i}")).status_code for i in range(5)] == [200] * 5
    await downstream.stop()
