"""The Django middleware: sync and async view stacks through Django's ASGI handler
(httpx's ASGI transport), and the sync path through django.test.Client."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import django
import pytest
from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="resilience-tests",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()

from django.core.handlers.asgi import ASGIHandler
from django.test import Client, override_settings
from django.urls import path

import resilience
from resilience import (
    BulkheadFullError,
    CircuitBreaker,
    CircuitState,
    Registry,
    mark_degraded,
)
from resilience.integrations.asgi import ResilienceMiddleware as ASGIResilienceMiddleware
from resilience.integrations.django import ResilienceMiddleware

MIDDLEWARE = ["resilience.integrations.django.ResilienceMiddleware"]

# What the views reach: set per test by the `env` fixture.
ENV: dict[str, Any] = {}


def lookup(pk: int) -> dict[str, int]:
    return {"id": pk}


async def alookup(pk: int) -> dict[str, int]:
    return {"id": pk}


def user_sync(request: HttpRequest, pk: int) -> HttpResponse:
    db: CircuitBreaker = ENV["db"]
    return JsonResponse(db.call_sync(lookup, pk))


async def user_async(request: HttpRequest, pk: int) -> HttpResponse:
    db: CircuitBreaker = ENV["db"]
    return JsonResponse(await db.call(alookup, pk))


def degraded_sync(request: HttpRequest) -> HttpResponse:
    mark_degraded()
    return HttpResponse("stale but useful")


async def degraded_async(request: HttpRequest) -> HttpResponse:
    mark_degraded()
    return HttpResponse("stale but useful")


def plain(request: HttpRequest) -> HttpResponse:
    return HttpResponse("fresh")


def boom(request: HttpRequest) -> HttpResponse:
    raise ValueError("a bug")


async def bulkhead(request: HttpRequest) -> HttpResponse:
    raise BulkheadFullError("pdf-render", 2, 0)


def flaky(request: HttpRequest, slug: str) -> HttpResponse:
    ENV["calls"] = ENV.get("calls", 0) + 1
    return HttpResponse("flaky", status=ENV.get("status", 500))


async def flaky_async(request: HttpRequest, slug: str) -> HttpResponse:
    ENV["calls"] = ENV.get("calls", 0) + 1
    return HttpResponse("flaky", status=ENV.get("status", 500))


@resilience.fallback(default="cached page")
def render_page(slug: str) -> str:
    db: CircuitBreaker = ENV["db"]
    return db.call_sync(lambda: f"page {slug}")


def page(request: HttpRequest, slug: str) -> HttpResponse:
    return HttpResponse(render_page(slug))


urlpatterns = [
    path("users/<int:pk>/", user_sync),
    path("async/users/<int:pk>/", user_async),
    path("degraded/", degraded_sync),
    path("async/degraded/", degraded_async),
    path("plain/", plain),
    path("boom/", boom),
    path("bulkhead/", bulkhead),
    path("flaky/<slug:slug>/", flaky),
    path("async/flaky/<slug:slug>/", flaky_async),
    path("pages/<slug:slug>/", page),
]


@pytest.fixture
def env(db: CircuitBreaker, isolated_registry: Registry) -> Iterator[dict[str, Any]]:
    ENV.clear()
    ENV.update(db=db, registry=isolated_registry)
    yield ENV
    ENV.clear()


def configured(registry: Registry, **options: Any) -> override_settings:
    """Settings for one test: this module's URLs, the middleware, RESILIENCE options."""
    return override_settings(
        ROOT_URLCONF=sys.modules[__name__],
        MIDDLEWARE=MIDDLEWARE,
        RESILIENCE={"REGISTRY": registry, **options},
    )


async def asgi_get(client_for: Any, url: str, **kwargs: Any) -> Any:
    async with client_for(ASGIHandler()) as client:
        return await client.get(url, **kwargs)


# -- sync and async capable ---------------------------------------------------------


def test_middleware_is_sync_and_async_capable(isolated_registry: Registry) -> None:
    """It follows Django's pattern: async with an async get_response, sync otherwise."""

    async def async_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    def sync_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    with configured(isolated_registry):
        assert ResilienceMiddleware.sync_capable and ResilienceMiddleware.async_capable
        assert iscoroutinefunction(ResilienceMiddleware(async_view))
        assert not iscoroutinefunction(ResilienceMiddleware(sync_view))


def test_unknown_setting_is_refused(isolated_registry: Registry) -> None:
    """A misspelt RESILIENCE key fails loudly at startup."""
    with (
        configured(isolated_registry, STATUS_PTH="/s"),
        pytest.raises(ValueError, match="STATUS_PTH"),
    ):
        ResilienceMiddleware(plain)


# -- rejections become 503 -----------------------------------------------------------


