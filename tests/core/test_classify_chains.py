"""classify() follows an error to its causes, with no client library involved."""

from __future__ import annotations

import pytest

from resilience import ErrorCategory, classify, is_transient
from resilience._categories import Judge, Outcome
from resilience._clients import MAX_LAYERS, category_for_status, chain_sqlstate

C = ErrorCategory


class PgError(Exception):
    """Carries a SQLSTATE as asyncpg and psycopg do."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


class Wrapper(Exception):
    """A wrapper holding the driver's error in ``.orig``, as SQLAlchemy does."""

    def __init__(self, orig: BaseException) -> None:
        super().__init__("wrapped")
        self.orig = orig


class DomainError(Exception):
    """An application's own error."""


def _fake(module: str, name: str, *bases: type[BaseException]) -> type[BaseException]:
    cls = type(name, bases or (Exception,), {})
    cls.__module__ = module
    return cls


def raised_from(outer: BaseException, cause: BaseException) -> BaseException:
    try:
        raise outer from cause
    except BaseException as exc:
        return exc


def raised_during(outer: BaseException, context: BaseException) -> BaseException:
    try:
        try:
            raise context
        except BaseException:
            raise outer  # noqa: B904 - the implicit context is the point
    except BaseException as exc:
        return exc


def test_orig_is_followed() -> None:
    """A wrapper's ``.orig`` SQLSTATE decides (SQLAlchemy's shape)."""
    assert classify(Wrapper(PgError("42601"))) is C.QUERY_ERROR


def test_explicit_cause_is_followed() -> None:
    """``raise DomainError from driver_error``: the driver's error decides."""
    assert classify(raised_from(DomainError(), ConnectionRefusedError())) is C.CONNECTION_ERROR


def test_implicit_context_is_followed() -> None:
    """An error raised while handling another is classified by that one."""
    assert classify(raised_during(DomainError(), PgError("23505"))) is C.QUERY_ERROR


def test_context_is_not_followed_after_from_none() -> None:
    """``raise ... from None`` hides the context, and classify respects it."""

    def hide() -> None:
        try:
            raise ConnectionRefusedError
        except ConnectionRefusedError:
            raise DomainError from None

    with pytest.raises(DomainError) as info:
        hide()
    assert classify(info.value) is C.UNKNOWN_ERROR


def test_outer_definite_answer_wins() -> None:
    """The outermost layer with an answer decides."""
    assert classify(raised_from(TimeoutError(), PgError("42601"))) is C.TIMEOUT_ERROR


def test_sqlstate_on_a_deep_layer_is_found() -> None:
    """Three layers down, a SQLSTATE still decides."""
    exc = raised_from(DomainError(), Wrapper(raised_from(RuntimeError(), PgError("53300"))))
    assert classify(exc) is C.RESOURCE_ERROR


def test_pgcode_is_read_like_sqlstate() -> None:
    """psycopg2 carries the SQLSTATE as ``pgcode``."""
    exc = _fake("psycopg2.errors", "QueryCanceled", _fake("psycopg2", "OperationalError"))()
    exc.pgcode = "57014"  # type: ignore[attr-defined]
    assert classify(exc) is C.TIMEOUT_ERROR
    assert chain_sqlstate(raised_from(DomainError(), exc)) == "57014"


def test_a_cycle_of_causes_terminates() -> None:
    """``a.__cause__ = b; b.__cause__ = a`` ends, classified as unknown."""
    a, b = DomainError("a"), DomainError("b")
    a.__cause__, b.__cause__ = b, a
    assert classify(a) is C.UNKNOWN_ERROR
    assert chain_sqlstate(a) is None


def test_a_self_referencing_orig_terminates() -> None:
    """An ``.orig`` pointing back at the error itself is visited once."""
    exc = Wrapper(DomainError())
    exc.orig = exc
    assert classify(exc) is C.UNKNOWN_ERROR


def test_depth_is_bounded() -> None:
    """A SQLSTATE beyond MAX_LAYERS layers is not looked for."""
    inner: BaseException = PgError("08006")
    for _ in range(MAX_LAYERS):
        inner = raised_from(DomainError(), inner)
    assert classify(inner) is C.UNKNOWN_ERROR


