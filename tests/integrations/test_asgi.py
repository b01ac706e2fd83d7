"""ResilienceMiddleware with real Starlette and FastAPI apps, through httpx's ASGI transport."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

import resilience
from resilience import (
    BulkheadFullError,
    ChainExhaustedError,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    Registry,
    mark_degraded,
)
from resilience.integrations.asgi import (
    Message,
    ResilienceMiddleware,
    Scope,
    add_rejection_observer,
)
from resilience.testing import FakeClock


async def lookup(user_id: str) -> dict[str, str]:
    return {"id": user_id}


def starlette_app(db: CircuitBreaker, registry: Registry, **options: Any) -> Starlette:
    """A small Starlette app whose /users route depends on the ``db`` breaker."""

    async def user(request: Request) -> Response:
        return JSONResponse(await db.call(lookup, request.path_params["user_id"]))

    async def degraded(request: Request) -> Response:
        mark_degraded()
        return PlainTextResponse("stale but useful")

    def degraded_sync(request: Request) -> Response:
        mark_degraded()
        return PlainTextResponse("from a thread")

    async def plain(request: Request) -> Response:
        return PlainTextResponse("fresh")

    async def boom(request: Request) -> Response:
        raise ValueError("a bug")

    async def bulkhead(request: Request) -> Response:
        raise BulkheadFullError("pdf-render", 4, 0)

    async def stream(request: Request) -> Response:
        mark_degraded()

        async def body() -> AsyncIterator[bytes]:
            yield b"one,"
            yield b"two"

        return StreamingResponse(body())

    async def stream_marks_late(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"one,"
            mark_degraded()
            yield b"two"

        return StreamingResponse(body())

    app = Starlette(
        routes=[
            Route("/users/{user_id}", user),
            Route("/degraded", degraded),
            Route("/degraded-sync", degraded_sync),
            Route("/plain", plain),
            Route("/boom", boom),
            Route("/bulkhead", bulkhead),
            Route("/stream", stream),
            Route("/stream-late", stream_marks_late),
        ]
    )
    app.add_middleware(ResilienceMiddleware, registry=registry, **options)
    return app


# -- rejections become 503 problem+json ----------------------------------------


async def test_open_circuit_is_a_503_problem(
    db: CircuitBreaker, trip: Any, client_for: Any, isolated_registry: Registry
) -> None:
    """A CircuitOpenError escaping a handler becomes a 503 application/problem+json."""
    await trip(db)
    async with client_for(starlette_app(db, isolated_registry)) as client:
        response = await client.get("/users/1")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "A dependency is temporarily unavailable; try again later.",
        "retry_after": 30,
    }
    assert "users-db" not in response.text  # no internal names in the public body


async def test_names_are_in_the_body_only_when_the_app_opts_in(
    db: CircuitBreaker, trip: Any, client_for: Any, isolated_registry: Registry
) -> None:
    """expose_names=True puts the breaker's name in the 503 body."""
    await trip(db)
    app = starlette_app(db, isolated_registry, expose_names=True)
    async with client_for(app) as client:
        response = await client.get("/users/1")
    assert response.status_code == 503
    assert response.json()["circuit"] == "users-db"


def test_wrapping_a_starlette_app_directly_is_refused() -> None:
    """ResilienceMiddleware(starlette_app) would answer 500: a TypeError names the fix."""
    from starlette.applications import Starlette

    with pytest.raises(TypeError, match="add_middleware"):
        ResilienceMiddleware(Starlette())


def test_wrapping_a_fastapi_app_directly_is_refused() -> None:
    """The same for FastAPI, a Starlette subclass."""
    from fastapi import FastAPI

    with pytest.raises(TypeError, match="add_middleware"):
        ResilienceMiddleware(FastAPI())


async def test_retry_after_is_whole_seconds_rounded_up(
    db: CircuitBreaker, trip: Any, client_for: Any, clock: FakeClock, isolated_registry: Registry
) -> None:
    """Retry-After is the time left until a probe, in whole seconds, rounded up."""
    await trip(db)
    clock.advance(0.5)
    async with client_for(starlette_app(db, isolated_registry)) as client:
        response = await client.get("/users/1")
    assert response.headers["retry-after"] == "30"
    assert response.json()["retry_after"] == 30