@pytest.mark.parametrize("url", ["/users/1/", "/async/users/1/"])
async def test_open_circuit_is_a_503_problem(
    env: dict[str, Any], trip: Any, client_for: Any, url: str
) -> None:
    """A CircuitOpenError raised by a sync or async view is a 503 problem+json."""
    await trip(env["db"])
    with configured(env["registry"]):
        response = await asgi_get(client_for, url)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "30"
    assert response.json() == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "A dependency is temporarily unavailable; try again later.",
        "retry_after": 30,
    }
    assert "users-db" not in response.text
    assert "hunter2" not in response.text


async def test_bulkhead_full_is_a_503(env: dict[str, Any], client_for: Any) -> None:
    """A BulkheadFullError is a 503 with Retry-After: 1."""
    with configured(env["registry"]):
        response = await asgi_get(client_for, "/bulkhead/")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "pdf-render" not in response.text


async def test_other_exceptions_stay_500(env: dict[str, Any], client_for: Any) -> None:
    """A real failure is left to Django: a 500."""
    with configured(env["registry"]):
        response = await asgi_get(client_for, "/boom/")
    assert response.status_code == 500
    assert "retry-after" not in response.headers


async def test_sync_client_path_turns_rejection_into_503(env: dict[str, Any], trip: Any) -> None:
    """Through the sync handler (django.test.Client) a rejection is a 503 too."""
    await trip(env["db"])
    with configured(env["registry"]):
        response = Client().get("/users/1/")
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert "circuit" not in json.loads(response.content)


def test_sync_client_path_leaves_real_failures(env: dict[str, Any]) -> None:
    """Through the sync handler a real failure is still Django's 500."""
    with configured(env["registry"]):
        response = Client(raise_request_exception=False).get("/boom/")
    assert response.status_code == 500


# -- X-Degraded ----------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/degraded/", "/async/degraded/"])
async def test_degraded_response_is_flagged(env: dict[str, Any], client_for: Any, url: str) -> None:
    """A sync or async view that served a fallback gets X-Degraded: fallback."""
    with configured(env["registry"]):
        response = await asgi_get(client_for, url)
    assert response.status_code == 200
    assert response.headers["x-degraded"] == "fallback"


async def test_fresh_response_is_not_flagged(env: dict[str, Any], client_for: Any) -> None:
    """A response with no fallback served has no X-Degraded."""
    with configured(env["registry"]):
        response = await asgi_get(client_for, "/plain/")
    assert "x-degraded" not in response.headers


def test_sync_client_path_flags_degraded(env: dict[str, Any]) -> None:
    """Through the sync handler, a degraded response is flagged as well."""
    with configured(env["registry"]):
        response = Client().get("/degraded/")
    assert response["X-Degraded"] == "fallback"


async def test_served_fallback_flags_the_response(
    env: dict[str, Any], trip: Any, client_for: Any
) -> None:
    """@fallback serving during an outage flags the Django response."""
    await trip(env["db"])
    with configured(env["registry"]):
        response = await asgi_get(client_for, "/pages/home/")
    assert response.text == "cached page"
    assert response.headers["x-degraded"] == "fallback"


# -- route breakers -----------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/async"])
async def test_route_breaker_counts_5xx_and_opens(
    env: dict[str, Any], client_for: Any, prefix: str
) -> None:
    """5xx answers open the route's breaker, named from the URL pattern; then 503 at once."""
    with configured(env["registry"], ROUTE_BREAKERS={"failure_threshold": 2}):
        async with client_for(ASGIHandler()) as client:
            statuses = [(await client.get(f"{prefix}/flaky/{i}/")).status_code for i in range(4)]
    assert statuses == [500, 500, 503, 503]
    assert env["calls"] == 2
    name = f"GET {prefix}/flaky/<slug:slug>/"
    assert env["registry"][name].state is CircuitState.OPEN


def test_sync_client_path_route_breaker(env: dict[str, Any]) -> None:
    """Route breakers work through the sync handler too."""
    with configured(env["registry"], ROUTE_BREAKERS={"failure_threshold": 1}):
        client = Client()
        statuses = [client.get(f"/flaky/{i}/").status_code for i in range(3)]
    assert statuses == [500, 503, 503]


async def test_route_breakers_are_off_by_default(env: dict[str, Any], client_for: Any) -> None:
    """Without ROUTE_BREAKERS no route breaker is created."""
    with configured(env["registry"]):
        async with client_for(ASGIHandler()) as client:
            for i in range(4):
                await client.get(f"/flaky/{i}/")
    assert [b.name for b in env["registry"].all()] == ["users-db"]


