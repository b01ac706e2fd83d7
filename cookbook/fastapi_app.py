"""Graceful degradation at the edge of a FastAPI app.

- an open circuit becomes a 503 ``application/problem+json`` with ``Retry-After``;
- pages served from the fallback cache during the outage say ``X-Degraded: fallback``;
- each route gets its own breaker (named after its template);
- a token-protected status endpoint shows every breaker.

Run it: ``python cookbook/fastapi_app.py`` drives the app in-process through
httpx and prints what a client sees. Serve it for real with
``uvicorn cookbook.fastapi_app:app``.
"""

from __future__ import annotations

import asyncio
import os

import httpx
from fastapi import APIRouter, FastAPI

from resilience import Registry, circuit, fallback
from resilience.integrations.asgi import ResilienceMiddleware

registry = (
    Registry()
)  # resilience.registry in a real service; a fresh one keeps the recipe repeatable
STATUS_TOKEN = os.environ.get("RESILIENCE_STATUS_TOKEN", "change-me")

# A stand-in for the database: flip `DATABASE["up"]` to simulate an outage.
DATABASE = {"up": True}


@circuit("catalog-db", registry=registry, failure_threshold=2, recovery_timeout=0.5)
async def load_product(product_id: int) -> dict[str, object]:
    if not DATABASE["up"]:
        raise ConnectionRefusedError("catalog-db is down")
    return {"id": product_id, "name": f"Product {product_id}", "price": 9.99}


@fallback()  # the last good answer per product, from an in-process cache
async def product_page(product_id: int) -> dict[str, object]:
    return await load_product(product_id)


router = APIRouter(prefix="/products")


@router.get("/{product_id}")
async def get_product(product_id: int) -> dict[str, object]:
    """Cached during an outage: answers keep coming, flagged X-Degraded."""
    return await product_page(product_id)


@router.get("/{product_id}/stock")
async def get_stock(product_id: int) -> dict[str, object]:
    """Not cached: an open circuit here is a 503 with Retry-After."""
    product = await load_product(product_id)
    return {"id": product["id"], "in_stock": 3}


app = FastAPI()
app.include_router(router)
app.add_middleware(
    ResilienceMiddleware,
    registry=registry,
    route_breakers={"failure_threshold": 20},  # per route: "GET /products/{product_id}"
    status_path="/_resilience/status",
    status_guard=STATUS_TOKEN,  # clients send "Authorization: Bearer <token>"
)


def show(label: str, response: httpx.Response) -> None:
    extra = {k: response.headers[k] for k in ("retry-after", "x-degraded") if k in response.headers}
    print(f"{label:<34} {response.status_code} {extra or ''} {response.text[:90]}")


async def main() -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        print("-- healthy")
        show("GET /products/1", await client.get("/products/1"))
        show("GET /products/1/stock", await client.get("/products/1/stock"))

        print("-- the database goes down")
        DATABASE["up"] = False
        for _ in range(2):
            show("GET /products/1/stock (failing)", await client.get("/products/1/stock"))
        stock = await client.get("/products/1/stock")
        show("GET /products/1/stock (open)", stock)
        assert stock.status_code == 503 and "retry-after" in stock.headers
        page = await client.get("/products/1")
        show("GET /products/1 (cached)", page)
        assert page.status_code == 200 and page.headers["x-degraded"] == "fallback"

        print("-- the status endpoint")
        show("without the token", await client.get("/_resilience/status"))
        status = await client.get(
            "/_resilience/status", headers={"Authorization": f"Bearer {STATUS_TOKEN}"}
        )
        for breaker in status.json()["circuits"]:
            print(f"   {breaker['name']:<32} {breaker['state']}")

        print("-- the database is back; after the open period a probe closes the circuit")
        DATABASE["up"] = True
        await asyncio.sleep(0.6)
        recovered = await client.get("/products/1/stock")
        show("GET /products/1/stock", recovered)
        assert recovered.status_code == 200
        page = await client.get("/products/1")
        show("GET /products/1", page)
        assert "x-degraded" not in page.headers


if __name__ == "__main__":
    asyncio.run(main())