async def test_retry_after_is_never_zero(
    db: CircuitBreaker, trip: Any, client_for: Any, clock: FakeClock, isolated_registry: Registry
) -> None:
    """A fraction of a second left still says Retry-After: 1."""
    await trip(db)
    clock.advance(29.99)
    async with client_for(starlette_app(db, isolated_registry)) as client:
        response = await client.get("/users/1")
    assert response.headers["retry-after"] == "1"


async def test_problem_body_has_no_internals(
    db: CircuitBreaker, trip: Any, client_for: Any, isolated_registry: Registry
) -> None:
    """The 503 body carries no exception text, state or failure category."""
    await trip(db)
    async with client_for(starlette_app(db, isolated_registry)) as client:
        response = await client.get("/users/1")
    text = response.text
    for leak in (
        "hunter2",
        "10.0.0.5",
        "CONNECTION_ERROR",
        "open",
        "Traceback",
        "CircuitOpenError",
    ):
        assert leak not in text


async def test_forced_open_has_no_retry_after(
    db: CircuitBreaker, client_for: Any, isolated_registry: Registry
) -> None:
    """FORCED_OPEN has no deadline: no Retry-After header and a null retry_after."""
    db.force_open()
    async with client_for(starlette_app(db, isolated_registry)) as client:
        response = await client.get("/users/1")
    assert response.status_code == 503
    assert "retry-after" not in response.headers
    assert response.json()["retry_after"] is None


async def test_bulkhead_full_is_a_503(
    db: CircuitBreaker, client_for: Any, isolated_registry: Registry
) -> None:
    """A BulkheadFullError becomes a 503 naming the bulkhead, Retry-After: 1."""
    async with client_for(starlette_app(db, isolated_registry)) as client:
        response = await client.get("/bulkhead")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert "bulkhead" not in body and "circuit" not in body
    assert "pdf-render" not in response.text
    assert body["retry_after"] == 1


async def test_problem_type_is_configurable(
    db: CircuitBreaker, trip: Any, client_for: Any, isolated_registry: Registry
) -> None:
    """problem_type sets the problem's type URI."""
    await trip(db)
    url = "https://errors.example.com/unavailable"
    async with client_for(starlette_app(db, isolated_registry, problem_type=url)) as client:
        response = await client.get("/users/1")
    assert response.json()["type"] == url


async def test_group_of_rejections_is_a_503(client_for: Any, isolated_registry: Registry) -> None:
    """A ChainExhaustedError of rejections only is a 503 with the earliest retry."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise ChainExhaustedError(
            "all down",
            [
                CircuitOpenError("primary", CircuitState.OPEN, 40.0),
                CircuitOpenError("replica", CircuitState.OPEN, 7.2),
            ],
        )

    async with client_for(ResilienceMiddleware(app, registry=isolated_registry)) as client:
        response = await client.get("/")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "8"
    assert "circuit" not in response.json()


async def test_group_with_a_real_failure_is_left_alone(
    client_for: Any, isolated_registry: Registry
) -> None:
    """A group holding a real failure is not turned into a 503."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise ChainExhaustedError(
            "all down", [CircuitOpenError("primary", CircuitState.OPEN, 4.0), ConnectionError()]
        )

    middleware = ResilienceMiddleware(app, registry=isolated_registry)
    async with client_for(middleware, raise_app_exceptions=True) as client:
        with pytest.raises(ChainExhaustedError):
            await client.get("/")


async def test_rejection_observers_see_the_rejection(
    db: CircuitBreaker, trip: Any, client_for: Any, isolated_registry: Registry
) -> None:
    """add_rejection_observer's callback gets each rejection answered with a 503."""
    seen: list[BaseException] = []
    remove = add_rejection_observer(seen.append)
    try:
        await trip(db)
        async with client_for(starlette_app(db, isolated_registry)) as client:
            await client.get("/users/1")
    finally:
        remove()
    assert [type(e) for e in seen] == [CircuitOpenError]


# -- everything else is left to the framework ----------------------------------


