"""Graceful degradation in Django: one line in ``MIDDLEWARE``.

A single-file Django project (settings, views and URLs below) with the
resilience middleware: an open circuit becomes a 503 problem+json with
``Retry-After``, a page served from the fallback cache says
``X-Degraded: fallback``, and URL patterns get their own breakers.

Run it: ``python cookbook/django_app.py`` drives the project through Django's
ASGI handler with httpx (sync views and async views), then through the sync
test client, and prints what a client sees.
"""

from __future__ import annotations

import asyncio

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="cookbook-only",
    ALLOWED_HOSTS=["shop"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["resilience.integrations.django.ResilienceMiddleware"],
    RESILIENCE={
        "REGISTRY": f"{__name__}.registry",  # default: resilience.registry
        "ROUTE_BREAKERS": {"failure_threshold": 20},  # "GET /articles/<slug:slug>/"
        "STATUS_PATH": "/_resilience/status",
        "STATUS_GUARD": "change-me",  # Authorization: Bearer change-me
    },
    INSTALLED_APPS=[],
    DATABASES={},
)
django.setup()

import httpx  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.test import Client  # noqa: E402
from django.urls import path  # noqa: E402

from resilience import Registry, circuit, fallback  # noqa: E402

registry = Registry()
CMS = {"up": True}  # flip to simulate an outage of the content service


@circuit("cms", registry=registry, failure_threshold=2, recovery_timeout=0.5)
def fetch_article(slug: str) -> str:
    if not CMS["up"]:
        raise ConnectionRefusedError("cms is down")
    return f"<h1>{slug}</h1>"


@fallback()  # the last good article per slug
def article_html(slug: str) -> str:
    return fetch_article(slug)


@circuit("cms-async", registry=registry, failure_threshold=2, recovery_timeout=0.5)
async def fetch_comments(slug: str) -> list[str]:
    if not CMS["up"]:
        raise ConnectionRefusedError("cms is down")
    return ["first!"]


def article(request: HttpRequest, slug: str) -> HttpResponse:
    """A sync view: cached, so it keeps answering during an outage."""
    return HttpResponse(article_html(slug))


async def comments(request: HttpRequest, slug: str) -> HttpResponse:
    """An async view: not cached, so an outage is a 503 with Retry-After."""
    return JsonResponse({"comments": await fetch_comments(slug)})


urlpatterns = [
    path("articles/<slug:slug>/", article),
    path("articles/<slug:slug>/comments/", comments),
]


def show(label: str, status: int, headers: dict[str, str], body: bytes) -> None:
    extra = {k: v for k, v in headers.items() if k.lower() in ("retry-after", "x-degraded")}
    text = " ".join(body.decode().split())
    print(f"{label:<40} {status} {extra or ''} {text[:60]}")


async def over_asgi() -> None:
    transport = httpx.ASGITransport(app=ASGIHandler(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:

        async def get(label: str, url: str) -> httpx.Response:
            response = await client.get(url)
            show(label, response.status_code, dict(response.headers), response.content)
            return response

        print("-- ASGI: healthy")
        await get("GET /articles/hello/", "/articles/hello/")
        await get("GET /articles/hello/comments/", "/articles/hello/comments/")

        print("-- ASGI: the content service goes down")
        CMS["up"] = False
        for _ in range(2):
            await get("GET .../comments/ (failing)", "/articles/hello/comments/")
        rejected = await get("GET .../comments/ (open)", "/articles/hello/comments/")
        assert rejected.status_code == 503 and "retry-after" in rejected.headers
        for _ in range(2):
            await get("GET /articles/other/ (failing)", "/articles/other/")
        cached = await get("GET /articles/hello/ (cached)", "/articles/hello/")
        assert cached.status_code == 200 and cached.headers["x-degraded"] == "fallback"

        status = await client.get(
            "/_resilience/status", headers={"Authorization": "Bearer change-me"}
        )
        for breaker in status.json()["circuits"]:
            print(f"   {breaker['name']:<36} {breaker['state']}")

        print("-- ASGI: back up; after the open period the circuits close")
        CMS["up"] = True
        await asyncio.sleep(0.6)
        ok = await get("GET .../comments/", "/articles/hello/comments/")
        assert ok.status_code == 200


def over_wsgi() -> None:
    print("-- WSGI (sync middleware path): an outage again")
    CMS["up"] = False
    client = Client(raise_request_exception=False)
    for _ in range(3):
        response = client.get("/articles/new/")
        show("GET /articles/new/", response.status_code, dict(response.headers), response.content)
    assert response.status_code == 503
    CMS["up"] = True


if __name__ == "__main__":
    asyncio.run(over_asgi())
    over_wsgi()
