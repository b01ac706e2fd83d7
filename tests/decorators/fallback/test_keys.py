"""Cache keys: stable across processes, collision-free, methods and instances."""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilience import (
    fallback,
    flush_fallbacks,
)

from ..conftest import CountingCache, Dependency

# -- keys -------------------------------------------------------------------------


def test_keys_name_the_function() -> None:
    """The default key is resilience:fallback:{module.qualname}:{digest}."""

    @fallback(CountingCache())
    async def get_user(user_id: int) -> None: ...

    key = get_user.cache_key(1)  # type: ignore[attr-defined]
    prefix = f"resilience:fallback:{__name__}.test_keys_name_the_function.<locals>.get_user:"
    assert key.startswith(prefix)
    assert len(key) == len(prefix) + 32


def test_positional_and_keyword_calls_share_a_key() -> None:
    """f(1), f(x=1) and f(1, limit=10) (the default) are one call."""

    @fallback(CountingCache())
    async def get(x: int, limit: int = 10) -> None: ...

    keys = {
        get.cache_key(1),  # type: ignore[attr-defined]
        get.cache_key(x=1),  # type: ignore[attr-defined]
        get.cache_key(1, limit=10),  # type: ignore[attr-defined]
        get.cache_key(limit=10, x=1),  # type: ignore[attr-defined]
    }
    assert len(keys) == 1


_STABLE_ARG = {"b": {"x", "y"}, "a": ("x", 1.5, None, b"z", frozenset({"p", "q"}))}
_DIGEST_SCRIPT = """
from resilience import fallback
class C:
    async def get(self, key, value, ttl=None): ...
    async def set(self, key, value, ttl=None): ...
@fallback(C())
async def get(x): ...
print(get.cache_key({"a": ("x", 1.5, None, b"z", frozenset({"q", "p"})), "b": {"y", "x"}}))
"""


@pytest.mark.parametrize("seed", ["1", "2"])
def test_keys_are_stable_across_processes(seed: str) -> None:
    """Another process (another str hash seed) computes the same digest."""
    import os
    import subprocess
    import sys

    @fallback(CountingCache())
    async def get(x: Any) -> None: ...

    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-c", _DIGEST_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    theirs = done.stdout.strip().rsplit(":", 1)[1]
    ours = get.cache_key(_STABLE_ARG).rsplit(":", 1)[1]  # type: ignore[attr-defined]
    assert theirs == ours


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ((1,), ("1",)),
        (((1,),), ([1],)),
        (("a,b",), ("a", "b")),
        ((1,), (1.0,)),
        ((1,), (True,)),
        ((None,), ("None",)),
        ((b"x",), ("x",)),
        (({1},), (frozenset({1}),)),
        (({"a": 1},), ([("a", 1)],)),
    ],
)
def test_different_arguments_never_share_a_key(first: tuple[Any, ...], second: Any) -> None:
    """Look-alike arguments of other types are other keys."""

    @fallback(CountingCache())
    async def get(*args: Any) -> None: ...

    assert get.cache_key(*first) != get.cache_key(*second)  # type: ignore[attr-defined]


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=4), inner, max_size=4),
    ),
    max_leaves=12,
)


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return repr(a) == repr(b)
    return bool(a == b)


_property_cache = CountingCache()


@fallback(_property_cache)
async def _keyed(*args: Any) -> None: ...


@given(values, values)
def test_keys_are_collision_free(a: Any, b: Any) -> None:
    """Equal keys mean identical arguments (type for type), for any nesting."""
    if _keyed.cache_key(a) == _keyed.cache_key(b):  # type: ignore[attr-defined]
        assert _same(a, b)


@given(st.dictionaries(st.text(max_size=4), st.integers(), max_size=6))
def test_dict_order_does_not_change_the_key(d: dict[str, int]) -> None:
    """A dict's key does not depend on insertion order."""
    reordered = dict(reversed(list(d.items())))
    assert _keyed.cache_key(d) == _keyed.cache_key(reordered)  # type: ignore[attr-defined]