async def test_other_exceptions_are_still_500(
    db: CircuitBreaker, client_for: Any, isolated_registry: Registry
) -> None:
    """A real failure stays a 500 from the framework, not a 503."""
    async with client_for(starlette_app(db, isolated_registry)) as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert "retry-after" not in response.headers


async def test_other_exceptions_propagate_unchanged(
    db: CircuitBreaker, client_for: Any, isolated_registry: Registry
) -> None:
    """The middleware re-raises a real failure as it is, for the server to handle."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise ValueError("a bug")

    middleware = ResilienceMiddleware(app, registry=isolated_registry)
    async with client_for(middleware, raise_app_exceptions=True) as client:
        with pytest.raises(ValueError, match="a bug"):
            await client.get("/")


async def test_rejection_after_start_is_reraised_without_second_start(
    isolated_registry: Registry,
) -> None:
    """A rejection after the response started is re-raised; no second response start."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise CircuitOpenError("users-db", CircuitState.OPEN, 5.0)

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    middleware = ResilienceMiddleware(app, registry=isolated_registry)
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "root_path": ""}
    with pytest.raises(CircuitOpenError):
        await middleware(scope, receive, send)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1
    assert starts[0]["status"] == 200


# -- X-Degraded -----------------------------------------------------------------


async def test_degraded_response_is_flagged(
    db: CircuitBreaker, client_for: Any, isolated_registry: Registry
) -> None:
    """A response produced while a fallback served carries X-Degraded: fallback."""
    async with client_for(starlette_app(db, isolated_registry)) as client:
        response = await client.get("/degraded")
    assert response.status_code == 200
    assert response.headers["x-degraded"] == "fallback"


async def test_fresh_response_is_not_flagged(
    db: CircuitBreaker, client_for: Any, isolated_registry: Registry
) -> None:
    """A response with no fallback served has no X-Degraded header."""
    async with client_for(starlette_app(db, isolated_registry)) as client:
        response = await client.get("/plain")
    assert "x-degraded" not in response.headers


async def test_degraded_flag_does_not_leak_between_requests(
    db: CircuitBreaker, client_for: Any, isolated_registry: Registry
) -> None:
    """Each request starts undegraded, even on the same connection."""
    async with client_for(starlette_app(db, isolated_registry)) as client:
        await client.get("/degraded")
        response = await client.get("/plain")
    assert "x-degraded" not in response.headers


async def test_sync_endpoint_in_a_thread_is_flagged(
    db: CircuitBreaker, client_for: Any, isolated_registry: Registry
) -> None:
    """A fallback served in a threadpool endpoint still flags the response."""
    async with client_for(starlette_app(db, isolated_registry)) as client:
        response = await client.get("/degraded-sync")
    assert response.headers["x-degraded"] == "fallback"


async def test_streaming_response_is_flagged(
    db: CircuitBreaker, client_for: Any, isolated_registry: Registry
) -> None:
    """A streaming response decided degraded before its first chunk is flagged."""
    async with client_for(starlette_app(db, isolated_registry)) as client:
        response = await client.get("/stream")
    assert response.text == "one,two"
    assert response.headers["x-degraded"] == "fallback"


async def test_mark_after_headers_sent_cannot_be_flagged(
    db: CircuitBreaker, client_for: Any, isolated_registry: Registry
) -> None:
    """A fallback served after the headers went out cannot flag the response (documented)."""
    async with client_for(starlette_app(db, isolated_registry)) as client:
        response = await client.get("/stream-late")
    assert response.text == "one,two"
    assert "x-degraded" not in response.headers


