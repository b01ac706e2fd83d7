"""Breaker settings (:class:`CircuitConfig`) and states (:class:`CircuitState`).

Settings are validated once, at construction: a bad value raises
``ValueError`` naming the field, an unknown field a ``TypeError`` naming it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from ._categories import DEFAULT_POLICY
from ._states import CircuitState, ErrorCategory, Outcome

__all__ = ("CircuitConfig", "CircuitState")


def _exception_types(field: str, value: Any) -> tuple[type[BaseException], ...]:
    if isinstance(value, type):
        value = (value,)
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError(f"{field} must be an exception type or a tuple of them, got {value!r}")
    types = tuple(value)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise ValueError(f"{field} must hold exception types, got {t!r}")
    return types


MAX_WINDOW_SIZE = 1_000_000
"""The largest count window: one byte per call, so at most about 1 MB."""


def _check_int(field: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int:
    # Any integral number (numpy's included), never a bool.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{field} must be an integer >= {minimum}, got {value!r}")
    number = int(value)
    if number < minimum:
        raise ValueError(f"{field} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{field} must be an integer <= {maximum:,}, got {value!r}")
    return number


def _check_number(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"{field} must be a number, got {value!r}")
    return float(value) + 0.0  # -0.0 becomes 0.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CircuitConfig:
    """Settings of one circuit breaker. Frozen; every value is checked here.

    Attributes:
        failure_threshold: consecutive failures that open the circuit; applies
            from the very first call. Integer >= 1. Default 5.
        error_rate: failure ratio over the window that opens the circuit, in
            (0, 1]; ``None`` turns the rule off. Default 0.5.
        minimum_calls: calls the window must hold before ``error_rate`` and
            ``slow_call_rate`` are evaluated (it gates only those two rules).
            Integer >= 1, capped to ``window_size`` with the count window.
            Default 10.
        window_size: the count window: the last N recorded calls. Integer in
            [1, 1,000,000] (one byte per call). Default 100.
        window_duration: seconds, > 0. When set, a time window of buckets
            replaces the count window. Default ``None``.
        slow_call_duration: seconds, > 0. A call slower than this is slow,
            whether it succeeds or fails. ``None`` (default) turns slow calls off.
        slow_call_rate: slow-call ratio over the window that opens the circuit,
            in (0, 1]. Default 1.0.
        recovery_timeout: seconds the circuit stays OPEN before a probe is
            admitted, >= 0. Default 60.0.
        recovery_backoff: multiplier, >= 1, applied to the open period on each
            consecutive re-opening. Default 1.0 (constant).
        max_recovery_timeout: cap on the open period; ``None`` means
            ``max(600.0, recovery_timeout)``. Must be >= ``recovery_timeout``.
        jitter: in [0, 1]; each open period is multiplied by a factor drawn
            uniformly from [1 - jitter, 1 + jitter], once per opening. Default 0.
        success_threshold: successful probes in HALF_OPEN that close the
            circuit. Integer >= 1. Default 3.
        half_open_max_calls: probes admitted at a time in HALF_OPEN. Integer
            >= 1; ``None`` (default) means ``success_threshold``.
        half_open_timeout: seconds, > 0. A HALF_OPEN that has not decided by
            then re-opens at that deadline. ``None`` (default) waits for probes.
        ignore: exception types never counted (neither failure nor success).
        record: exception types counted as failures, after ``ignore`` and the
            category policy; any other exception counts as a success (the
            dependency answered). Default ``(Exception,)``; empty is a
            ``ValueError`` (it would never trip).
        category_policy: ``{ErrorCategory: Outcome}``; a partial mapping is
            merged over the defaults. A category you set applies to every error
            of that category (the default policy alone ignores serialization
            failures and deadlocks among DATABASE_ERRORs).
    """

    failure_threshold: int = 5
    error_rate: float | None = 0.5
    minimum_calls: int = 10
    window_size: int = 100
    window_duration: float | None = None
    slow_call_duration: float | None = None
    slow_call_rate: float = 1.0
    recovery_timeout: float = 60.0
    recovery_backoff: float = 1.0
    max_recovery_timeout: float | None = None
    jitter: float = 0.0
    success_threshold: int = 3
    half_open_max_calls: int | None = None
    half_open_timeout: float | None = None
    ignore: tuple[type[BaseException], ...] = ()
    record: tuple[type[BaseException], ...] = (Exception,)
    category_policy: Mapping[ErrorCategory, Outcome] = dataclasses.field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("failure_threshold", "success_threshold", "minimum_calls"):
            set_(self, name, _check_int(name, getattr(self, name)))
        set_(self, "window_size", _check_int("window_size", self.window_size, 1, MAX_WINDOW_SIZE))
        if self.half_open_max_calls is not None:
            set_(
                self,
                "half_open_max_calls",
                _check_int("half_open_max_calls", self.half_open_max_calls),
            )
        for name in ("error_rate", "slow_call_rate"):
            value = getattr(self, name)
            if value is None and name == "error_rate":
                continue
            value = _check_number(name, value)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
            set_(self, name, value)
        for name in ("window_duration", "slow_call_duration", "half_open_timeout"):
            value = getattr(self, name)
            if value is None:
                continue
            value = _check_number(name, value)
            if not 0.0 < value < math.inf:
                raise ValueError(f"{name} must be > 0 seconds (and finite), got {value!r}")
            set_(self, name, value)
        rt = _check_number("recovery_timeout", self.recovery_timeout)
        if not 0.0 <= rt < math.inf:
            raise ValueError(f"recovery_timeout must be >= 0 seconds, got {rt!r}")
        set_(self, "recovery_timeout", rt)
        backoff = _check_number("recovery_backoff", self.recovery_backoff)
        if not 1.0 <= backoff < math.inf:
            raise ValueError(f"recovery_backoff must be >= 1, got {backoff!r}")
        set_(self, "recovery_backoff", backoff)
        if self.max_recovery_timeout is not None:
            cap = _check_number("max_recovery_timeout", self.max_recovery_timeout)
            if not rt <= cap < math.inf:
                raise ValueError(
                    f"max_recovery_timeout ({cap!r}) must be >= recovery_timeout ({rt!r})"
                )
            set_(self, "max_recovery_timeout", cap)
        jitter = _check_number("jitter", self.jitter)
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter must be in [0, 1], got {jitter!r}")
        set_(self, "jitter", jitter)
        set_(self, "ignore", _exception_types("ignore", self.ignore))
        set_(self, "record", _exception_types("record", self.record))
        if not self.record:
            raise ValueError(
                "record=() counts no exception as a failure, so the circuit could never "
                "trip: leave record at its default, or name the exception types to count"
            )
        policy = self.category_policy
        if not isinstance(policy, Mapping):
            raise ValueError(f"category_policy must be a mapping, got {policy!r}")
        clean: dict[ErrorCategory, Outcome] = {}
        for key, outcome in policy.items():
            try:
                clean[ErrorCategory(key)] = Outcome(outcome)
            except ValueError:
                raise ValueError(
                    f"category_policy: {key!r} -> {outcome!r} is not an "
                    "ErrorCategory -> Outcome pair"
                ) from None
        set_(self, "category_policy", MappingProxyType(clean))

    # Effective values, derived from the settings.

    @property
    def effective_max_recovery_timeout(self) -> float:
        """The cap on the open period, with the ``None`` default resolved."""
        if self.max_recovery_timeout is not None:
            return self.max_recovery_timeout
        return max(600.0, self.recovery_timeout)

    @property
    def effective_half_open_max_calls(self) -> int:
        """Probes admitted at a time in HALF_OPEN, with ``None`` resolved."""
        if self.half_open_max_calls is not None:
            return self.half_open_max_calls
        return self.success_threshold

    @property
    def effective_minimum_calls(self) -> int:
        """``minimum_calls``, capped to ``window_size`` with the count window."""
        if self.window_duration is None:
            return min(self.minimum_calls, self.window_size)
        return self.minimum_calls

    @property
    def full_policy(self) -> Mapping[ErrorCategory, Outcome]:
        """The category policy with the defaults merged under the explicit entries."""
        return MappingProxyType({**DEFAULT_POLICY, **self.category_policy})

    def replace(self, **fields: Any) -> CircuitConfig:
        """A copy with ``fields`` changed, validated like a new config."""
        return dataclasses.replace(self, **fields)

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain JSON-friendly values (types by qualified name)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("ignore", "record"):
                value = [f"{t.__module__}.{t.__qualname__}" for t in value]
            elif f.name == "category_policy":
                value = {k.value: v.value for k, v in value.items()}
            out[f.name] = value
        return out


FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(CircuitConfig))
DEFAULT_CONFIG = CircuitConfig()


def make_config(config: CircuitConfig | None, fields: Mapping[str, Any]) -> CircuitConfig:
    """Build a config from an optional base and keyword overrides."""
    unknown = sorted(set(fields) - FIELD_NAMES)
    if unknown:
        raise TypeError(f"unknown circuit setting(s): {', '.join(unknown)}")
    if config is None:
        return CircuitConfig(**fields) if fields else DEFAULT_CONFIG
    if not isinstance(config, CircuitConfig):
        raise TypeError(f"config must be a CircuitConfig, got {type(config).__name__}")
    return config.replace(**fields) if fields else config
