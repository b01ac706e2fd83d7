"""The demo's web app: a small shop API over PostgreSQL.

Two builds of the same app:

- ``resilient=True``: ``GET /users/{id}`` goes through ``@fallback(cache)``
  over ``@circuit("users-db")``; ``GET /orders/{customer_id}`` through
  ``@chain(primary, replica)`` (each pool has its own breaker);
  ``GET /products`` through a read-through ``@fallback(cache)`` over the
  primary pool's breaker. ``ResilienceMiddleware`` turns an open circuit into
  a 503 with ``Retry-After`` and marks fallback answers with ``X-Degraded``.
- ``resilient=False``: the same queries on the same pools with no breaker, no
  fallback and no failover, as most services are written.

Both serve ``GET /_resilience/status``, the middleware's status endpoint
(every breaker's ``status()``), which ``resilience status URL`` prints.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from resilience import (
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    Registry,
    circuit,
    classify,
    mark_degraded,
)

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp

__all__ = ("STATUS_PATH", "DemoApp", "build_app")

STATUS_PATH = "/_resilience/status"
POOL_SIZE = 10
PRODUCTS_FRESH = 30.0
"""seconds the product list is served from the cache without asking the
database (a catalog changes rarely)."""


@dataclass(eq=False)
class DemoApp:
    """One build of the app, with what it owns (closed by :meth:`close`)."""

    asgi: ASGIApp
    registry: Registry
    resilient: bool
    pools: list[Any] = field(default_factory=list)

    async def close(self) -> None:
        for pool in self.pools:
            await pool.close()


def _make_pool(dsn: str, breaker: CircuitBreaker, *, db_timeout: float) -> Any:
    """A ResilientPool guarded by ``breaker`` (a disabled one: no guard)."""
    # Through importlib: the integrations live outside the core package tree.
    ResilientPool = importlib.import_module("resilience.integrations.asyncpg").ResilientPool
    return ResilientPool(
        dsn,
        name=breaker.name,
        max_size=POOL_SIZE,
        connect_timeout=db_timeout,
        command_timeout=db_timeout,
        acquire_timeout=db_timeout,
        breaker=breaker,
    )


def _no_breaker(name: str) -> CircuitBreaker:
    """A disabled breaker outside any registry: the pool runs unguarded."""
    breaker = CircuitBreaker(name)
    breaker.disable("no breaker in this build of the app")
    return breaker


def _rejections_only(exc: BaseException) -> CircuitOpenError | BulkheadFullError | None:
    """The first rejection of a chain whose every link was rejected, else None."""
    group = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
    if group and all(isinstance(e, CircuitOpenError | BulkheadFullError) for e in group):
        first = group[0]
        assert isinstance(first, CircuitOpenError | BulkheadFullError)
        return first
    return None


def _endpoint(
    handler: Callable[[Request], Awaitable[Any]],
) -> Callable[[Request], Awaitable[Response]]:
    """Turn a handler's result into JSON, and a database error into a 500
    naming only its category. Rejections propagate to the middleware (503)."""
    from starlette.responses import JSONResponse

    async def endpoint(request: Request) -> Response:
        try:
            result = await handler(request)
        except (CircuitOpenError, BulkheadFullError):
            raise
        except Exception as exc:
            rejection = _rejections_only(exc)
            if rejection is not None:
                raise rejection from None
            return JSONResponse(
                {"title": "database error", "category": classify(exc).value}, status_code=500
            )
        if result is None:
            return JSONResponse({"title": "not found"}, status_code=404)
        return JSONResponse(result)

    return endpoint


def build_app(
    *,
    resilient: bool,
    primary_dsn: str,
    replica_dsn: str,
    schema: str,
    cache: Any,
    db_timeout: float,
    breaker_fields: dict[str, Any],
) -> DemoApp:
    """Build the app (see the module docstring for the two variants)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    from resilience import chain, fallback

    ResilienceMiddleware = importlib.import_module(
        "resilience.integrations.asgi"
    ).ResilienceMiddleware

    registry = Registry()
    # Users have a pool of their own, guarded by @circuit on the repository
    # function; orders and products share the primary pool, guarded by the
    # pool's own breaker. Without breakers, both pools run unguarded.
    users_pool = _make_pool(primary_dsn, _no_breaker("users-pool"), db_timeout=db_timeout)
    primary_breaker = (
        registry.get_or_create("pg-primary", **breaker_fields)
        if resilient
        else _no_breaker("pg-primary")
    )
    primary = _make_pool(primary_dsn, primary_breaker, db_timeout=db_timeout)
    pools = [users_pool, primary]

    user_sql = (
        f"SELECT id, name, email, city, created_at::text AS created_at "
        f"FROM {schema}.users WHERE id = $1"
    )
    orders_sql = (
        f"SELECT o.id, p.name AS product, o.quantity, o.total_cents, "
        f"o.created_at::text AS created_at "
        f"FROM {schema}.orders o JOIN {schema}.products p ON p.id = o.product_id "
        f"WHERE o.customer_id = $1 ORDER BY o.created_at DESC LIMIT 10"
    )
    products_sql = (
        f"SELECT id, name, price_cents, stock FROM {schema}.products ORDER BY id LIMIT 20"
    )

    async def load_user(user_id: int) -> dict[str, Any] | None:
        row = await users_pool.fetchrow(user_sql, user_id)
        return None if row is None else dict(row)

    async def load_orders(pool: Any, customer_id: int) -> list[dict[str, Any]]:
        rows = await pool.fetch(orders_sql, customer_id)
        if pool is not primary:
            mark_degraded("replica")
        return [dict(r) for r in rows]

    async def load_products() -> list[dict[str, Any]]:
        return [dict(r) for r in await primary.fetch(products_sql)]

    get_user: Callable[[int], Awaitable[dict[str, Any] | None]]
    find_orders: Callable[[int], Awaitable[list[dict[str, Any]]]]
    list_products: Callable[[], Awaitable[list[dict[str, Any]]]]
    if resilient:
        replica_breaker = registry.get_or_create("pg-replica", **breaker_fields)
        replica = _make_pool(replica_dsn, replica_breaker, db_timeout=db_timeout)
        pools.append(replica)
        guarded = circuit("users-db", registry=registry, **breaker_fields)(load_user)
        # These functions come from a factory (one app per run), so their
        # cache keys name the run's schema: runs sharing a Redis never mix.
        get_user = fallback(cache, ttl=300, key=lambda user_id: f"{schema}:user:{user_id}")(guarded)
        find_orders = chain(primary, replica)(load_orders)
        list_products = fallback(
            cache, ttl=3600, fresh_ttl=PRODUCTS_FRESH, key=lambda: f"{schema}:products"
        )(load_products)
    else:

        async def plain_orders(customer_id: int) -> list[dict[str, Any]]:
            return await load_orders(primary, customer_id)

        get_user, find_orders, list_products = load_user, plain_orders, load_products

    async def user(request: Request) -> Any:
        return await get_user(request.path_params["user_id"])

    async def orders(request: Request) -> Any:
        return await find_orders(request.path_params["customer_id"])

    async def products(request: Request) -> Any:
        return await list_products()

    # Inside Starlette's ServerErrorMiddleware (which answers 500 to any
    # exception reaching it), so an open circuit becomes a 503 first.
    app = Starlette(
        routes=[
            Route("/users/{user_id:int}", _endpoint(user)),
            Route("/orders/{customer_id:int}", _endpoint(orders)),
            Route("/products", _endpoint(products)),
        ],
        middleware=[Middleware(ResilienceMiddleware, registry=registry, status_path=STATUS_PATH)],
    )
    return DemoApp(asgi=app, registry=registry, resilient=resilient, pools=pools)
