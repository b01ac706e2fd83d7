from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from resilience import CircuitBreaker
from resilience.testing import FakeClock


class Down(ConnectionError):
    """The dependency is down."""


async def ok(value: Any = "ok") -> Any:
    return value


async def down() -> None:
    raise Down("down")


@pytest.fixture
def make(fake_clock: FakeClock) -> Callable[..., CircuitBreaker]:
    """Build a breaker on the test's fake clock."""

    def build(name: str = "dep", **fields: Any) -> CircuitBreaker:
        return CircuitBreaker(name, clock=fake_clock, **fields)

    return build


async def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(Down):
            await breaker.call(down)


async def succeed(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        assert await breaker.call(ok) == "ok"
