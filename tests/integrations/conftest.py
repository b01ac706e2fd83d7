from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from resilience import CircuitBreaker, CircuitOpenError, Registry
from resilience.testing import FakeClock


class Down(ConnectionError):
    """The dependency is down."""


async def fail(*_: Any) -> None:
    raise Down("db at 10.0.0.5:5432 refused: password=hunter2")


async def _trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.config.failure_threshold):
        try:
            await breaker.call(fail)
        except (Down, CircuitOpenError):
            pass
    assert breaker.state.value == "open"


@pytest.fixture
def trip() -> Callable[[CircuitBreaker], Any]:
    """``await trip(breaker)``: fail the breaker until it opens."""
    return _trip


ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def client_for() -> ClientFactory:
    """``async with client_for(app) as client``: httpx through the ASGI transport."""

    @asynccontextmanager
    async def make(
        app: Any, *, raise_app_exceptions: bool = False
    ) -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client

    return make


@pytest.fixture
def db(isolated_registry: Registry) -> CircuitBreaker:
    """A dependency breaker that opens after 2 failures and probes after 30 s."""
    return isolated_registry.get_or_create(
        "users-db", failure_threshold=2, recovery_timeout=30, success_threshold=1
    )


@pytest.fixture
def clock(fake_clock: FakeClock) -> FakeClock:
    return fake_clock