def test_depth_within_the_bound_is_walked() -> None:
    """MAX_LAYERS - 1 wrappers still reach the SQLSTATE."""
    inner: BaseException = PgError("08006")
    for _ in range(MAX_LAYERS - 1):
        inner = raised_from(DomainError(), inner)
    assert classify(inner) is C.CONNECTION_ERROR


def test_message_text_of_causes_is_never_read() -> None:
    """A cause saying 'connection refused' in words is still unknown."""
    assert classify(raised_from(DomainError(), RuntimeError("connection refused"))) is (
        C.UNKNOWN_ERROR
    )


def test_wrapped_serialization_failure_is_ignored_by_the_default_policy() -> None:
    """40001 under a wrapper is per-transaction, as it is bare."""
    assert Judge()(Wrapper(PgError("40001")))[0] is Outcome.IGNORED


def test_wrapped_deadlock_is_transient() -> None:
    """``@retry`` retries a 40P01 found under a wrapper."""
    assert is_transient(Wrapper(PgError("40P01")))


def test_chain_sqlstate_returns_the_outermost_code() -> None:
    """The first SQLSTATE on the way down is returned."""
    assert chain_sqlstate(Wrapper(PgError("40001"))) == "40001"
    assert chain_sqlstate(PgError("23505")) == "23505"
    assert chain_sqlstate(DomainError()) is None


def test_a_short_sqlstate_is_not_a_sqlstate() -> None:
    """Only a five-character string counts."""
    assert classify(PgError("42")) is C.UNKNOWN_ERROR


@pytest.mark.parametrize(
    ("status", "category"),
    [
        (400, C.QUERY_ERROR),
        (401, C.AUTHENTICATION_ERROR),
        (403, C.AUTHENTICATION_ERROR),
        (404, C.QUERY_ERROR),
        (407, C.AUTHENTICATION_ERROR),
        (409, C.QUERY_ERROR),
        (422, C.QUERY_ERROR),
        (429, C.RESOURCE_ERROR),
        (500, C.UNKNOWN_ERROR),
        (502, C.CONNECTION_ERROR),
        (503, C.RESOURCE_ERROR),
        (504, C.TIMEOUT_ERROR),
        (599, C.UNKNOWN_ERROR),
        (301, C.QUERY_ERROR),
    ],
)
def test_http_statuses_map_to_categories(status: int, category: ErrorCategory) -> None:
    """The HTTP status table of docs/clients.md."""
    assert category_for_status(status) is category


def test_psycopg2_operational_error_without_pgcode_is_a_connection_error() -> None:
    """psycopg2 is recognised by name, never imported."""
    operational = _fake("psycopg2", "OperationalError")
    assert classify(operational("could not connect")) is C.CONNECTION_ERROR


def test_psycopg2_interface_error_is_a_connection_error() -> None:
    """psycopg2's "connection already closed" is an InterfaceError."""
    assert classify(_fake("psycopg2", "InterfaceError")()) is C.CONNECTION_ERROR


def test_valkey_is_read_like_redis() -> None:
    """The valkey fork's errors have redis-py's names."""
    assert classify(_fake("valkey.exceptions", "ResponseError")()) is C.QUERY_ERROR
    assert classify(_fake("valkey.exceptions", "ConnectionError")()) is C.CONNECTION_ERROR


def test_a_family_name_in_another_package_means_nothing() -> None:
    """``myapp.ResponseError`` is not redis-py's."""
    assert classify(_fake("myapp.errors", "ResponseError")()) is C.UNKNOWN_ERROR


def test_a_subclass_in_the_application_keeps_its_family() -> None:
    """An application's subclass of a client's error is classified by its base."""
    response_error = _fake("redis.exceptions", "ResponseError")
    mine = type("MyResponseError", (response_error,), {})
    assert classify(mine()) is C.QUERY_ERROR


def test_fallback_applies_only_when_no_layer_is_definite() -> None:
    """An OperationalError over a SQLSTATE takes the SQLSTATE's category."""
    operational = _fake("psycopg2", "OperationalError")
    exc = operational("canceled")
    exc.pgcode = "57014"  # type: ignore[attr-defined]
    assert classify(exc) is C.TIMEOUT_ERROR
    assert classify(raised_from(operational(), PgError("42601"))) is C.QUERY_ERROR
