"""Decoration: validation, the wrapper's attributes, signatures."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from typing import Any

import pytest

from resilience import (
    CircuitBreaker,
    fallback,
)

from ..conftest import CountingCache

# -- decoration ---------------------------------------------------------------------


def test_signature_and_kind_are_preserved(cache: CountingCache) -> None:
    """wrapt keeps the signature, name, docstring and coroutine-function-ness."""

    @fallback(cache)
    async def get_user(user_id: int, *, verbose: bool = False) -> dict[str, int]:
        """Doc."""
        return {}

    assert str(inspect.signature(get_user)) == str(inspect.signature(get_user.__wrapped__))
    assert list(inspect.signature(get_user).parameters) == ["user_id", "verbose"]
    assert get_user.__name__ == "get_user"
    assert get_user.__doc__ == "Doc."
    assert inspect.iscoroutinefunction(get_user)


def test_generators_are_rejected(cache: CountingCache) -> None:
    """Guarding a generator would only guard its creation."""
    with pytest.raises(TypeError, match="generator"):

        @fallback(cache)
        async def rows() -> Any:
            yield 1


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"source": 42}, TypeError),
        ({"source": CountingCache}, TypeError),
        ({"source": lambda: 1, "default": 0}, TypeError),
        ({"default": 0, "key": lambda: "k"}, TypeError),
        ({"default": 0, "fresh_ttl": 1}, TypeError),
        ({"source": CountingCache(), "key": "not callable"}, TypeError),
        ({"source": CountingCache(), "ttl": 0}, ValueError),
        ({"source": CountingCache(), "ttl": -1}, ValueError),
        ({"source": CountingCache(), "ttl": "1"}, TypeError),
        ({"source": CountingCache(), "ttl": True}, TypeError),
        ({"source": CountingCache(), "fresh_ttl": 0}, ValueError),
        ({"source": CountingCache(), "ttl": 10, "fresh_ttl": 11}, ValueError),
        ({"source": CountingCache(), "on": "ConnectionError"}, TypeError),
        ({"source": CountingCache(), "on": (asyncio.CancelledError,)}, TypeError),
        ({"source": CountingCache(), "on": ()}, TypeError),
        ({"source": CountingCache(), "clock": object()}, TypeError),
    ],
)
def test_bad_arguments_fail_at_decoration(kwargs: dict[str, Any], error: type[Exception]) -> None:
    """Every bad setting is refused before any function is decorated."""
    with pytest.raises(error):
        fallback(**kwargs)


def test_an_object_with_get_and_set_is_a_cache_even_if_callable() -> None:
    """DESIGN: such an object is a cache even if it is callable."""

    class CallableCache(CountingCache):
        def __call__(self) -> None: ...

    @fallback(CallableCache())
    async def get(x: int) -> None: ...

    assert isinstance(get.cache, CallableCache)  # type: ignore[attr-defined]


def test_the_wrapper_reports_no_cache_for_a_callable_source() -> None:
    """.cache is None and cache_key() refuses without a cache."""

    @fallback(default=0)
    async def get(x: int) -> int:
        return x

    assert get.cache is None  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        get.cache_key(1)  # type: ignore[attr-defined]


async def test_a_sync_callable_source_for_an_async_function_is_called_inline() -> None:
    """Context variables of the caller are visible to the source."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    @fallback(lambda: var.get())
    async def get() -> str:
        raise ConnectionError

    var.set("caller")
    assert await get() == "caller"


async def test_a_staticmethod_source_gets_no_self() -> None:
    """A staticmethod is called with its own arguments only."""

    class Repo:
        @fallback(lambda x: f"backup {x}")
        @staticmethod
        async def get(x: int) -> str:
            raise ConnectionError

    assert await Repo().get(2) == "backup 2"


async def test_a_breaker_around_the_cache_is_not_registered(cache: CountingCache) -> None:
    """The cache breaker is private: not in any registry."""
    from resilience import registry

    before = len(registry)

    @fallback(cache)
    async def get(x: int) -> None: ...

    assert isinstance(get.cache_breaker, CircuitBreaker)  # type: ignore[attr-defined]
    assert len(registry) == before


async def test_a_bound_method_exposes_the_fallback_control(cache: CountingCache) -> None:
    """instance.method.fallback is the function's control: same metrics, flush works."""

    class Repo:
        @fallback(cache)
        async def get(self, x: int) -> int:
            return x

    repo = Repo()
    await repo.get(1)
    await repo.get.fallback.flush()  # type: ignore[attr-defined]
    assert repo.get.fallback.metrics()["writes"] == 1  # type: ignore[attr-defined]
    assert "Repo.get" in repr(Repo.get.fallback)  # type: ignore[attr-defined]
