"""@fallback: stale-on-error caches, callables, defaults, keys, single flight."""

from __future__ import annotations

import asyncio
import contextvars
import enum
import inspect
import logging
import threading
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilience import (
    MISSING,
    BulkheadFullError,
    CallTimeoutError,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    Registry,
    circuit,
    degradation_scope,
    fallback,
    is_degraded,
)
from resilience.testing import FakeClock

from .conftest import CountingCache, Dependency, SqlError, SyncCache

# -- stale on error ----------------------------------------------------------


async def test_a_success_is_written_through(dep: Dependency, cache: CountingCache) -> None:
    """Every success is stored, as an envelope of value and stored-at time."""
    clock = FakeClock()

    @fallback(cache, clock=clock)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    value = await get(1)
    assert cache.data[get.cache_key(1)] == (value, clock.time())


async def test_a_failure_serves_the_last_good_value(dep: Dependency, cache: CountingCache) -> None:
    """Stale on error: the dependency is down, the cached value is served."""

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    good = await get(1)
    dep.down = True
    assert await get(1) == good


async def test_every_call_goes_to_the_dependency_by_default(
    dep: Dependency, cache: CountingCache
) -> None:
    """Without fresh_ttl, a cached value never stops a call."""

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    await get(1)
    await get(1)
    assert dep.calls == 2
    assert cache.gets == 0


async def test_a_cached_none_is_a_value(cache: CountingCache) -> None:
    """The envelope tells a stored None from a miss."""
    down = False

    @fallback(cache)
    async def get(x: int) -> None:
        if down:
            raise ConnectionError
        return None

    await get(1)
    down = True
    with degradation_scope():
        assert await get(1) is None
        assert is_degraded()


async def test_a_miss_reraises_the_original_error(dep: Dependency, cache: CountingCache) -> None:
    """Nothing to serve: the very same exception object propagates."""
    error = ConnectionError("down")
    dep.error = error

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    with pytest.raises(ConnectionError) as raised:
        await get(1)
    assert raised.value is error


async def test_a_miss_keeps_the_original_traceback(dep: Dependency, cache: CountingCache) -> None:
    """The re-raised error still points at where it was raised."""
    dep.down = True

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    with pytest.raises(ConnectionError) as raised:
        await get(1)
    assert raised.traceback[-1].name == "_answer"


async def test_values_are_per_arguments(dep: Dependency, cache: CountingCache) -> None:
    """A fallback for get(2) never serves get(1)'s value."""

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    await get(1)
    dep.down = True
    with pytest.raises(ConnectionError):
        await get(2)


async def test_the_newest_success_is_served(dep: Dependency, cache: CountingCache) -> None:
    """Write-through refreshes the stored value on every success."""

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    await get(1)
    second = await get(1)
    dep.down = True
    assert await get(1) == second


async def test_ttl_is_passed_to_the_cache(dep: Dependency, cache: CountingCache) -> None:
    """The cache is asked to keep a value ttl seconds (an int stays an int)."""

    @fallback(cache, ttl=300)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    await get(1)
    assert cache.ttls[get.cache_key(1)] == 300
    assert type(cache.ttls[get.cache_key(1)]) is int


async def test_a_value_older_than_ttl_is_not_served(dep: Dependency, cache: CountingCache) -> None:
    """ttl is the longest a stale value may be served, even if the cache kept it."""
    clock = FakeClock()

    @fallback(cache, ttl=60, clock=clock)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    await get(1)
    dep.down = True
    clock.advance(61)
    with pytest.raises(ConnectionError):
        await get(1)


async def test_a_value_within_ttl_is_served(dep: Dependency, cache: CountingCache) -> None:
    """Up to ttl seconds old, a value is still served."""
    clock = FakeClock()

    @fallback(cache, ttl=60, clock=clock)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    good = await get(1)
    dep.down = True
    clock.advance(60)
    assert await get(1) == good


async def test_ttl_none_serves_whatever_the_cache_kept(
    dep: Dependency, cache: CountingCache
) -> None:
    """ttl=None: no age limit, and the cache is asked for no expiry."""
    clock = FakeClock()

    @fallback(cache, ttl=None, clock=clock)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    good = await get(1)
    dep.down = True
    clock.advance(10**9)
    assert await get(1) == good
    assert cache.ttls[get.cache_key(1)] is None


