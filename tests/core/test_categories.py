"""classify() and the outcome rules, without any database driver."""

from __future__ import annotations

import asyncio

import pytest

from resilience import (
    BulkheadFullError,
    CallTimeoutError,
    CircuitOpenError,
    CircuitState,
    ErrorCategory,
    Outcome,
    classify,
    register_category,
)
from resilience._categories import Judge, outcome_of


class FakePgError(Exception):
    """Carries a SQLSTATE the way asyncpg's errors do."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"some message mentioning connection {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "category"),
    [
        ("08006", ErrorCategory.CONNECTION_ERROR),
        ("08003", ErrorCategory.CONNECTION_ERROR),
        ("57P01", ErrorCategory.CONNECTION_ERROR),
        ("57P03", ErrorCategory.CONNECTION_ERROR),
        ("57014", ErrorCategory.TIMEOUT_ERROR),
        ("53300", ErrorCategory.RESOURCE_ERROR),
        ("28P01", ErrorCategory.AUTHENTICATION_ERROR),
        ("3D000", ErrorCategory.DATABASE_ERROR),
        ("40001", ErrorCategory.DATABASE_ERROR),
        ("40P01", ErrorCategory.DATABASE_ERROR),
        ("XX000", ErrorCategory.DATABASE_ERROR),
        ("58030", ErrorCategory.DATABASE_ERROR),
        ("42601", ErrorCategory.QUERY_ERROR),
        ("42P01", ErrorCategory.QUERY_ERROR),
        ("22012", ErrorCategory.QUERY_ERROR),
        ("23505", ErrorCategory.QUERY_ERROR),
    ],
)
def test_sqlstate_classes_map_to_categories(sqlstate: str, category: ErrorCategory) -> None:
    """The SQLSTATE table of DESIGN.md."""
    assert classify(FakePgError(sqlstate)) is category


def test_builtin_timeout_is_a_timeout_not_a_connection_error() -> None:
    """TimeoutError is an OSError subclass but classifies as TIMEOUT."""
    assert classify(TimeoutError()) is ErrorCategory.TIMEOUT_ERROR
    assert classify(CallTimeoutError("f", 1.0)) is ErrorCategory.TIMEOUT_ERROR


def test_os_errors_are_connection_errors() -> None:
    """ConnectionRefusedError and other OSErrors classify as CONNECTION."""
    assert classify(ConnectionRefusedError()) is ErrorCategory.CONNECTION_ERROR
    assert classify(OSError("unreachable")) is ErrorCategory.CONNECTION_ERROR


def test_message_text_is_never_read() -> None:
    """A RuntimeError saying 'connection refused' is still UNKNOWN."""
    assert classify(RuntimeError("connection refused timeout")) is ErrorCategory.UNKNOWN_ERROR


def test_registered_types_win_over_builtin_rules() -> None:
    """register_category overrides for a type and its subclasses."""

    class DriverGone(OSError):
        pass

    class DriverGoneHard(DriverGone):
        pass

    register_category(DriverGone, ErrorCategory.RESOURCE_ERROR)
    assert classify(DriverGoneHard()) is ErrorCategory.RESOURCE_ERROR


def test_register_category_rejects_non_exception_types() -> None:
    """Only exception types can be registered."""
    with pytest.raises(TypeError):
        register_category(int, ErrorCategory.QUERY_ERROR)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "exc",
    [
        asyncio.CancelledError(),
        KeyboardInterrupt(),
        SystemExit(0),
        GeneratorExit(),
        CircuitOpenError("inner", CircuitState.OPEN, 1.0),
        BulkheadFullError("b", 1, 0),
    ],
)
def test_cancellation_and_library_rejections_are_ignored(exc: BaseException) -> None:
    """They say nothing about the dependency's health."""
    assert Judge()(exc)[0] is Outcome.IGNORED


def test_auth_and_query_errors_are_ignored_by_default() -> None:
    """A bad password or bad SQL does not trip the breaker."""
    judge = Judge()
    assert judge(FakePgError("28P01"))[0] is Outcome.IGNORED
    assert judge(FakePgError("42601"))[0] is Outcome.IGNORED


def test_serialization_failures_are_ignored_but_other_database_errors_fail() -> None:
    """The default policy evaluates DATABASE_ERROR severity."""
    judge = Judge()
    assert judge(FakePgError("40001"))[0] is Outcome.IGNORED
    assert judge(FakePgError("40P01"))[0] is Outcome.IGNORED
    assert judge(FakePgError("3D000"))[0] is Outcome.FAILURE


def test_explicit_database_policy_applies_to_every_database_error() -> None:
    """A user-supplied DATABASE_ERROR outcome covers 40001 too."""
    judge = Judge(policy={ErrorCategory.DATABASE_ERROR: Outcome.FAILURE})
    assert judge(FakePgError("40001"))[0] is Outcome.FAILURE


def test_not_recorded_exceptions_count_as_success() -> None:
    """Outside `record`, an exception means the dependency answered."""
    judge = Judge(record=(ConnectionError,))
    assert judge(KeyError("x"))[0] is Outcome.SUCCESS
    assert judge(ConnectionError())[0] is Outcome.FAILURE


def test_ignore_wins_over_everything() -> None:
    """An ignored type is never counted."""
    assert Judge(ignore=(ConnectionError,))(ConnectionError())[0] is Outcome.IGNORED


def test_failing_classifier_is_logged_and_treated_as_unknown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A classifier bug never hides the original error's outcome."""

    def broken(exc: BaseException) -> ErrorCategory:
        raise RuntimeError("classifier bug")

    outcome, category = Judge(classifier=broken)(ValueError())
    assert (outcome, category) == (Outcome.FAILURE, ErrorCategory.UNKNOWN_ERROR)
    assert "classifier failed" in caplog.text


def test_outcome_of_prefers_the_mark_of_the_innermost_breaker() -> None:
    """An exception judged by a breaker carries that breaker's verdict."""
    exc = ConnectionError()
    Judge(ignore=(ConnectionError,)).judge_and_mark(exc)
    Judge().judge_and_mark(exc)  # an outer breaker does not overwrite it
    assert outcome_of(exc) is Outcome.IGNORED
    assert outcome_of(ConnectionError()) is Outcome.FAILURE
