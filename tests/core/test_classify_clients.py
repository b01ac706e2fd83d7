"""classify() on the real exception classes of SQLAlchemy, psycopg, redis-py,
httpx and aiohttp, built by hand (no server needed; tests/live has the real ones)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from resilience import ErrorCategory, classify

C = ErrorCategory


def test_classify_imports_no_client_library() -> None:
    """Classifying every family's names imports none of them."""
    script = textwrap.dedent(
        """
        import sys
        from resilience import classify
        cls = type("ResponseError", (Exception,), {"__module__": "redis.exceptions"})
        assert classify(cls()).value == "QUERY_ERROR"
        cls = type("HTTPStatusError", (Exception,), {"__module__": "httpx"})
        assert classify(cls()).value == "UNKNOWN_ERROR"  # no response to read
        loaded = [m for m in ("sqlalchemy", "psycopg", "redis", "httpx", "aiohttp")
                  if m in sys.modules]
        assert not loaded, loaded
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


class TestSQLAlchemy:
    sa_exc = pytest.importorskip("sqlalchemy.exc")

    def _dbapi(self, cls: type, orig: BaseException) -> BaseException:
        return cls.instance("SELECT 1", None, orig, Exception)  # type: ignore[no-any-return]

    def test_programming_error_takes_the_sqlstate_of_orig(self) -> None:
        """SQLAlchemy's ProgrammingError over a 42601 driver error is a query error."""
        orig = Exception("syntax")
        orig.sqlstate = "42601"  # type: ignore[attr-defined]
        exc = self._dbapi(self.sa_exc.ProgrammingError, orig)
        assert isinstance(exc, self.sa_exc.ProgrammingError)
        assert classify(exc) is C.QUERY_ERROR

    def test_operational_error_without_sqlstate_is_a_connection_error(self) -> None:
        """A driver error with no SQLSTATE under OperationalError: connection."""
        exc = self._dbapi(self.sa_exc.OperationalError, Exception("refused"))
        assert classify(exc) is C.CONNECTION_ERROR

    def test_operational_error_with_sqlstate_uses_it(self) -> None:
        """57014 under OperationalError is a timeout, not a connection error."""
        orig = Exception("canceled")
        orig.sqlstate = "57014"  # type: ignore[attr-defined]
        assert classify(self._dbapi(self.sa_exc.OperationalError, orig)) is C.TIMEOUT_ERROR

    def test_pool_timeout_is_a_resource_error(self) -> None:
        """``QueuePool limit ... timed out`` is exhaustion."""
        assert classify(self.sa_exc.TimeoutError("pool")) is C.RESOURCE_ERROR

    def test_disconnection_error_is_a_connection_error(self) -> None:
        """A pool's disconnect detection."""
        assert classify(self.sa_exc.DisconnectionError("gone")) is C.CONNECTION_ERROR

    @pytest.mark.parametrize(
        "name", ["NoResultFound", "MultipleResultsFound", "ArgumentError", "CompileError"]
    )
    def test_program_mistakes_are_query_errors(self, name: str) -> None:
        """Errors raised before any database is asked never trip."""
        assert classify(getattr(self.sa_exc, name)("x")) is C.QUERY_ERROR

    def test_interface_error_with_an_unknown_orig_is_unknown(self) -> None:
        """SQLAlchemy's InterfaceError says nothing of its own."""
        exc = self._dbapi(self.sa_exc.InterfaceError, Exception("?"))
        assert classify(exc) is C.UNKNOWN_ERROR

    def test_integrity_error_without_sqlstate_is_a_query_error(self) -> None:
        """The PEP 249 fallback: IntegrityError is the caller's data."""
        exc = self._dbapi(self.sa_exc.IntegrityError, Exception("dup"))
        assert classify(exc) is C.QUERY_ERROR


class TestPsycopg:
    psycopg = pytest.importorskip("psycopg")

    def test_operational_error_without_sqlstate_is_a_connection_error(self) -> None:
        """psycopg raises a refused connection as a bare OperationalError."""
        assert classify(self.psycopg.OperationalError("refused")) is C.CONNECTION_ERROR

    @pytest.mark.parametrize(
        ("name", "category"),
        [
            ("SyntaxError", C.QUERY_ERROR),
            ("DivisionByZero", C.QUERY_ERROR),
            ("UniqueViolation", C.QUERY_ERROR),
            ("QueryCanceled", C.TIMEOUT_ERROR),
            ("AdminShutdown", C.CONNECTION_ERROR),
            ("TooManyConnections", C.RESOURCE_ERROR),
            ("InvalidPassword", C.AUTHENTICATION_ERROR),
            ("SerializationFailure", C.DATABASE_ERROR),
            ("ConnectionTimeout", C.TIMEOUT_ERROR),
        ],
    )
    def test_errors_classify_by_sqlstate(self, name: str, category: ErrorCategory) -> None:
        """psycopg.errors classes carry their SQLSTATE."""
        assert classify(getattr(self.psycopg.errors, name)("x")) is category

    def test_interface_error_is_a_query_error(self) -> None:
        """Misuse of psycopg's API is the program's mistake."""
        assert classify(self.psycopg.InterfaceError("closed cursor")) is C.QUERY_ERROR


class TestRedis:
    rexc = pytest.importorskip("redis.exceptions")

    @pytest.mark.parametrize(
        ("name", "category"),
        [
            ("ConnectionError", C.CONNECTION_ERROR),
            ("TimeoutError", C.TIMEOUT_ERROR),
            ("AuthenticationError", C.AUTHENTICATION_ERROR),
            ("NoPermissionError", C.AUTHENTICATION_ERROR),
            ("ResponseError", C.QUERY_ERROR),
            ("DataError", C.QUERY_ERROR),
            ("WatchError", C.QUERY_ERROR),
            ("NoScriptError", C.QUERY_ERROR),
            ("BusyLoadingError", C.DATABASE_ERROR),
            ("ReadOnlyError", C.DATABASE_ERROR),
            ("OutOfMemoryError", C.RESOURCE_ERROR),
            ("MaxConnectionsError", C.RESOURCE_ERROR),
        ],
    )
    def test_errors_classify_by_class(self, name: str, category: ErrorCategory) -> None:
        """redis-py's exception tree, most specific class first."""
        assert classify(getattr(self.rexc, name)("x")) is category


class TestHttpx:
    httpx = pytest.importorskip("httpx")

    def _status_error(self, status: int) -> BaseException:
        request = self.httpx.Request("GET", "http://upstream.test/")
        response = self.httpx.Response(status, request=request)
        return self.httpx.HTTPStatusError("x", request=request, response=response)

    @pytest.mark.parametrize(
        ("status", "category"),
        [
            (404, C.QUERY_ERROR),
            (401, C.AUTHENTICATION_ERROR),
            (403, C.AUTHENTICATION_ERROR),
            (429, C.RESOURCE_ERROR),
            (500, C.UNKNOWN_ERROR),
            (503, C.RESOURCE_ERROR),
        ],
    )
    def test_status_errors_classify_by_status(self, status: int, category: ErrorCategory) -> None:
        """``raise_for_status()``: 5xx and 429 fail, other 4xx never do."""
        assert classify(self._status_error(status)) is category

    @pytest.mark.parametrize(
        ("name", "category"),
        [
            ("ConnectError", C.CONNECTION_ERROR),
            ("ReadError", C.CONNECTION_ERROR),
            ("RemoteProtocolError", C.CONNECTION_ERROR),
            ("ConnectTimeout", C.TIMEOUT_ERROR),
            ("ReadTimeout", C.TIMEOUT_ERROR),
            ("WriteTimeout", C.TIMEOUT_ERROR),
            ("PoolTimeout", C.RESOURCE_ERROR),
            ("UnsupportedProtocol", C.QUERY_ERROR),
            ("LocalProtocolError", C.QUERY_ERROR),
        ],
    )
    def test_transport_errors_classify_by_class(self, name: str, category: ErrorCategory) -> None:
        """httpx's transport errors."""
        assert classify(getattr(self.httpx, name)("x")) is category

    def test_invalid_url_is_a_query_error(self) -> None:
        """A bad URL is the caller's."""
        assert classify(self.httpx.InvalidURL("bad")) is C.QUERY_ERROR


class TestAiohttp:
    aiohttp = pytest.importorskip("aiohttp")

    def _response_error(self, status: int) -> BaseException:
        return self.aiohttp.ClientResponseError(None, (), status=status)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("status", "category"),
        [(404, C.QUERY_ERROR), (403, C.AUTHENTICATION_ERROR), (502, C.CONNECTION_ERROR)],
    )
    def test_response_errors_classify_by_status(self, status: int, category: ErrorCategory) -> None:
        """``raise_for_status()`` in aiohttp reads like httpx's."""
        assert classify(self._response_error(status)) is category

    def test_server_disconnected_is_a_connection_error(self) -> None:
        """The server hung up."""
        assert classify(self.aiohttp.ServerDisconnectedError()) is C.CONNECTION_ERROR

    def test_server_timeout_is_a_timeout(self) -> None:
        """aiohttp's timeouts are timeouts, not connection errors."""
        assert classify(self.aiohttp.ServerTimeoutError()) is C.TIMEOUT_ERROR