async def test_foreign_data_under_the_key_is_a_miss(dep: Dependency, cache: CountingCache) -> None:
    """Something that is not an envelope is never served."""

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    cache.data[get.cache_key(1)] = "not an envelope"
    dep.down = True
    with pytest.raises(ConnectionError):
        await get(1)


async def test_a_json_style_envelope_is_accepted(dep: Dependency, cache: CountingCache) -> None:
    """A cache that turns tuples into lists (JSON) still serves."""
    clock = FakeClock()

    @fallback(cache, clock=clock)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    cache.data[get.cache_key(1)] = ["stored", clock.time()]
    dep.down = True
    assert await get(1) == "stored"


# -- fresh_ttl (read-through) ------------------------------------------------


async def test_fresh_ttl_serves_without_calling(dep: Dependency, cache: CountingCache) -> None:
    """An entry younger than fresh_ttl is served and the dependency is not called."""
    clock = FakeClock()

    @fallback(cache, fresh_ttl=10, clock=clock)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    first = await get(1)
    clock.advance(9)
    assert await get(1) == first
    assert dep.calls == 1


async def test_fresh_ttl_calls_once_the_entry_is_older(
    dep: Dependency, cache: CountingCache
) -> None:
    """Past fresh_ttl, the dependency is called and the new value stored."""
    clock = FakeClock()

    @fallback(cache, fresh_ttl=10, clock=clock)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    await get(1)
    clock.advance(11)
    second = await get(1)
    assert second["call"] == 2
    assert cache.data[get.cache_key(1)][0] == second


async def test_fresh_ttl_serves_the_stale_entry_on_failure_without_a_second_read(
    dep: Dependency, cache: CountingCache
) -> None:
    """The entry read for freshness is the one served on failure."""
    clock = FakeClock()

    @fallback(cache, fresh_ttl=10, clock=clock)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    good = await get(1)
    clock.advance(11)
    dep.down = True
    reads = cache.gets
    assert await get(1) == good
    assert cache.gets == reads + 1


async def test_a_fresh_hit_is_not_degraded(dep: Dependency, cache: CountingCache) -> None:
    """Serving a fresh entry is caching, not degradation."""
    clock = FakeClock()

    @fallback(cache, fresh_ttl=10, clock=clock)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    await get(1)
    with degradation_scope():
        await get(1)
        assert not is_degraded()


# -- what triggers -----------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError("refused"),
        TimeoutError(),
        CallTimeoutError("f", 1.0),
        BulkheadFullError("b", 1, 0),
        CircuitOpenError("c", CircuitState.OPEN, 5.0),
        SqlError("08006"),
        SqlError("53300"),
        SqlError("XX000"),
        RuntimeError("unknown"),
    ],
    ids=lambda e: type(e).__name__ + getattr(e, "sqlstate", ""),
)
async def test_triggers_on_outages(cache: CountingCache, error: Exception) -> None:
    """Rejections, timeouts and failure-outcome errors serve the fallback."""
    raise_it = False

    @fallback(cache)
    async def get(x: int) -> str:
        if raise_it:
            raise error
        return "good"

    await get(1)
    raise_it = True
    assert await get(1) == "good"


@pytest.mark.parametrize("sqlstate", ["42601", "42P01", "23505", "22P02", "28P01", "40001"])
async def test_never_triggers_on_ignored_categories(cache: CountingCache, sqlstate: str) -> None:
    """Bad SQL, bad data, bad credentials, a lost transaction: raised, never hidden."""
    raise_it = False

    @fallback(cache)
    async def get(x: int) -> str:
        if raise_it:
            raise SqlError(sqlstate)
        return "good"

    await get(1)
    raise_it = True
    reads = cache.gets
    with pytest.raises(SqlError):
        await get(1)
    assert cache.gets == reads


async def test_cancellation_is_never_a_trigger(cache: CountingCache) -> None:
    """A cancelled call stays cancelled."""
    cancel = False

    @fallback(cache)
    async def get(x: int) -> str:
        if cancel:
            raise asyncio.CancelledError
        return "good"

    await get(1)
    cancel = True
    with pytest.raises(asyncio.CancelledError):
        await get(1)


async def test_the_inner_breakers_verdict_is_honoured(cache: CountingCache) -> None:
    """An error the innermost breaker ignores does not trigger the fallback."""
    down = False

    @fallback(cache)
    @circuit("ignores-connection", registry=Registry(), ignore=(ConnectionError,))
    async def get(x: int) -> str:
        if down:
            raise ConnectionError
        return "good"

    await get(1)
    down = True
    with pytest.raises(ConnectionError):
        await get(1)