class Colour(enum.Enum):
    RED = 1


@dataclass(frozen=True)
class Point:
    x: int
    y: int


def test_enums_and_dataclasses_make_keys() -> None:
    """Values with a stable repr are keyable."""

    @fallback(CountingCache())
    async def get(a: Any, b: Any) -> None: ...

    assert get.cache_key(Colour.RED, Point(1, 2)) == get.cache_key(Colour.RED, Point(1, 2))  # type: ignore[attr-defined]
    assert get.cache_key(Colour.RED, Point(1, 2)) != get.cache_key(Colour.RED, Point(2, 1))  # type: ignore[attr-defined]


async def test_an_unkeyable_argument_runs_without_the_cache(
    dep: Dependency, cache: CountingCache, caplog: pytest.LogCaptureFixture
) -> None:
    """An object whose repr is its address: the call runs uncached, logged once."""

    @fallback(cache)
    async def get(conn: object) -> Any:
        return await dep.fetch()

    await get(object())
    await get(object())
    assert cache.sets == 0
    assert dep.calls == 2
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    assert "key=" in caplog.text


async def test_arguments_that_do_not_fit_raise_the_functions_error(
    cache: CountingCache, caplog: pytest.LogCaptureFixture
) -> None:
    """A call with bad arguments fails as it would undecorated, and logs nothing."""

    @fallback(cache)
    async def get(x: int) -> int:
        return x

    caplog.clear()  # decoration may warn (a function defined in a function)
    with pytest.raises(TypeError):
        await get(1, 2)  # type: ignore[call-arg]
    assert not caplog.records


async def test_a_key_callable_wins(dep: Dependency, cache: CountingCache) -> None:
    """key= gets the call's arguments and its result is the key, verbatim."""

    @fallback(cache, key=lambda user_id: f"user:{user_id}")
    async def get(user_id: int) -> Any:
        return await dep.fetch(user_id)

    value = await get(5)
    await flush_fallbacks(cache)
    assert cache.data["user:5"][0] == value
    assert get.cache_key(5) == "user:5"  # type: ignore[attr-defined]


async def test_a_key_callable_must_return_a_str(
    dep: Dependency, cache: CountingCache, caplog: pytest.LogCaptureFixture
) -> None:
    """A non-str key: the call runs without the cache, and the log says why."""

    @fallback(cache, key=lambda user_id: user_id)
    async def get(user_id: int) -> Any:
        return await dep.fetch(user_id)

    await get(5)
    assert cache.sets == 0
    assert "not a str" in caplog.text


async def test_methods_leave_self_out_of_the_key(dep: Dependency, cache: CountingCache) -> None:
    """Two instances share the cached value of the same arguments."""

    class Repo:
        @fallback(cache)
        async def get(self, x: int) -> Any:
            return await dep.fetch(x)

    good = await Repo().get(1)
    dep.down = True
    assert await Repo().get(1) == good
    await flush_fallbacks(cache)
    assert cache.data.keys() == {Repo.get.cache_key(1)}  # type: ignore[attr-defined]


async def test_classmethods_leave_cls_out_of_the_key(dep: Dependency, cache: CountingCache) -> None:
    """A classmethod's key is its arguments alone."""

    class Repo:
        @fallback(cache)
        @classmethod
        async def get(cls, x: int) -> Any:
            return await dep.fetch(x)

    good = await Repo.get(1)
    dep.down = True
    assert await Repo().get(1) == good


async def test_a_method_called_through_the_class_shares_the_key(
    dep: Dependency, cache: CountingCache
) -> None:
    """Repo.get(repo, 1) and repo.get(1) are one call."""

    class Repo:
        @fallback(cache)
        async def get(self, x: int) -> Any:
            return await dep.fetch(x)

    repo = Repo()
    good = await Repo.get(repo, 1)
    dep.down = True
    assert await repo.get(1) == good


