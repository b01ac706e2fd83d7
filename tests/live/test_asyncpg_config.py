"""ResilientPool construction, seed keywords, redaction (mostly no server needed)."""

from __future__ import annotations

import inspect
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

asyncpg = pytest.importorskip("asyncpg")

import resilience  # noqa: E402
from resilience import CircuitBreaker, CircuitOpenError, CircuitState, Registry  # noqa: E402
from resilience.integrations.asyncpg import (  # noqa: E402
    ResilientPool,
    WorkflowConnectionPool,
    redact_dsn,
)
from resilience.testing import FakeClock  # noqa: E402

SECRET = "s3cr3t-Pa55word"
# Nothing listens on port 1: connects are refused at once.
DEAD_DSN = f"postgresql://app:{SECRET}@127.0.0.1:1/app"


@pytest.fixture
def registry() -> Registry:
    return Registry(clock=FakeClock())


@pytest.fixture
async def pools() -> AsyncIterator[list[ResilientPool]]:
    made: list[ResilientPool] = []
    yield made
    for pool in made:
        await pool.close()


# -- redaction -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://app:secret@db:5432/x", "postgresql://app:***@db:5432/x"),
        ("postgres://app@db/x", "postgres://app@db/x"),
        (
            "postgresql://app:p%40ss@db/x?sslmode=require",
            "postgresql://app:***@db/x?sslmode=require",
        ),
        ("postgresql://app:a/b@c@db/x", "postgresql://app:***@db/x"),
        ("postgresql://db/x?user=app&password=secret", "postgresql://db/x?user=app&password=***"),
        ("postgresql://db/x?sslpassword=secret&a=1", "postgresql://db/x?sslpassword=***&a=1"),
        ("postgresql://app:secret@h1:5432,h2:5433/x", "postgresql://app:***@h1:5432,h2:5433/x"),
        ("host=db user=app password=secret dbname=x", "host=db user=app password=*** dbname=x"),
        ("host=db password='se cret' dbname=x", "host=db password=*** dbname=x"),
        ("", ""),
        (None, ""),
    ],
)
def test_redact_dsn(dsn: str | None, shown: str) -> None:
    """redact_dsn masks every password form and keeps the rest."""
    assert redact_dsn(dsn) == shown


# -- construction --------------------------------------------------------------


def test_workflow_connection_pool_is_an_alias() -> None:
    """WorkflowConnectionPool is ResilientPool (the seed's name)."""
    assert WorkflowConnectionPool is ResilientPool


def test_seed_keywords_set_the_breaker(registry: Registry) -> None:
    """The seed's circuit_breaker_* keywords become the breaker's settings."""
    pool = WorkflowConnectionPool(
        name="production_pool",
        database_type="postgresql",
        host="localhost",
        port=5432,
        database="myapp",
        circuit_breaker_enabled=True,
        circuit_breaker_failure_threshold=7,
        circuit_breaker_recovery_timeout=45,
        circuit_breaker_error_rate=0.25,
        circuit_breaker_success_threshold=2,
        registry=registry,
    )
    config = pool.circuit_breaker.config
    assert (config.failure_threshold, config.recovery_timeout) == (7, 45.0)
    assert (config.error_rate, config.success_threshold) == (0.25, 2)
    assert registry.get("production_pool") is pool.circuit_breaker


def test_left_out_seed_keywords_take_the_defaults(registry: Registry) -> None:
    """Without circuit_breaker_* keywords the breaker has CircuitConfig's defaults."""
    pool = ResilientPool(name="d", registry=registry)
    assert pool.circuit_breaker.config == resilience.CircuitConfig()


def test_error_rate_none_turns_the_rate_rule_off(registry: Registry) -> None:
    """circuit_breaker_error_rate=None disables the error-rate rule."""
    pool = ResilientPool(name="r", registry=registry, circuit_breaker_error_rate=None)
    assert pool.circuit_breaker.config.error_rate is None


def test_unknown_keyword_is_a_type_error() -> None:
    """An unknown keyword raises TypeError."""
    with pytest.raises(TypeError, match="circuit_breaker_timeout"):
        ResilientPool(name="x", circuit_breaker_timeout=3)  # type: ignore[call-arg]