async def test_an_open_inner_circuit_serves_the_fallback(cache: CountingCache) -> None:
    """The DESIGN example: @fallback(cache) over @circuit."""
    reg = Registry(clock=FakeClock())

    @fallback(cache)
    @circuit("users-db", registry=reg)
    async def get(x: int) -> str:
        return "good"

    await get(1)
    get.breaker.force_open()  # type: ignore[attr-defined]
    assert await get(1) == "good"


async def test_on_types_replace_the_default(cache: CountingCache) -> None:
    """on=(ValueError,) triggers on ValueError and no longer on ConnectionError."""
    error: Exception | None = None

    @fallback(cache, on=(ValueError,))
    async def get(x: int) -> str:
        if error is not None:
            raise error
        return "good"

    await get(1)
    error = ValueError()
    assert await get(1) == "good"
    error = ConnectionError()
    with pytest.raises(ConnectionError):
        await get(1)


async def test_on_a_single_type(cache: CountingCache) -> None:
    """on= takes a bare exception type too."""
    fail = False

    @fallback(cache, on=KeyError)
    async def get(x: int) -> str:
        if fail:
            raise KeyError(x)
        return "good"

    await get(1)
    fail = True
    assert await get(1) == "good"


async def test_on_can_opt_in_to_an_ignored_category(cache: CountingCache) -> None:
    """on= naming a query error makes it a trigger: the user said so."""
    fail = False

    @fallback(cache, on=SqlError)
    async def get(x: int) -> str:
        if fail:
            raise SqlError("42P01")
        return "good"

    await get(1)
    fail = True
    assert await get(1) == "good"


async def test_on_a_predicate(cache: CountingCache) -> None:
    """on= takes a predicate fn(exc) -> bool."""
    fail = False

    @fallback(cache, on=lambda exc: "retryable" in str(exc))
    async def get(x: int) -> str:
        if fail:
            raise RuntimeError("retryable")
        return "good"

    await get(1)
    fail = True
    assert await get(1) == "good"


# -- callable sources and defaults -----------------------------------------------


async def test_a_sync_callable_gets_the_same_arguments(dep: Dependency) -> None:
    """@fallback(fn) calls fn(*args, **kwargs) and returns its answer."""
    dep.down = True
    seen: list[Any] = []

    def backup(x: int, *, flag: bool = False) -> str:
        seen.append((x, flag))
        return "backup"

    @fallback(backup)
    async def get(x: int, *, flag: bool = False) -> Any:
        return await dep.fetch(x)

    assert await get(1, flag=True) == "backup"
    assert seen == [(1, True)]


async def test_an_async_callable_is_awaited(dep: Dependency) -> None:
    """An async source is awaited."""
    dep.down = True

    async def backup(x: int) -> str:
        return f"backup {x}"

    @fallback(backup)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    assert await get(7) == "backup 7"


async def test_a_callable_source_errors_propagate(dep: Dependency) -> None:
    """The source's own error is raised (with the original as its context)."""
    dep.down = True

    def backup(x: int) -> str:
        raise LookupError("no backup either")

    @fallback(backup)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    with pytest.raises(LookupError) as raised:
        await get(1)
    assert isinstance(raised.value.__context__, ConnectionError)


async def test_a_method_source_receives_self() -> None:
    """For a method, the source gets self too: the same arguments."""

    class Repo:
        name = "repo"

        def cached(self, x: int) -> str:
            return f"{self.name} {x}"

        @fallback(cached)
        async def get(self, x: int) -> str:
            raise ConnectionError

    assert await Repo().get(3) == "repo 3"


async def test_default_is_served(dep: Dependency) -> None:
    """fallback(default=...) returns the default on failure."""
    dep.down = True

    @fallback(default=[])
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    with degradation_scope():
        assert await get(1) == []
        assert is_degraded()


async def test_default_none_is_a_default(dep: Dependency) -> None:
    """default=None is a value, unlike MISSING."""
    dep.down = True

    @fallback(default=None)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    assert await get(1) is None


async def test_a_cache_miss_serves_the_default(dep: Dependency, cache: CountingCache) -> None:
    """A cache and a default: the default covers a miss."""
    dep.down = True

    @fallback(cache, default="nothing cached")
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    assert await get(1) == "nothing cached"