async def test_a_resilience_key_attribute_separates_instances(
    dep: Dependency, cache: CountingCache
) -> None:
    """Instances with different __resilience_key__ attributes never share a value."""

    class Repo:
        def __init__(self, tenant: str) -> None:
            self.__resilience_key__ = tenant

        @fallback(cache)
        async def get(self, x: int) -> Any:
            return await dep.fetch(self.__resilience_key__, x)

    tenant_a, tenant_b = Repo("a"), Repo("b")
    good = await tenant_a.get(1)
    dep.down = True
    assert await tenant_a.get(1) == good
    with pytest.raises(ConnectionError):
        await tenant_b.get(1)


async def test_a_resilience_key_method_separates_instances(
    dep: Dependency, cache: CountingCache
) -> None:
    """A __resilience_key__() method is called and its answer keys the instance."""

    class Repo:
        def __init__(self, tenant: str) -> None:
            self.tenant = tenant

        def __resilience_key__(self) -> str:
            return self.tenant

        @fallback(cache)
        async def get(self, x: int) -> Any:
            return await dep.fetch(self.tenant, x)

    await Repo("a").get(1)
    await Repo("b").get(1)
    await Repo("a").get(1)
    await flush_fallbacks(cache)
    assert len(cache.data) == 2


async def test_a_class_defined_repr_keys_the_instance(
    dep: Dependency, cache: CountingCache
) -> None:
    """Instances whose own repr differs keep separate values; equal reprs share them."""

    class Repo:
        def __init__(self, dsn: str) -> None:
            self.dsn = dsn

        def __repr__(self) -> str:
            return f"Repo({self.dsn!r})"

        @fallback(cache)
        async def get(self, x: int) -> Any:
            return await dep.fetch(self.dsn, x)

    good = await Repo("postgres://a").get(1)
    dep.down = True
    assert await Repo("postgres://a").get(1) == good
    with pytest.raises(ConnectionError):
        await Repo("postgres://b").get(1)


def test_a_bound_cache_key_includes_the_instance() -> None:
    """repo.get.cache_key(1) is the key repo.get(1) uses, instance included."""
    cache = CountingCache()

    class Repo:
        def __init__(self, tenant: str) -> None:
            self.__resilience_key__ = tenant

        @fallback(cache)
        async def get(self, x: int) -> Any:
            return x

    asyncio.run(Repo("a").get(1))
    assert cache.data.keys() == {Repo("a").get.cache_key(1)}  # type: ignore[attr-defined]
    assert Repo("a").get.cache_key(1) != Repo("b").get.cache_key(1)  # type: ignore[attr-defined]


def test_a_repr_showing_an_address_leaves_self_out() -> None:
    """A repr with a memory address in it is not stable: self is left out."""

    class Repo:
        def __repr__(self) -> str:
            return f"<Repo pool=<Pool at {id(self):#x}>>"

        @fallback(CountingCache())
        async def get(self, x: int) -> Any:
            return x

    first, second = Repo(), Repo()
    assert first.get.cache_key(1) == second.get.cache_key(1)  # type: ignore[attr-defined]
    assert first.get.cache_key(1) == Repo.get.cache_key(1)  # type: ignore[attr-defined]


_INSTANCE_DIGEST_SCRIPT = """
from resilience import fallback
class C:
    async def get(self, key, ttl=None): ...
    async def set(self, key, value, ttl=None): ...
class Repo:
    def __init__(self, tenant):
        self.__resilience_key__ = tenant
    @fallback(C())
    async def get(self, x): ...
print(Repo("acme").get.cache_key(1))
"""