@pytest.mark.parametrize("database_type", ["mysql", "sqlite", "mongodb"])
def test_other_database_types_are_rejected(database_type: str) -> None:
    """database_type other than postgresql is a ValueError that says why."""
    with pytest.raises(ValueError, match=r"PostgreSQL only.*" + database_type):
        ResilientPool(name="x", database_type=database_type)


def test_postgres_spellings_are_accepted(registry: Registry) -> None:
    """database_type accepts 'postgresql' and 'postgres' in any case."""
    ResilientPool(name="a", database_type="PostgreSQL", registry=registry)
    ResilientPool(name="b", database_type="postgres", registry=registry)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"min_size": -1}, "min_size"),
        ({"max_size": 0}, "max_size"),
        ({"min_size": 5, "max_size": 2}, "min_size"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"command_timeout": -1}, "command_timeout"),
        ({"acquire_timeout": 0}, "acquire_timeout"),
        ({"max_inactive_connection_lifetime": -1}, "max_inactive_connection_lifetime"),
        ({"circuit_breaker_failure_threshold": 0}, "failure_threshold"),
        ({"circuit_breaker_error_rate": 1.5}, "error_rate"),
    ],
)
def test_invalid_settings_are_value_errors(
    registry: Registry, options: dict[str, Any], field: str
) -> None:
    """A bad size, timeout or breaker setting raises ValueError naming it."""
    with pytest.raises(ValueError, match=field):
        ResilientPool(name="bad", registry=registry, **options)


def test_pool_kwargs_may_not_repeat_own_keywords(registry: Registry) -> None:
    """pool_kwargs that set what ResilientPool sets itself raise TypeError."""
    with pytest.raises(TypeError, match="max_size"):
        ResilientPool(name="x", registry=registry, pool_kwargs={"max_size": 3})


def test_same_name_shares_one_breaker(registry: Registry) -> None:
    """Two pools with one name share the registry's breaker."""
    a = ResilientPool(name="shared", registry=registry)
    b = ResilientPool(name="shared", registry=registry)
    assert a.circuit_breaker is b.circuit_breaker


def test_same_name_with_other_settings_is_a_value_error(registry: Registry) -> None:
    """A second pool with the same name but other breaker settings raises ValueError."""
    ResilientPool(name="shared", registry=registry, circuit_breaker_failure_threshold=3)
    with pytest.raises(ValueError, match="already exists"):
        ResilientPool(name="shared", registry=registry, circuit_breaker_failure_threshold=4)


def test_default_registry_is_used() -> None:
    """Without registry=, the breaker lives in resilience.registry (seen by status endpoints)."""
    name = f"default-{uuid.uuid4().hex[:8]}"
    try:
        pool = ResilientPool(name=name)
        assert resilience.registry.get(name) is pool.circuit_breaker
    finally:
        resilience.registry.unregister(name)


def test_a_given_breaker_is_used() -> None:
    """breaker= uses that breaker and its name."""
    breaker = CircuitBreaker("mine", clock=FakeClock())
    pool = ResilientPool(breaker=breaker)
    assert pool.circuit_breaker is breaker
    assert pool.name == "mine"


def test_a_given_breaker_excludes_seed_settings() -> None:
    """breaker= together with circuit_breaker_* settings is a TypeError."""
    breaker = CircuitBreaker("mine", clock=FakeClock())
    with pytest.raises(TypeError, match="circuit_breaker_failure_threshold"):
        ResilientPool(breaker=breaker, circuit_breaker_failure_threshold=3)


def test_default_name_is_the_server_and_database(registry: Registry) -> None:
    """Without name=, the breaker is named after the server and database, no credentials."""
    pool = ResilientPool(f"postgresql://app:{SECRET}@db.internal:5432/orders", registry=registry)
    assert pool.name == "postgresql://db.internal:5432/orders"


def test_keywords_override_the_dsn_in_the_display(registry: Registry) -> None:
    """host/port/database/user keywords override the DSN, as asyncpg does, in pool.dsn."""
    pool = ResilientPool(
        "postgresql://app@old:5432/a",
        host="new",
        port=6432,
        database="b",
        password=SECRET,
        registry=registry,
    )
    assert pool.dsn == "postgresql://app:***@new:6432/b"


