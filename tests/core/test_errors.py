"""The exception tree and fresh copies of errors."""

from __future__ import annotations

import traceback

from resilience import (
    BulkheadFullError,
    CallTimeoutError,
    ChainExhaustedError,
    CircuitOpenError,
    CircuitState,
    ResilienceError,
)
from resilience._errors import fresh_copy


class DriverError(ConnectionError):
    """Like many driver errors: ``__init__`` does not take back its ``args``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _raised(exc: Exception) -> Exception:
    try:
        raise exc
    except Exception as caught:
        return caught


def test_every_library_error_is_a_resilience_error() -> None:
    """One except clause catches every rejection."""
    errors = [
        CircuitOpenError("db", CircuitState.OPEN, 1.0),
        BulkheadFullError("b", 1, 0),
        CallTimeoutError("f", 1.0),
        ChainExhaustedError("all failed", [ConnectionError()]),
    ]
    assert all(isinstance(e, ResilienceError) for e in errors)
    assert isinstance(CallTimeoutError("f", 1.0), TimeoutError)


def test_fresh_copy_of_a_plain_error_is_a_new_equal_error() -> None:
    """Same type and args, another object, no traceback."""
    original = _raised(ConnectionError("down"))
    copy = fresh_copy(original)
    assert copy is not original and type(copy) is ConnectionError
    assert copy.args == ("down",) and copy.__traceback__ is None
    assert original.__traceback__ is not None


def test_fresh_copy_of_a_driver_error_never_returns_the_original() -> None:
    """An __init__ that does not take back its args is copied without calling it."""
    original = _raised(DriverError("08006", "server gone"))
    frames = [f.name for f in traceback.extract_tb(original.__traceback__)]
    copy = fresh_copy(original)
    assert copy is not original and type(copy) is DriverError
    assert copy.args == ("server gone",) and copy.code == "08006"  # type: ignore[attr-defined]
    assert [f.name for f in traceback.extract_tb(original.__traceback__)] == frames


def test_fresh_copy_keeps_os_error_fields() -> None:
    """errno and strerror survive the copy of an OSError subclass."""
    original = ConnectionRefusedError(111, "Connection refused")
    copy = fresh_copy(original)
    assert (copy.errno, copy.strerror) == (111, "Connection refused")  # type: ignore[attr-defined]


def test_fresh_copy_keeps_the_cause_and_its_own_notes() -> None:
    """The cause is kept; notes are copied, not shared."""
    original = ConnectionError("down")
    original.__cause__ = OSError("socket")
    original.add_note("first")
    copy = fresh_copy(original)
    copy.add_note("second")
    assert copy.__cause__ is original.__cause__
    assert original.__notes__ == ["first"] and copy.__notes__ == ["first", "second"]