async def test_no_source_uses_a_private_memory_cache(dep: Dependency) -> None:
    """@fallback() keeps last good values in process."""

    @fallback()
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    good = await get(1)
    dep.down = True
    assert await get(1) == good
    assert get.cache is not None  # type: ignore[attr-defined]
    assert get.cache_breaker is None  # type: ignore[attr-defined]


def test_missing_is_a_falsy_singleton() -> None:
    """MISSING is one object, falsy, and reads as MISSING."""
    assert repr(MISSING) == "MISSING"
    assert not MISSING
    assert type(MISSING)() is MISSING


# -- degradation flag -----------------------------------------------------------


async def test_a_success_is_not_degraded(dep: Dependency, cache: CountingCache) -> None:
    """Only a served fallback marks the context."""

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    with degradation_scope():
        await get(1)
        assert not is_degraded()


async def test_the_degradation_mark_is_per_task(dep: Dependency, cache: CountingCache) -> None:
    """A task served a fallback does not mark a sibling task's context."""

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    await get(1)

    async def degraded_call() -> bool:
        with degradation_scope():
            await get(1)
            return is_degraded()

    async def clean_call() -> bool:
        with degradation_scope():
            await asyncio.sleep(0)
            return is_degraded()

    dep.down = True
    results = await asyncio.gather(degraded_call(), clean_call())
    assert results == [True, False]


# -- cache failures never make things worse ---------------------------------------


async def test_a_cache_read_error_is_a_miss(dep: Dependency, cache: CountingCache) -> None:
    """The dependency's error is raised, not the cache's."""

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    await get(1)
    dep.down = True
    cache.get_error = OSError("cache down")
    with pytest.raises(ConnectionError, match="dependency down"):
        await get(1)


async def test_a_cache_write_error_never_fails_a_good_call(
    dep: Dependency, cache: CountingCache, caplog: pytest.LogCaptureFixture
) -> None:
    """The call returns its value; the failed write is logged."""
    cache.set_error = OSError("cache down")

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    assert (await get(1))["call"] == 1
    assert "cache write failed" in caplog.text


async def test_a_dead_cache_is_left_alone(dep: Dependency, cache: CountingCache) -> None:
    """After 3 cache errors in a row the cache breaker opens: no more cache calls."""
    cache.set_error = OSError("cache down")

    @fallback(cache, clock=FakeClock())
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    for _ in range(5):
        await get(1)
    assert cache.sets == 3
    assert get.cache_breaker.state is CircuitState.OPEN  # type: ignore[attr-defined]


async def test_the_cache_is_used_again_after_it_recovers(
    dep: Dependency, cache: CountingCache
) -> None:
    """The cache breaker probes after 10 s (on the decorator's clock)."""
    clock = FakeClock()
    cache.set_error = OSError("cache down")

    @fallback(cache, clock=clock)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    for _ in range(3):
        await get(1)
    cache.set_error = None
    clock.advance(10)
    good = await get(1)
    dep.down = True
    assert await get(1) == good


async def test_an_unserialisable_value_is_reported_clearly(
    dep: Dependency, caplog: pytest.LogCaptureFixture
) -> None:
    """The log names the function, the value's type and the key; the call returns."""
    from resilience.integrations.aiocache import memory_cache

    cache = memory_cache()

    @fallback(cache)
    async def get_lock(x: int) -> Any:
        return threading.Lock()

    lock = await get_lock(1)
    assert hasattr(lock, "acquire")
    record = next(r for r in caplog.records if r.levelno == logging.ERROR)
    message = record.getMessage()
    assert "get_lock" in message
    assert "lock" in message
    assert get_lock.cache_key(1) in message  # type: ignore[attr-defined]


async def test_an_unserialisable_value_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A function that always returns such a value does not flood the log."""
    from resilience.integrations.aiocache import memory_cache

    @fallback(memory_cache())
    async def get_lock(x: int) -> Any:
        return threading.Lock()

    for i in range(5):
        await get_lock(i)
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


async def test_unserialisable_values_do_not_open_the_cache_breaker() -> None:
    """A bad value says nothing about the cache's health."""
    from resilience.integrations.aiocache import memory_cache

    @fallback(memory_cache())
    async def get_lock(x: int) -> Any:
        return threading.Lock()

    for i in range(5):
        await get_lock(i)
    assert get_lock.cache_breaker.state is CircuitState.CLOSED  # type: ignore[attr-defined]


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