async def test_route_breaker_ignores_inner_rejections(
    env: dict[str, Any], trip: Any, client_for: Any
) -> None:
    """A dependency's rejection answered with 503 does not count against the route."""
    await trip(env["db"])
    with configured(env["registry"], ROUTE_BREAKERS={"failure_threshold": 1}):
        async with client_for(ASGIHandler()) as client:
            for _ in range(3):
                assert (await client.get("/async/users/1/")).status_code == 503
    route = env["registry"]["GET /async/users/<int:pk>/"]
    assert route.state is CircuitState.CLOSED
    assert route.metrics()["ignored_calls"] == 3


async def test_unmatched_url_gets_no_breaker(env: dict[str, Any], client_for: Any) -> None:
    """A 404 (no URL pattern) creates no breaker."""
    with configured(env["registry"], ROUTE_BREAKERS=True):
        response = await asgi_get(client_for, "/nothing/here/")
    assert response.status_code == 404
    assert [b.name for b in env["registry"].all()] == ["users-db"]


async def test_route_breaker_recovers(env: dict[str, Any], client_for: Any, clock: Any) -> None:
    """After the recovery timeout, a good probe closes the route breaker."""
    options = {"failure_threshold": 1, "recovery_timeout": 5, "success_threshold": 1}
    with configured(env["registry"], ROUTE_BREAKERS=options):
        async with client_for(ASGIHandler()) as client:
            assert (await client.get("/flaky/a/")).status_code == 500
            assert (await client.get("/flaky/a/")).status_code == 503
            env["status"] = 200
            clock.advance(5)
            assert (await client.get("/flaky/a/")).status_code == 200
    assert env["registry"]["GET /flaky/<slug:slug>/"].state is CircuitState.CLOSED


# -- status endpoint -------------------------------------------------------------------


async def test_status_endpoint_is_off_by_default(env: dict[str, Any], client_for: Any) -> None:
    """Without STATUS_PATH the path is Django's 404."""
    with configured(env["registry"]):
        response = await asgi_get(client_for, "/_resilience/status")
    assert response.status_code == 404


async def test_status_endpoint_with_token(env: dict[str, Any], client_for: Any) -> None:
    """STATUS_PATH serves the registry snapshot to a request with the bearer token."""
    with configured(env["registry"], STATUS_PATH="/_resilience/status", STATUS_GUARD="tok-123"):
        async with client_for(ASGIHandler()) as client:
            denied = await client.get("/_resilience/status")
            allowed = await client.get(
                "/_resilience/status", headers={"Authorization": "Bearer tok-123"}
            )
    assert denied.status_code == 401
    assert denied.headers["www-authenticate"].startswith("Bearer")
    assert allowed.status_code == 200
    assert allowed.json()["circuits"][0]["name"] == "users-db"


def test_status_callable_guard(env: dict[str, Any]) -> None:
    """A callable STATUS_GUARD gets the request; False is a 403."""

    def staff_only(request: HttpRequest) -> bool:
        return bool(request.headers.get("X-Staff") == "yes")

    with configured(env["registry"], STATUS_PATH="/status", STATUS_GUARD=staff_only):
        client = Client()
        assert client.get("/status").status_code == 403
        assert client.get("/status", headers={"X-Staff": "yes"}).status_code == 200


def test_status_registry_by_dotted_path(env: dict[str, Any]) -> None:
    """REGISTRY may be a dotted path to a Registry."""
    with override_settings(
        ROOT_URLCONF=sys.modules[__name__],
        MIDDLEWARE=MIDDLEWARE,
        RESILIENCE={"REGISTRY": "resilience.registry", "STATUS_PATH": "/status"},
    ):
        response = Client().get("/status")
    assert response.status_code == 200
    assert json.loads(response.content) == {
        "circuits": json.loads(json.dumps(resilience.registry.snapshot()))
    }


# -- the ASGI middleware around Django --------------------------------------------------


async def test_asgi_middleware_wraps_django(env: dict[str, Any], client_for: Any) -> None:
    """The pure ASGI middleware around Django's ASGI handler flags degraded answers."""
    with override_settings(ROOT_URLCONF=sys.modules[__name__], MIDDLEWARE=[]):
        app = ASGIResilienceMiddleware(ASGIHandler(), registry=env["registry"], status_path="/s")
        async with client_for(app) as client:
            degraded = await client.get("/degraded/")
            status = await client.get("/s")
    assert degraded.headers["x-degraded"] == "fallback"
    assert status.json()["circuits"][0]["name"] == "users-db"


def test_expose_names_must_be_a_bool() -> None:
    """RESILIENCE['EXPOSE_NAMES'] that is not a bool is an error at startup."""
    from django.test import override_settings

    from resilience.integrations.django import ResilienceMiddleware

    with override_settings(RESILIENCE={"EXPOSE_NAMES": "yes"}), pytest.raises(TypeError):
        ResilienceMiddleware(lambda request: None)