async def test_existing_x_degraded_header_is_kept(
    client_for: Any, isolated_registry: Registry
) -> None:
    """An X-Degraded header set by the app is not duplicated."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        mark_degraded()
        await PlainTextResponse("x", headers={"X-Degraded": "stale-cache"})(scope, receive, send)

    async with client_for(ResilienceMiddleware(app, registry=isolated_registry)) as client:
        response = await client.get("/")
    assert response.headers.get_list("x-degraded") == ["stale-cache"]


async def test_served_fallback_flags_the_response(
    db: CircuitBreaker, trip: Any, client_for: Any, isolated_registry: Registry
) -> None:
    """@fallback serving a cached value during an outage flags the response."""
    pages: dict[str, str] = {}

    @resilience.fallback(default="cached page")
    async def render(slug: str) -> str:
        return await db.call(lambda: _page(slug, pages))

    async def page(request: Request) -> Response:
        return PlainTextResponse(await render(request.path_params["slug"]))

    app = Starlette(routes=[Route("/pages/{slug}", page)])
    app.add_middleware(ResilienceMiddleware, registry=isolated_registry)
    await trip(db)
    async with client_for(app) as client:
        response = await client.get("/pages/home")
    assert response.status_code == 200
    assert response.text == "cached page"
    assert response.headers["x-degraded"] == "fallback"


async def _page(slug: str, pages: dict[str, str]) -> str:
    return pages.setdefault(slug, f"page {slug}")


# -- route breakers ---------------------------------------------------------------


def flaky_app(registry: Registry, **options: Any) -> tuple[Starlette, dict[str, int]]:
    """/items/{item_id} answers 500 while ``state["status"]`` says so; counts calls."""
    state = {"calls": 0, "status": 500}

    async def item(request: Request) -> Response:
        state["calls"] += 1
        return PlainTextResponse("item", status_code=state["status"])

    async def explode(request: Request) -> Response:
        state["calls"] += 1
        raise ConnectionError("downstream")

    async def inner_open(request: Request) -> Response:
        state["calls"] += 1
        raise CircuitOpenError("users-db", CircuitState.OPEN, 3.0)

    app = Starlette(
        routes=[
            Route("/items/{item_id}", item),
            Route("/explode", explode),
            Route("/inner-open", inner_open),
            Mount("/admin/{tenant}", routes=[Route("/report/{rid:int}", item)]),
        ]
    )
    app.add_middleware(ResilienceMiddleware, registry=registry, **options)
    return app, state


async def test_route_breakers_are_off_by_default(
    client_for: Any, isolated_registry: Registry
) -> None:
    """Without route_breakers no breaker is created, however many 5xx."""
    app, _ = flaky_app(isolated_registry)
    async with client_for(app) as client:
        for _ in range(6):
            await client.get("/items/1")
    assert len(isolated_registry) == 0


async def test_route_breaker_is_named_by_method_and_template(
    client_for: Any, isolated_registry: Registry
) -> None:
    """A route breaker is named "<METHOD> <template>", whatever the concrete path."""
    app, _ = flaky_app(isolated_registry, route_breakers=True)
    async with client_for(app) as client:
        for item_id in range(3):
            await client.get(f"/items/{item_id}")
    assert "GET /items/{item_id}" in isolated_registry
    assert [b.name for b in isolated_registry.all()] == ["GET /items/{item_id}"]


async def test_invented_methods_share_one_bounded_breaker_name(
    client_for: Any, isolated_registry: Registry
) -> None:
    """Clients inventing HTTP methods cannot create breakers without limit."""

    async def files(scope: Any, receive: Any, send: Any) -> None:  # any method
        await PlainTextResponse("file")(scope, receive, send)

    app = Starlette(routes=[Mount("/files", app=files)])
    app.add_middleware(ResilienceMiddleware, registry=isolated_registry, route_breakers=True)
    async with client_for(app) as client:
        for i in range(20):
            assert (await client.request(f"X{i}", "/files/a")).status_code == 200
        await client.get("/files/a")
    names = sorted(b.name for b in isolated_registry.all())
    assert names == ["GET /files/{path}", "OTHER /files/{path}"]


async def test_route_breaker_counts_5xx_and_opens(
    client_for: Any, isolated_registry: Registry
) -> None:
    """5xx answers count as failures; once open, the route answers 503 without running."""
    app, state = flaky_app(isolated_registry, route_breakers={"failure_threshold": 3})
    async with client_for(app) as client:
        statuses = [(await client.get(f"/items/{i}")).status_code for i in range(5)]
    assert statuses == [500, 500, 500, 503, 503]
    assert state["calls"] == 3
    breaker = isolated_registry["GET /items/{item_id}"]
    assert breaker.state is CircuitState.OPEN
    assert breaker.metrics()["rejected_calls"] == 2


async def test_open_route_answers_problem_with_retry_after(
    client_for: Any, isolated_registry: Registry
) -> None:
    """An open route breaker's 503 names the route breaker and carries Retry-After."""
    app, _ = flaky_app(
        isolated_registry, route_breakers={"failure_threshold": 1, "recovery_timeout": 12}
    )
    async with client_for(app) as client:
        await client.get("/items/1")
        response = await client.get("/items/2")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "12"
    assert "circuit" not in response.json()


