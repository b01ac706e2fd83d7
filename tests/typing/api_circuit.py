"""Checked by mypy --strict in CI (never imported by pytest): the public API's types."""

from __future__ import annotations

from typing import assert_type

from resilience import CircuitBreaker, CircuitConfig, CircuitState, Permit, Registry, circuit


@circuit
async def bare(user_id: int, *, verbose: bool = False) -> str:
    return str(user_id)


@circuit("users-db", failure_threshold=5, recovery_timeout=30)
async def named(user_id: int) -> list[str]:
    return [str(user_id)]


@circuit("sync-db")
def sync_lookup(key: str) -> bytes:
    return key.encode()


async def uses() -> None:
    assert_type(await bare(1, verbose=True), str)
    assert_type(await named(2), list[str])
    assert_type(sync_lookup("k"), bytes)
    breaker = CircuitBreaker("x", CircuitConfig(failure_threshold=2), error_rate=None)
    assert_type(await breaker.call(named, 3), list[str])
    assert_type(breaker.call_sync(sync_lookup, "k"), bytes)
    assert_type(breaker.state, CircuitState)
    assert_type(breaker.try_acquire(), Permit | None)
    assert_type(Registry().get_or_create("y"), CircuitBreaker)


async def wrong_argument_types_are_errors() -> None:
    await named("not an int")  # type: ignore[arg-type]
    sync_lookup(1)  # type: ignore[arg-type]
