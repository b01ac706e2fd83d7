"""Checked by mypy --strict (``.ci/typecheck``, which lays out
``resilience.integrations`` as installed): the decorators keep the signatures
they wrap.

Imported by pytest too (it holds no tests): decorating at import time must
have no side effects beyond building the wrappers.
"""

from __future__ import annotations

from typing import Any, assert_type

import tenacity

from resilience import (
    MISSING,
    Bulkhead,
    CircuitBreaker,
    bulkhead,
    chain,
    circuit,
    fallback,
    retry,
    timeout,
)
from resilience.integrations.tenacity import is_transient, retry_if_transient


class Cache:
    async def get(self, key: str) -> Any:
        return None

    async def set(self, key: str, value: Any, ttl: float | None = None) -> bool:
        return True


class Pool:
    circuit_breaker = CircuitBreaker("typing-pool")

    async def fetch(self, query: str) -> list[int]:
        return []


cache = Cache()
primary, replica = Pool(), Pool()


@fallback(cache, ttl=300, fresh_ttl=5)
@circuit("typing-users")
async def get_user(user_id: int, *, verbose: bool = False) -> dict[str, int]:
    return {"id": user_id}


@fallback(default=[])
def sync_list(prefix: str) -> list[str]:
    return [prefix]


@fallback(lambda user_id: {"id": user_id}, on=(ConnectionError,))
async def with_callable(user_id: int) -> dict[str, int]:
    return {"id": user_id}


@chain(primary, replica)
async def find_orders(pool: Pool, customer_id: int) -> list[int]:
    return await pool.fetch(str(customer_id))


@retry(attempts=3, wait=0.1, on=ConnectionError)
async def flaky(x: int) -> str:
    return str(x)


@retry
def bare_retry(x: int) -> int:
    return x


@retry(attempts=5, wait=tenacity.wait_fixed(1), on=retry_if_transient)
async def with_tenacity(x: int) -> int:
    return x


@timeout(2.5)
async def slow(x: int) -> bytes:
    return b""


db: Bulkhead = bulkhead(10, max_waiting=5)


@db
async def capped(x: int) -> float:
    return 1.0


@bulkhead(2)
def capped_sync(x: int) -> float:
    return 1.0


async def full_search(query: str) -> list[str]:
    return [query]


async def simple_search(query: str) -> list[str]:
    return []


def popular(query: str) -> list[str]:
    return []


search = chain.of(full_search, simple_search)
degrading = chain.of(full_search, simple_search, popular)
sync_chain = chain.of(popular, popular)


async def uses() -> None:
    assert_type(await get_user(1, verbose=True), dict[str, int])
    assert_type(sync_list("a"), list[str])
    assert_type(await with_callable(1), dict[str, int])
    assert_type(await find_orders(7), list[int])
    assert_type(await flaky(1), str)
    assert_type(bare_retry(1), int)
    assert_type(await with_tenacity(1), int)
    assert_type(await slow(1), bytes)
    assert_type(await capped(1), float)
    assert_type(capped_sync(1), float)
    assert_type(await search("q"), list[str])
    assert_type(await degrading("q"), list[str])
    assert_type(sync_chain("q"), list[str])
    assert_type(is_transient(ConnectionError()), bool)
    assert MISSING is not None


async def wrong_argument_types_are_errors() -> None:
    await get_user("not an int")  # type: ignore[arg-type]
    await find_orders("not an int")  # type: ignore[arg-type]
    await flaky(b"")  # type: ignore[arg-type]
    await slow("x")  # type: ignore[arg-type]
    await capped("x")  # type: ignore[arg-type]
    sync_list(1)  # type: ignore[arg-type]


def timeout_needs_an_async_function() -> None:
    def sync(x: int) -> int:
        return x

    timeout(1)(sync)  # type: ignore[arg-type]
