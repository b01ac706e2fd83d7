"""Test doubles for the decorator tests: a dependency that can go down, caches
that count and fail on demand, and a sleep that only advances a fake clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from resilience.testing import FakeClock


class SqlError(Exception):
    """An error carrying a SQLSTATE, as asyncpg's do."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


class Dependency:
    """A data source that answers, or raises ``error`` while ``down``.

    ``suspend`` makes each call yield to the event loop once before answering,
    as a real network call would.
    """

    def __init__(self, *, suspend: bool = False) -> None:
        self.down = False
        self.error: Exception | None = None
        self.calls = 0
        self.suspend = suspend

    def _answer(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.error is not None:
            raise self.error
        if self.down:
            raise ConnectionError("dependency down")
        return {"args": args, "kwargs": kwargs, "call": self.calls}

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        if self.suspend:
            await asyncio.sleep(0)
        return self._answer(*args, **kwargs)

    def fetch_sync(self, *args: Any, **kwargs: Any) -> Any:
        return self._answer(*args, **kwargs)


class CountingCache:
    """An async cache (``get``/``set``) that counts operations and can fail.

    Attributes:
        get_error / set_error: raised by ``get`` / ``set`` when set.
        gate: when set, ``get`` waits for it (to hold reads in flight).
        reading: set once a ``get`` has started.
    """

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.ttls: dict[str, Any] = {}
        self.gets = 0
        self.sets = 0
        self.get_error: Exception | None = None
        self.set_error: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.reading = asyncio.Event()

    async def get(self, key: str) -> Any:
        self.gets += 1
        self.reading.set()
        if self.gate is not None:
            await self.gate.wait()
        else:
            await asyncio.sleep(0)
        if self.get_error is not None:
            raise self.get_error
        return self.data.get(key)

    async def set(self, key: str, value: Any, ttl: Any = None) -> bool:
        self.sets += 1
        if self.set_error is not None:
            raise self.set_error
        self.data[key] = value
        self.ttls[key] = ttl
        return True


class SyncCache:
    """A sync cache for sync functions."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.gets = 0
        self.get_error: Exception | None = None

    def get(self, key: str) -> Any:
        self.gets += 1
        if self.get_error is not None:
            raise self.get_error
        return self.data.get(key)

    def set(self, key: str, value: Any, ttl: Any = None) -> bool:
        self.data[key] = value
        return True


class FakeSleep:
    """``sleep(seconds)`` that advances a fake clock and records the waits."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)

    def sync(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)


@pytest.fixture
def dep() -> Dependency:
    """A dependency that is up."""
    return Dependency()


@pytest.fixture
def cache() -> CountingCache:
    """An empty counting cache."""
    return CountingCache()


@pytest.fixture
def fake_sleep(fake_clock: FakeClock) -> FakeSleep:
    """A sleep that never sleeps."""
    return FakeSleep(fake_clock)
