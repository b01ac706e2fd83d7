"""@circuit on functions, methods, classmethods and staticmethods."""

from __future__ import annotations

import inspect

import pytest

from resilience import CircuitOpenError, CircuitState, Registry, circuit, registry


async def test_bare_decorator_names_the_breaker_after_the_function() -> None:
    """@circuit uses module.qualname and the default registry."""

    @circuit
    async def lookup(x: int) -> int:
        return x

    name = f"{__name__}.test_bare_decorator_names_the_breaker_after_the_function.<locals>.lookup"
    assert lookup.breaker.name == name  # type: ignore[attr-defined]
    assert registry.get(name) is lookup.breaker  # type: ignore[attr-defined]
    assert await lookup(3) == 3
    registry.unregister(name)


async def test_signature_docstring_and_coroutine_flag_are_preserved(
    isolated_registry: Registry,
) -> None:
    """Introspection sees the original function."""

    @circuit("d", registry=isolated_registry)
    async def fetch(user_id: int, *, verbose: bool = False) -> str:
        """Fetch a user."""
        return "u"

    @circuit("s", registry=isolated_registry)
    def sync_fetch(user_id: int) -> str:
        return "u"

    assert inspect.iscoroutinefunction(fetch)
    assert not inspect.iscoroutinefunction(sync_fetch)
    assert inspect.signature(fetch) == inspect.signature(fetch.__wrapped__)
    assert list(inspect.signature(fetch).parameters) == ["user_id", "verbose"]
    assert fetch.__doc__ == "Fetch a user." and fetch.__name__ == "fetch"


async def test_two_functions_with_one_name_share_one_breaker(
    isolated_registry: Registry,
) -> None:
    """Across sync and async functions, one name is one breaker."""

    @circuit("users-db", registry=isolated_registry, failure_threshold=1)
    async def a() -> None:
        raise ConnectionError()

    @circuit("users-db", registry=isolated_registry, failure_threshold=1)
    def b() -> str:
        return "b"

    assert a.breaker is b.breaker  # type: ignore[attr-defined]
    with pytest.raises(ConnectionError):
        await a()
    with pytest.raises(CircuitOpenError):
        b()


def test_conflicting_settings_fail_at_decoration(isolated_registry: Registry) -> None:
    """A second decorator cannot silently change a shared breaker (purgatory's bug)."""

    @circuit("x", registry=isolated_registry, failure_threshold=2)
    def a() -> None: ...

    with pytest.raises(ValueError, match="failure_threshold"):

        @circuit("x", registry=isolated_registry, failure_threshold=3)
        def b() -> None: ...


def test_unknown_setting_fails_before_decoration() -> None:
    """@circuit(..., bogus=1) is a TypeError at once."""
    with pytest.raises(TypeError, match="bogus"):
        circuit("y", bogus=1)


def test_generators_are_rejected() -> None:
    """Guarding a generator would only guard its creation (pybreaker's bug)."""
    with pytest.raises(TypeError, match="generator"):

        @circuit("g", registry=Registry())
        async def agen():  # type: ignore[no-untyped-def]
            yield 1


async def test_methods_classmethods_and_staticmethods(isolated_registry: Registry) -> None:
    """Descriptors bind correctly, sync and async."""

    class Repo:
        factor = 10

        def __init__(self) -> None:
            self.base = 1

        @circuit("m", registry=isolated_registry)
        async def get(self, x: int) -> int:
            return self.base + x

        @circuit("cm", registry=isolated_registry)
        @classmethod
        async def scaled(cls, x: int) -> int:
            return cls.factor * x

        @circuit("sm", registry=isolated_registry)
        @staticmethod
        def pure(x: int) -> int:
            return -x

    repo = Repo()
    assert await repo.get(2) == 3
    assert await Repo.get(repo, 2) == 3
    assert await Repo.scaled(2) == 20 and await repo.scaled(3) == 30
    assert Repo.pure(4) == -4 and repo.pure(5) == -5
    assert inspect.iscoroutinefunction(Repo.scaled) and inspect.iscoroutinefunction(repo.get)
    assert repo.get.breaker.name == "m"  # type: ignore[attr-defined]
    assert isolated_registry.get("m").metrics()["successful_calls"] == 2  # type: ignore[union-attr]


async def test_method_failures_are_counted(isolated_registry: Registry) -> None:
    """The bound path records outcomes like the plain one."""

    class Repo:
        @circuit("mf", registry=isolated_registry, failure_threshold=2)
        async def get(self) -> None:
            raise ConnectionError()

    repo = Repo()
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await repo.get()
    assert Repo.get.breaker.state is CircuitState.OPEN  # type: ignore[attr-defined]


async def test_breaker_used_as_a_decorator(isolated_registry: Registry) -> None:
    """@breaker decorates with that breaker."""
    b = isolated_registry.get_or_create("direct")

    @b
    async def f() -> int:
        return 1

    assert await f() == 1 and f.breaker is b  # type: ignore[attr-defined]


async def test_async_callable_object_is_awaited_through_the_breaker(
    isolated_registry: Registry,
) -> None:
    """An object with an async __call__ is guarded as async."""

    class Client:
        async def __call__(self) -> str:
            raise ConnectionError()

    guarded = circuit("obj", registry=isolated_registry, failure_threshold=1)(Client())
    with pytest.raises(ConnectionError):
        await guarded()
    assert guarded.breaker.state is CircuitState.OPEN  # type: ignore[attr-defined]