def test_instance_keys_are_stable_across_processes() -> None:
    """A key that includes the instance is the same in another process."""
    import subprocess
    import sys

    class Repo:
        def __init__(self, tenant: str) -> None:
            self.__resilience_key__ = tenant

        @fallback(CountingCache())
        async def get(self, x: int) -> None: ...

    done = subprocess.run(
        [sys.executable, "-c", _INSTANCE_DIGEST_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    theirs = done.stdout.strip().rsplit(":", 1)[1]
    ours = Repo("acme").get.cache_key(1).rsplit(":", 1)[1]  # type: ignore[attr-defined]
    assert theirs == ours


async def test_instances_left_out_of_the_key_do_not_share_a_call(cache: CountingCache) -> None:
    """While down, identical calls on two instances make two attempts, not one."""
    dep = Dependency(suspend=True)
    dep.down = True

    class Repo:
        @fallback(cache)
        async def get(self, x: int) -> Any:
            return await dep.fetch(x)

    first, second = Repo(), Repo()
    with pytest.raises(ConnectionError):
        await first.get(1)
    dep.calls = 0
    await asyncio.gather(
        first.get(1), second.get(1), first.get(1), second.get(1), return_exceptions=True
    )
    assert dep.calls == 2


# -- keys: factories, sentinels, addresses ---------------------------------------------


def test_a_factory_made_function_with_a_shared_cache_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Functions made by one factory share keys: one WARNING names them and recommends key=."""

    def make(table: str) -> Any:
        @fallback(CountingCache())
        async def fetch(row_id: int) -> str:
            return f"{table}:{row_id}"

        return fetch

    with caplog.at_level(logging.WARNING, logger="resilience"):
        make("users")
        make("orders")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "make.<locals>.fetch" in warnings[0]
    assert "key=" in warnings[0]


def test_a_local_function_with_key_or_the_builtin_cache_does_not_warn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A key= callable, or the per-function LRU, cannot mix factories' values: no warning."""
    with caplog.at_level(logging.WARNING, logger="resilience"):

        @fallback(CountingCache(), key=lambda row_id: f"users:{row_id}")
        async def fetch(row_id: int) -> int:
            return row_id

        @fallback()
        async def fetch_local(row_id: int) -> int:
            return row_id

    assert not caplog.records


_UNSET: Any = object()


async def test_a_sentinel_default_does_not_switch_the_cache_off(
    dep: Dependency, cache: CountingCache
) -> None:
    """A call leaving out a parameter whose default is a sentinel object is still cached."""

    @fallback(cache)
    async def search(q: str, limit: Any = _UNSET) -> Any:
        return await dep.fetch(q)

    good = await search("a")
    dep.down = True
    assert await search("a") == good


def test_passing_the_sentinel_default_is_the_same_call() -> None:
    """f(x) and f(x, limit=<the sentinel>) share a key; another object is unkeyable."""

    @fallback(CountingCache())
    async def search(q: str, limit: Any = _UNSET) -> None: ...

    assert search.cache_key("a") == search.cache_key("a", limit=_UNSET)  # type: ignore[attr-defined]
    assert search.cache_key("a") == search.cache_key("a", _UNSET)  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        search.cache_key("a", object())  # type: ignore[attr-defined]


async def test_an_argument_whose_repr_shows_an_address_runs_without_the_cache(
    cache: CountingCache, caplog: pytest.LogCaptureFixture
) -> None:
    """A repr with a memory address names one object: no key, no junk entries, one log line."""

    class Conn:
        def __repr__(self) -> str:
            return f"<Conn at {id(self):#x}>"

    @fallback(cache)
    async def by_conn(conn: Conn, q: str) -> str:
        return q

    caplog.clear()
    for _ in range(3):
        assert await by_conn(Conn(), "x") == "x"
    assert cache.sets == 0
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


def test_the_key_maker_keeps_no_class_alive_forever() -> None:
    """Classes seen as self are remembered in a bounded table: a discarded one is collected."""
    import gc
    import weakref

    @fallback(CountingCache())
    async def get(self: Any, x: int) -> None: ...

    first = type("First", (), {"get": get})
    first().get.cache_key(1)
    ref = weakref.ref(first)
    del first
    for i in range(300):
        type(f"C{i}", (), {"get": get})().get.cache_key(1)
    gc.collect()
    assert ref() is None