async def test_route_breaker_counts_exceptions(
    client_for: Any, isolated_registry: Registry
) -> None:
    """An exception escaping the route counts as a failure of its breaker."""
    app, _ = flaky_app(isolated_registry, route_breakers={"failure_threshold": 2})
    async with client_for(app) as client:
        statuses = [(await client.get("/explode")).status_code for _ in range(3)]
    assert statuses == [500, 500, 503]


async def test_route_breaker_ignores_inner_rejections(
    client_for: Any, isolated_registry: Registry
) -> None:
    """A dependency's rejection (503) says nothing about the route: not counted."""
    app, state = flaky_app(isolated_registry, route_breakers={"failure_threshold": 1})
    async with client_for(app) as client:
        for _ in range(3):
            await client.get("/inner-open")
    assert state["calls"] == 3
    breaker = isolated_registry["GET /inner-open"]
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics()["ignored_calls"] == 3


async def test_route_breaker_counts_4xx_as_success(
    client_for: Any, isolated_registry: Registry
) -> None:
    """A 4xx answer is the client's problem: a success for the route."""
    app, state = flaky_app(isolated_registry, route_breakers={"failure_threshold": 1})
    state["status"] = 404
    async with client_for(app) as client:
        for i in range(3):
            await client.get(f"/items/{i}")
    assert isolated_registry["GET /items/{item_id}"].metrics()["successful_calls"] == 3


async def test_route_breaker_recovers(
    client_for: Any, isolated_registry: Registry, clock: FakeClock
) -> None:
    """After the recovery timeout a successful probe closes the route again."""
    app, state = flaky_app(
        isolated_registry,
        route_breakers={"failure_threshold": 1, "recovery_timeout": 10, "success_threshold": 1},
    )
    async with client_for(app) as client:
        await client.get("/items/1")
        assert (await client.get("/items/1")).status_code == 503
        state["status"] = 200
        clock.advance(10)
        assert (await client.get("/items/1")).status_code == 200
    assert isolated_registry["GET /items/{item_id}"].state is CircuitState.CLOSED


async def test_route_breaker_template_includes_mounts(
    client_for: Any, isolated_registry: Registry
) -> None:
    """Routes inside a Mount are named with the mount's template, not its values."""
    app, _ = flaky_app(isolated_registry, route_breakers=True)
    async with client_for(app) as client:
        await client.get("/admin/acme/report/7")
        await client.get("/admin/globex/report/8")
    assert [b.name for b in isolated_registry.all()] == ["GET /admin/{tenant}/report/{rid}"]


async def test_unknown_route_gets_no_breaker(client_for: Any, isolated_registry: Registry) -> None:
    """A request no route matches (404) creates no breaker."""
    app, _ = flaky_app(isolated_registry, route_breakers=True)
    async with client_for(app) as client:
        for i in range(5):
            assert (await client.get(f"/nothing/{i}")).status_code == 404
    assert len(isolated_registry) == 0


async def test_raw_asgi_app_gets_no_route_breakers(
    client_for: Any, isolated_registry: Registry
) -> None:
    """With no known route templates, raw URLs never become breaker names."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await PlainTextResponse("no", status_code=500)(scope, receive, send)

    middleware = ResilienceMiddleware(app, registry=isolated_registry, route_breakers=True)
    async with client_for(middleware) as client:
        for i in range(3):
            await client.get(f"/orders/{i}")
    assert len(isolated_registry) == 0


async def test_name_for_names_route_breakers(client_for: Any, isolated_registry: Registry) -> None:
    """name_for(scope) chooses the breaker name before the app runs; None skips."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await PlainTextResponse("no", status_code=502)(scope, receive, send)

    def name_for(scope: Scope) -> str | None:
        return "orders" if scope["path"].startswith("/orders/") else None

    middleware = ResilienceMiddleware(
        app,
        registry=isolated_registry,
        route_breakers={"failure_threshold": 2},
        name_for=name_for,
    )
    async with client_for(middleware) as client:
        statuses = [(await client.get(f"/orders/{i}")).status_code for i in range(3)]
        other = await client.get("/health")
    assert statuses == [502, 502, 503]
    assert other.status_code == 502
    assert isolated_registry["orders"].state is CircuitState.OPEN


