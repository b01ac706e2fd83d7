"""Classification of asyncpg's real exception classes (no server needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

asyncpg = pytest.importorskip("asyncpg")

import asyncpg.exceptions as pgexc  # noqa: E402
from asyncpg.exceptions import _base as pgbase  # noqa: E402

from resilience import CircuitBreaker, ErrorCategory, Outcome, classify  # noqa: E402
from resilience._categories import outcome_of  # noqa: E402
from resilience.integrations.asyncpg import PoolExhaustedError  # noqa: E402
from resilience.testing import FakeClock  # noqa: E402

C = ErrorCategory


@pytest.mark.parametrize(
    ("exc", "category"),
    [
        (pgexc.ConnectionDoesNotExistError("closed mid-query"), C.CONNECTION_ERROR),
        (pgexc.ConnectionFailureError("connection failure"), C.CONNECTION_ERROR),
        (pgexc.ClientCannotConnectError("cannot connect"), C.CONNECTION_ERROR),
        (pgexc.PostgresConnectionError("connection error"), C.CONNECTION_ERROR),
        (pgexc.AdminShutdownError("terminating connection"), C.CONNECTION_ERROR),
        (pgexc.CrashShutdownError("crash"), C.CONNECTION_ERROR),
        (pgexc.CannotConnectNowError("starting up"), C.CONNECTION_ERROR),
        (pgexc.QueryCanceledError("statement timeout"), C.TIMEOUT_ERROR),
        (pgexc.LockNotAvailableError("lock timeout"), C.TIMEOUT_ERROR),
        (pgexc.TooManyConnectionsError("too many connections"), C.RESOURCE_ERROR),
        (pgexc.OutOfMemoryError("out of memory"), C.RESOURCE_ERROR),
        (pgexc.DiskFullError("disk full"), C.RESOURCE_ERROR),
        (pgexc.InvalidPasswordError("password authentication failed"), C.AUTHENTICATION_ERROR),
        (pgexc.InvalidAuthorizationSpecificationError("no role"), C.AUTHENTICATION_ERROR),
        (pgexc.InvalidCatalogNameError("database does not exist"), C.DATABASE_ERROR),
        (pgexc.SerializationError("could not serialize"), C.DATABASE_ERROR),
        (pgexc.DeadlockDetectedError("deadlock"), C.DATABASE_ERROR),
        (pgexc.InternalServerError("XX000"), C.DATABASE_ERROR),
        (pgexc.PostgresSyntaxError("syntax error"), C.QUERY_ERROR),
        (pgexc.UndefinedTableError("relation does not exist"), C.QUERY_ERROR),
        (pgexc.UniqueViolationError("duplicate key"), C.QUERY_ERROR),
        (pgexc.DataError("invalid input"), C.QUERY_ERROR),
        (pgexc.DivisionByZeroError("division by zero"), C.QUERY_ERROR),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_sqlstate_errors_follow_the_design_table(exc: Exception, category: ErrorCategory) -> None:
    """asyncpg errors with a SQLSTATE land in the category of the DESIGN table."""
    assert classify(exc) is category


@pytest.mark.parametrize(
    ("exc", "category"),
    [
        (pgexc.InterfaceError("another operation is in progress"), C.QUERY_ERROR),
        (pgexc.InterfaceError("connection is closed"), C.QUERY_ERROR),
        (pgbase.DataError("invalid input for query argument $1"), C.QUERY_ERROR),
        (pgexc.ClientConfigurationError("invalid DSN"), C.QUERY_ERROR),
        (pgexc.UnsupportedClientFeatureError("unsupported"), C.QUERY_ERROR),
        (pgexc.UnsupportedServerFeatureError("unsupported"), C.QUERY_ERROR),
        (pgexc.OutdatedSchemaCacheError("cached statement plan is invalid"), C.QUERY_ERROR),
        (pgexc.ProtocolError("unexpected message"), C.CONNECTION_ERROR),
        (pgexc.TargetServerAttributeNotMatched("not primary"), C.CONNECTION_ERROR),
        (pgexc.InternalClientError("internal"), C.UNKNOWN_ERROR),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_client_side_errors_are_classified_by_type(exc: Exception, category: ErrorCategory) -> None:
    """asyncpg errors without a SQLSTATE are classified by their type."""
    assert classify(exc) is category


def test_pool_exhaustion_is_a_resource_error() -> None:
    """PoolExhaustedError is RESOURCE_ERROR although it is a TimeoutError."""
    exc = PoolExhaustedError("db", 1.0, 10)
    assert isinstance(exc, TimeoutError)
    assert classify(exc) is C.RESOURCE_ERROR


def test_pool_exhaustion_message_names_the_pool_and_limits() -> None:
    """PoolExhaustedError says which pool, how long and how many connections."""
    assert str(PoolExhaustedError("orders", 2.5, 7)) == (
        "pool 'orders': no connection became free within 2.5s (all 7 in use)"
    )


def test_connect_timeout_is_a_timeout_error() -> None:
    """The builtin TimeoutError asyncpg raises on a connect timeout is TIMEOUT_ERROR."""
    assert classify(TimeoutError()) is C.TIMEOUT_ERROR


def test_refused_connection_is_a_connection_error() -> None:
    """ConnectionRefusedError (server down) is CONNECTION_ERROR."""
    assert classify(ConnectionRefusedError(111, "Connect call failed")) is C.CONNECTION_ERROR


def test_instance_sqlstate_wins_over_the_class() -> None:
    """An UnknownPostgresError is classified by the SQLSTATE the server sent."""
    exc = pgexc.UnknownPostgresError("odd")
    exc.sqlstate = "53300"
    assert classify(exc) is C.RESOURCE_ERROR


def test_message_text_is_never_read() -> None:
    """Two errors of one type with different messages get the same category."""
    a = pgexc.InterfaceError("connection is closed")
    b = pgexc.InterfaceError("cannot call Connection.fetch(): connection has been released")
    assert classify(a) is classify(b)


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (pgexc.PostgresSyntaxError("syntax error"), Outcome.IGNORED),
        (pgexc.UniqueViolationError("duplicate key"), Outcome.IGNORED),
        (pgexc.InvalidPasswordError("bad password"), Outcome.IGNORED),
        (pgexc.SerializationError("could not serialize"), Outcome.IGNORED),
        (pgexc.DeadlockDetectedError("deadlock"), Outcome.IGNORED),
        (pgexc.InterfaceError("misuse"), Outcome.IGNORED),
        (pgexc.ConnectionDoesNotExistError("gone"), Outcome.FAILURE),
        (pgexc.TooManyConnectionsError("too many"), Outcome.FAILURE),
        (pgexc.InvalidCatalogNameError("no such database"), Outcome.FAILURE),
        (pgexc.QueryCanceledError("timeout"), Outcome.FAILURE),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_default_outcomes(exc: Exception, outcome: Outcome) -> None:
    """Bad SQL, auth and per-transaction errors are ignored; outages are failures."""
    assert outcome_of(exc) is outcome


async def test_bad_sql_never_trips_a_breaker() -> None:
    """Twenty syntax errors in a row leave the breaker closed."""
    breaker = CircuitBreaker("db", clock=FakeClock(), failure_threshold=2)

    async def bad() -> None:
        raise pgexc.PostgresSyntaxError("syntax error at or near")

    for _ in range(20):
        with pytest.raises(pgexc.PostgresSyntaxError):
            await breaker.call(bad)
    assert breaker.state.value == "closed"
    assert breaker.metrics()["ignored_calls"] == 20


def test_classify_loads_the_integration_on_first_asyncpg_error() -> None:
    """In a fresh interpreter, classify knows asyncpg's client errors without an import."""
    code = (
        "import sys, asyncpg, resilience\n"
        "assert 'resilience.integrations.asyncpg' not in sys.modules\n"
        "print(resilience.classify(asyncpg.exceptions.ProtocolError('x')).value)\n"
        "print(resilience.classify(asyncpg.InterfaceError('x')).value)\n"
        "assert 'resilience.integrations.asyncpg' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["CONNECTION_ERROR", "QUERY_ERROR"]