# -- single flight -------------------------------------------------------------------


async def test_concurrent_misses_share_one_cache_read(cache: CountingCache) -> None:
    """1,000 identical calls failing at once read the cache once."""
    dep = Dependency(suspend=True)

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    good = await get(1)
    dep.down = True
    cache.gets = 0
    results = await asyncio.gather(*(get(1) for _ in range(1000)))
    assert results == [good] * 1000
    assert cache.gets == 1


async def test_stampede_while_down_shares_one_read_and_one_attempt(
    cache: CountingCache,
) -> None:
    """The dependency known down: 1,000 identical calls, one attempt, one read."""
    dep = Dependency(suspend=True)

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    good = await get(1)
    dep.down = True
    await get(1)  # the failure that tells the decorator the dependency is down
    dep.calls = cache.gets = 0
    with degradation_scope():
        results = await asyncio.gather(*(get(1) for _ in range(1000)))
    assert results == [good] * 1000
    assert dep.calls == 1
    assert cache.gets == 1


async def test_stampede_behind_an_open_circuit_makes_no_attempt(cache: CountingCache) -> None:
    """With the breaker open, 1,000 calls: no dependency attempt, one cache read."""
    dep = Dependency(suspend=True)

    @fallback(cache)
    @circuit("stampede", registry=Registry(clock=FakeClock()))
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    good = await get(1)
    get.breaker.force_open()  # type: ignore[attr-defined]
    dep.calls = cache.gets = 0
    results = await asyncio.gather(*(get(1) for _ in range(1000)))
    assert results == [good] * 1000
    assert (dep.calls, cache.gets) == (0, 1)


async def test_every_coalesced_caller_is_marked_degraded(cache: CountingCache) -> None:
    """Followers of a shared fallback mark their own request."""
    dep = Dependency(suspend=True)

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    await get(1)
    dep.down = True
    await get(1)

    async def one() -> bool:
        with degradation_scope():
            await get(1)
            return is_degraded()

    assert await asyncio.gather(*(one() for _ in range(10))) == [True] * 10