async def test_preconfigured_route_breaker_is_used_as_is(
    client_for: Any, isolated_registry: Registry
) -> None:
    """A breaker already registered under a route's name keeps its own settings."""
    isolated_registry.get_or_create("GET /items/{item_id}", failure_threshold=1)
    app, _ = flaky_app(isolated_registry, route_breakers={"failure_threshold": 50})
    async with client_for(app) as client:
        statuses = [(await client.get("/items/1")).status_code for _ in range(2)]
    assert statuses == [500, 503]


def test_route_breakers_reject_unknown_settings(isolated_registry: Registry) -> None:
    """An unknown CircuitConfig field in route_breakers fails at construction."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise AssertionError

    with pytest.raises(TypeError, match="nope"):
        ResilienceMiddleware(app, registry=isolated_registry, route_breakers={"nope": 1})


# -- FastAPI ------------------------------------------------------------------------


def fastapi_app(db: CircuitBreaker, registry: Registry, **options: Any) -> FastAPI:
    app = FastAPI()
    router = APIRouter(prefix="/api")

    @router.get("/users/{user_id}")
    async def get_user(user_id: str) -> dict[str, str]:
        return await db.call(lookup, user_id)

    @router.get("/broken/{n}")
    async def broken(n: int) -> dict[str, str]:
        raise ConnectionError("downstream")

    @app.get("/cached")
    async def cached() -> dict[str, str]:
        mark_degraded()
        return {"source": "cache"}

    app.include_router(router, prefix="/v1")
    app.add_middleware(ResilienceMiddleware, registry=registry, **options)
    return app


async def test_fastapi_open_circuit_is_a_503(
    db: CircuitBreaker, trip: Any, client_for: Any, isolated_registry: Registry
) -> None:
    """In FastAPI, an open dependency circuit is a 503 with Retry-After."""
    app = fastapi_app(db, isolated_registry)
    async with client_for(app) as client:
        assert (await client.get("/v1/api/users/3")).json() == {"id": "3"}
        await trip(db)
        response = await client.get("/v1/api/users/3")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "30"
    assert "circuit" not in response.json()


async def test_fastapi_degraded_is_flagged(
    db: CircuitBreaker, client_for: Any, isolated_registry: Registry
) -> None:
    """In FastAPI, a degraded answer carries X-Degraded."""
    async with client_for(fastapi_app(db, isolated_registry)) as client:
        response = await client.get("/cached")
    assert response.headers["x-degraded"] == "fallback"


async def test_fastapi_route_breakers_use_full_templates(
    db: CircuitBreaker, client_for: Any, isolated_registry: Registry
) -> None:
    """Routes of an included router are named with every prefix, and shed load when open."""
    app = fastapi_app(db, isolated_registry, route_breakers={"failure_threshold": 2})
    async with client_for(app) as client:
        statuses = [(await client.get(f"/v1/api/broken/{i}")).status_code for i in range(3)]
    assert statuses == [500, 500, 503]
    assert isolated_registry["GET /v1/api/broken/{n}"].state is CircuitState.OPEN


# -- status endpoint ----------------------------------------------------------------------


async def test_status_endpoint_is_off_by_default(
    db: CircuitBreaker, client_for: Any, isolated_registry: Registry
) -> None:
    """Without status_path there is no status endpoint."""
    async with client_for(starlette_app(db, isolated_registry)) as client:
        response = await client.get("/_resilience/status")
    assert response.status_code == 404


async def test_status_endpoint_serves_the_snapshot(
    db: CircuitBreaker, trip: Any, client_for: Any, isolated_registry: Registry
) -> None:
    """status_path answers a JSON snapshot of every breaker in the registry."""
    await trip(db)
    async with client_for(
        starlette_app(db, isolated_registry, status_path="/_resilience/status")
    ) as client:
        response = await client.get("/_resilience/status")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body == json.loads(json.dumps({"circuits": isolated_registry.snapshot()}))
    assert body["circuits"][0]["name"] == "users-db"
    assert body["circuits"][0]["state"] == "open"


@pytest.mark.parametrize(
    ("authorization", "status"),
    [(None, 401), ("Bearer wrong", 401), ("Basic s3cret-token", 401), ("Bearer s3cret-token", 200)],
)
async def test_status_token_guard(
    db: CircuitBreaker,
    client_for: Any,
    authorization: str | None,
    status: int,
    isolated_registry: Registry,
) -> None:
    """A token guard admits only Authorization: Bearer <token>."""
    app = starlette_app(db, isolated_registry, status_path="/status", status_guard="s3cret-token")
    headers = {"Authorization": authorization} if authorization else {}
    async with client_for(app) as client:
        response = await client.get("/status", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "circuits" not in response.text


async def test_status_callable_guard(
    db: CircuitBreaker, client_for: Any, isolated_registry: Registry
) -> None:
    """A callable guard decides from the scope; False is a 403."""

    def only_local(scope: Scope) -> bool:
        return scope["client"] is not None and scope["client"][0] == "10.1.1.1"

    app = starlette_app(db, isolated_registry, status_path="/status", status_guard=only_local)
    async with client_for(app) as client:
        response = await client.get("/status")
    assert response.status_code == 403


async def test_status_async_guard(
    db: CircuitBreaker, client_for: Any, isolated_registry: Registry
) -> None:
    """An async guard is awaited."""

    async def allow(scope: Scope) -> bool:
        return True

    app = starlette_app(db, isolated_registry, status_path="/status", status_guard=allow)
    async with client_for(app) as client:
        response = await client.get("/status")
    assert response.status_code == 200


async def test_status_endpoint_only_reads(
    db: CircuitBreaker, client_for: Any, isolated_registry: Registry
) -> None:
    """The status endpoint answers 405 to anything but GET and HEAD."""
    async with client_for(starlette_app(db, isolated_registry, status_path="/status")) as client:
        response = await client.post("/status")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


def test_empty_token_guard_is_refused(isolated_registry: Registry) -> None:
    """An empty token would protect nothing: refused at construction."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise AssertionError

    with pytest.raises(ValueError, match="token"):
        ResilienceMiddleware(app, registry=isolated_registry, status_path="/s", status_guard="")