def test_disabled_breaker_state(registry: Registry) -> None:
    """circuit_breaker_enabled=False gives the pool a DISABLED breaker of its own."""
    pool = ResilientPool(name="off", registry=registry, circuit_breaker_enabled=False)
    assert pool.circuit_breaker.state is CircuitState.DISABLED
    assert registry.get("off") is None  # not registered


def test_one_pool_disabling_its_breaker_leaves_the_shared_one_alone(registry: Registry) -> None:
    """A pool with circuit_breaker_enabled=False does not switch off its neighbours' breaker."""
    dsn = "postgresql://app@db.internal:5432/payments"
    shared = ResilientPool(dsn, registry=registry)
    ResilientPool(dsn, registry=registry, circuit_breaker_enabled=False)
    later = ResilientPool(dsn, registry=registry)
    assert shared.circuit_breaker.state is CircuitState.CLOSED
    assert later.circuit_breaker is shared.circuit_breaker
    assert later.circuit_breaker.state is CircuitState.CLOSED


def test_disabling_a_passed_breaker_is_a_conflict(registry: Registry) -> None:
    """breaker= with circuit_breaker_enabled=False is a TypeError (that breaker is shared)."""
    breaker = registry.get_or_create("given")
    with pytest.raises(TypeError, match="circuit_breaker_enabled"):
        ResilientPool(breaker=breaker, circuit_breaker_enabled=False)
    assert breaker.state is CircuitState.CLOSED


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"parameters": [1]}, "'query'"),
        ({"query": "SELECT 1", "fetch_mode": "many"}, "fetch_mode"),
        ({"query": "SELECT 1", "params": [1]}, "unknown key"),
        ({"query": "SELECT $1", "parameters": "1"}, "'parameters'"),
    ],
)
async def test_malformed_execute_query_is_a_value_error(
    registry: Registry, request_: dict[str, Any], message: str
) -> None:
    """execute_query rejects a request without query, or with an unknown key or mode."""
    pool = ResilientPool(name="q", registry=registry)
    with pytest.raises(ValueError, match=message):
        await pool.execute_query(request_)
    await pool.close()


# -- secrets -----------------------------------------------------------------------


async def test_password_never_shown(
    registry: Registry, pools: list[ResilientPool], caplog: pytest.LogCaptureFixture
) -> None:
    """The password appears in no repr, status, metric, error message or log line."""
    caplog.set_level(logging.DEBUG)
    pool = ResilientPool(DEAD_DSN, name="secret-test", registry=registry, connect_timeout=0.5)
    pools.append(pool)
    errors: list[BaseException] = []
    for _ in range(6):
        try:
            await pool.fetchval("SELECT 1")
        except (OSError, CircuitOpenError) as exc:
            errors.append(exc)
    assert isinstance(errors[-1], CircuitOpenError)
    shown = [
        repr(pool),
        pool.dsn,
        json.dumps(await pool.get_circuit_breaker_status()),
        json.dumps(pool.get_circuit_breaker_metrics()),
        *(str(e) for e in errors),
        *(repr(e) for e in errors),
        caplog.text,
    ]
    assert not [text for text in shown if SECRET in text]
    assert "app:***@127.0.0.1:1/app" in repr(pool)


async def test_password_keyword_never_shown(
    pg_dsn: str, registry: Registry, pools: list[ResilientPool]
) -> None:
    """A password passed as a keyword is used but shown only as ***."""
    pool = ResilientPool(pg_dsn, password=SECRET, name="pw", registry=registry)
    pools.append(pool)
    assert await pool.fetchval("SELECT 1") == 1
    status = json.dumps(await pool.get_circuit_breaker_status())
    assert SECRET not in status and SECRET not in repr(pool)
    assert ":***@" in pool.dsn


@pytest.mark.parametrize(
    "method", ["fetch", "fetchrow", "fetchval", "execute", "executemany", "execute_query"]
)
def test_query_methods_are_coroutine_functions(registry: Registry, method: str) -> None:
    """Query methods are async functions, so @chain and DI frameworks see them as async."""
    pool = ResilientPool(name="m", registry=registry)
    assert inspect.iscoroutinefunction(getattr(pool, method))