async def test_coalesced_callers_share_a_miss_as_the_original_error(
    cache: CountingCache,
) -> None:
    """Nothing cached while down: every caller gets the ConnectionError."""
    dep = Dependency(suspend=True)
    dep.down = True

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    with pytest.raises(ConnectionError):
        await get(1)
    results = await asyncio.gather(*(get(1) for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert dep.calls == 2


async def test_coalesced_callers_get_distinct_exception_objects(cache: CountingCache) -> None:
    """5 coalesced callers with nothing to serve raise 5 distinct, equal errors."""
    dep = Dependency(suspend=True)
    dep.down = True

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    with pytest.raises(ConnectionError):
        await get(1)
    dep.calls = 0
    results = await asyncio.gather(*(get(1) for _ in range(5)), return_exceptions=True)
    assert dep.calls == 1
    assert len({id(r) for r in results}) == 5
    assert all(type(r) is ConnectionError and r.args == ("dependency down",) for r in results)


async def test_followers_are_served_stale_while_the_attempt_hangs(cache: CountingCache) -> None:
    """While down, a hanging in-flight attempt does not hold up identical callers."""
    dep = Dependency(suspend=True)
    hang = asyncio.Event()  # never set: a probe stuck in a connect timeout
    hanging = False

    @fallback(cache)
    async def get(x: int) -> Any:
        if hanging:
            await hang.wait()
        return await dep.fetch(x)

    good = await get(1)
    dep.down = True
    await get(1)  # the failure that tells the decorator the dependency is down
    hanging = True
    leader = asyncio.create_task(get(1))
    for _ in range(5):
        await asyncio.sleep(0)  # the leader is now hanging

    async def one() -> tuple[Any, bool]:
        with degradation_scope():
            return await get(1), is_degraded()

    followers = [asyncio.create_task(one()) for _ in range(5)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert all(task.done() for task in followers)
    assert [task.result() for task in followers] == [(good, True)] * 5
    assert not leader.done()
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader


async def test_a_cancelled_attempt_while_down_does_not_strand_the_others(
    cache: CountingCache,
) -> None:
    """While down, the first caller is cancelled mid-read: the others still get the value."""
    dep = Dependency(suspend=True)

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    good = await get(1)
    dep.down = True
    await get(1)  # the failure that tells the decorator the dependency is down
    cache.gate = asyncio.Event()
    cache.reading.clear()
    leader = asyncio.create_task(get(1))
    followers = [asyncio.create_task(get(1)) for _ in range(5)]
    await cache.reading.wait()
    leader.cancel()
    await asyncio.sleep(0)
    cache.gate.set()
    assert await asyncio.gather(*followers) == [good] * 5
    assert leader.cancelled()


async def test_different_keys_do_not_share(cache: CountingCache) -> None:
    """Single flight is per key."""
    dep = Dependency(suspend=True)

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    for x in range(3):
        await get(x)
    dep.down = True
    cache.gets = 0
    await asyncio.gather(*(get(x) for x in range(3) for _ in range(10)))
    assert cache.gets == 3


async def test_a_cancelled_reader_does_not_strand_the_others(cache: CountingCache) -> None:
    """The first reader is cancelled mid-read: the others still get the value."""
    dep = Dependency(suspend=True)

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    good = await get(1)
    dep.down = True
    cache.gate = asyncio.Event()
    leader = asyncio.create_task(get(1))
    followers = [asyncio.create_task(get(1)) for _ in range(5)]
    await cache.reading.wait()
    leader.cancel()
    await asyncio.sleep(0)
    cache.gate.set()
    assert await asyncio.gather(*followers) == [good] * 5
    assert leader.cancelled()


async def test_a_cancelled_follower_does_not_cancel_the_read(cache: CountingCache) -> None:
    """Cancelling one waiter leaves the shared read running for the rest."""
    dep = Dependency(suspend=True)

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    good = await get(1)
    dep.down = True
    cache.gate = asyncio.Event()
    tasks = [asyncio.create_task(get(1)) for _ in range(3)]
    await cache.reading.wait()
    await asyncio.sleep(0)
    tasks[1].cancel()
    cache.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] == good
    assert isinstance(results[1], asyncio.CancelledError)
    assert results[2] == good
    assert cache.gets == 1


async def test_a_success_ends_the_coalescing(cache: CountingCache) -> None:
    """Once the dependency answers again, every call goes to it."""
    dep = Dependency(suspend=True)

    @fallback(cache)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    await get(1)
    dep.down = True
    await get(1)
    dep.down = False
    await get(1)  # the success that clears the flag
    dep.calls = 0
    await asyncio.gather(*(get(1) for _ in range(5)))
    assert dep.calls == 5


# -- sync functions ------------------------------------------------------------------


def test_a_sync_function_with_a_sync_cache(dep: Dependency) -> None:
    """Sync functions work with a sync cache."""
    cache = SyncCache()

    @fallback(cache)
    def get(x: int) -> Any:
        return dep.fetch_sync(x)

    good = get(1)
    dep.down = True
    with degradation_scope():
        assert get(1) == good
        assert is_degraded()


def test_a_sync_function_reraises_on_a_miss(dep: Dependency) -> None:
    """Nothing cached: the original error."""
    dep.down = True

    @fallback(SyncCache())
    def get(x: int) -> Any:
        return dep.fetch_sync(x)

    with pytest.raises(ConnectionError):
        get(1)


def test_a_sync_cache_read_error_is_a_miss(dep: Dependency) -> None:
    """Sync cache errors are misses too."""
    cache = SyncCache()

    @fallback(cache)
    def get(x: int) -> Any:
        return dep.fetch_sync(x)

    get(1)
    dep.down = True
    cache.get_error = OSError("cache down")
    with pytest.raises(ConnectionError):
        get(1)


def test_a_sync_cache_write_error_never_fails_a_good_call(
    dep: Dependency, caplog: pytest.LogCaptureFixture
) -> None:
    """Sync functions: the value is returned, the failed write logged."""

    class BrokenCache(SyncCache):
        def set(self, key: str, value: Any, ttl: Any = None) -> bool:
            raise OSError("cache down")

    @fallback(BrokenCache())
    def get(x: int) -> Any:
        return dep.fetch_sync(x)

    assert get(1)["call"] == 1
    assert "cache write failed" in caplog.text


def test_a_sync_function_with_the_private_cache(dep: Dependency) -> None:
    """@fallback() works for sync functions."""

    @fallback()
    def get(x: int) -> Any:
        return dep.fetch_sync(x)

    good = get(1)
    dep.down = True
    assert get(1) == good


def test_a_sync_function_with_a_default(dep: Dependency) -> None:
    """Defaults and sync callables work for sync functions."""
    dep.down = True

    @fallback(lambda x: -x)
    def get(x: int) -> Any:
        return dep.fetch_sync(x)

    assert get(3) == -3


def test_a_sync_fresh_ttl(dep: Dependency) -> None:
    """Read-through works for sync functions."""
    clock = FakeClock()

    @fallback(SyncCache(), fresh_ttl=5, clock=clock)
    def get(x: int) -> Any:
        return dep.fetch_sync(x)

    get(1)
    get(1)
    assert dep.calls == 1


def test_a_sync_function_with_an_async_cache_is_a_type_error(cache: CountingCache) -> None:
    """An async cache cannot serve a sync function: said at decoration."""
    with pytest.raises(TypeError, match="sync get/set"):

        @fallback(cache)
        def get(x: int) -> None: ...


def test_a_sync_function_with_an_async_source_is_a_type_error() -> None:
    """An async callable cannot serve a sync function."""

    async def backup(x: int) -> None: ...

    with pytest.raises(TypeError, match="async callable"):

        @fallback(backup)
        def get(x: int) -> None: ...


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


# -- expiry is checked when a value is served ---------------------------------------


async def test_a_follower_waits_rather_than_serve_an_entry_that_expired_meanwhile() -> None:
    """While down, an entry that passed ttl during a hung attempt is not served to followers."""
    clock = FakeClock()
    gate = asyncio.Event()
    gate.set()
    down = False

    @fallback(ttl=60, clock=clock)
    async def get(x: int) -> str:
        await gate.wait()
        if down:
            raise ConnectionError("down")
        return "good"

    await get(1)
    clock.advance(50)
    down = True
    assert await get(1) == "good"  # served (50 s old); the dependency is now known down
    gate.clear()
    leader = asyncio.create_task(get(1))  # reads the entry, then hangs
    for _ in range(3):
        await asyncio.sleep(0)
    clock.advance(3600)
    follower = asyncio.create_task(get(1))
    for _ in range(3):
        await asyncio.sleep(0)
    assert not follower.done()
    gate.set()
    with pytest.raises(ConnectionError):
        await leader
    with pytest.raises(ConnectionError):
        await follower


async def test_an_attempt_does_not_serve_an_entry_that_expired_during_its_call() -> None:
    """The entry read before a slow call is checked against ttl again when the call fails."""
    clock = FakeClock()
    slow = False

    @fallback(ttl=60, clock=clock)
    async def get(x: int) -> str:
        if slow:
            if x == 1:
                clock.advance(3600)
            raise ConnectionError("down")
        return "good"

    await get(1)
    slow = True
    with pytest.raises(ConnectionError):
        await get(2)  # nothing cached: raised, and the dependency is known down
    with pytest.raises(ConnectionError):
        await get(1)  # read while 0 s old, 3600 s old once the call failed


def test_a_sync_call_does_not_serve_an_entry_that_expired_during_the_call() -> None:
    """Sync read-through: the entry read before the call is not served once past ttl."""
    clock = FakeClock()
    slow = False

    @fallback(SyncCache(), ttl=60, fresh_ttl=10, clock=clock)
    def get(x: int) -> str:
        if slow:
            clock.advance(3600)
            raise ConnectionError("down")
        return "good"

    get(1)
    clock.advance(11)
    slow = True
    with pytest.raises(ConnectionError):
        get(1)


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


# -- a slow cache ------------------------------------------------------------------------


async def test_a_slow_cache_is_switched_off(dep: Dependency) -> None:
    """A cache whose operations take >= 0.5 s is left alone after a few calls."""
    clock = FakeClock()

    class SlowCache(CountingCache):
        async def set(self, key: str, value: Any, ttl: Any = None) -> bool:
            clock.advance(1.0)
            return await super().set(key, value, ttl)

    cache = SlowCache()

    @fallback(cache, clock=clock)
    async def get(x: int) -> Any:
        return await dep.fetch(x)

    for x in range(10):
        await get(x)
    assert get.cache_breaker.state is CircuitState.OPEN  # type: ignore[attr-defined]
    assert cache.sets <= 5
    assert dep.calls == 10