# -- other scopes pass through -------------------------------------------------------------


@pytest.mark.parametrize("scope_type", ["lifespan", "websocket"])
async def test_non_http_scopes_pass_through_untouched(
    isolated_registry: Registry, scope_type: str
) -> None:
    """Lifespan and websocket scopes reach the app with the same scope, receive and send."""
    seen: list[tuple[Any, Any, Any]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    async def receive() -> Message:
        raise AssertionError

    async def send(message: Message) -> None:
        raise AssertionError

    scope = {"type": scope_type, "path": "/status"}
    middleware = ResilienceMiddleware(
        app, registry=isolated_registry, status_path="/status", route_breakers=True
    )
    await middleware(scope, receive, send)
    assert seen == [(scope, receive, send)]
    assert scope == {"type": scope_type, "path": "/status"}


async def test_starlette_lifespan_runs_through_the_middleware(
    isolated_registry: Registry,
) -> None:
    """A Starlette app's lifespan still starts and stops behind the middleware."""
    events: list[str] = []

    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = Starlette(lifespan=contextlib.asynccontextmanager(lifespan))
    app.add_middleware(ResilienceMiddleware, registry=isolated_registry)
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan", "state": {}}, receive, send)
    assert events == ["startup", "shutdown"]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_is_a_pure_asgi_middleware() -> None:
    """The middleware imports without Starlette (or any web framework) installed."""
    code = (
        "import sys\n"
        "for name in ('starlette', 'fastapi', 'django'):\n"
        "    sys.modules[name] = None\n"
        "import resilience.integrations.asgi\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
