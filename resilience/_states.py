"""The library's vocabulary: breaker states, error categories and outcomes.

A leaf module: it imports nothing from the package, so every other module can
import it (imports go one way, from here outwards).
"""

from __future__ import annotations

import enum

__all__ = ("CircuitState", "ErrorCategory", "Outcome")


class CircuitState(enum.StrEnum):
    """A breaker's state; ``.value`` (and ``str()``) is the lower-case name.

    CLOSED, OPEN and HALF_OPEN are the automatic states. The other three are
    sticky: the breaker only leaves them when told to (``reset()`` or
    ``transition_to``).

    - ``FORCED_OPEN`` rejects every call (``retry_after`` is ``None``).
    - ``DISABLED`` admits every call and records nothing in the window.
    - ``METRICS_ONLY`` admits every call, records and reports, never trips:
      a shadow mode for rolling a breaker out.
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"
    METRICS_ONLY = "metrics_only"


class ErrorCategory(enum.StrEnum):
    """What kind of failure an error is; the value is the name."""

    CONNECTION_ERROR = "CONNECTION_ERROR"
    TIMEOUT_ERROR = "TIMEOUT_ERROR"
    RESOURCE_ERROR = "RESOURCE_ERROR"
    AUTHENTICATION_ERROR = "AUTHENTICATION_ERROR"
    DATABASE_ERROR = "DATABASE_ERROR"
    QUERY_ERROR = "QUERY_ERROR"
    UNKNOWN_ERROR = "UNKNOWN_ERROR"


class Outcome(enum.StrEnum):
    """What a breaker records for a call.

    - ``FAILURE``: counts against the dependency.
    - ``IGNORED``: not counted at all (the probe permit is returned).
    - ``SUCCESS``: counts as a success (the dependency answered).
    - ``TRIP``: opens the circuit at once.
    """

    FAILURE = "failure"
    IGNORED = "ignored"
    SUCCESS = "success"
    TRIP = "trip"
