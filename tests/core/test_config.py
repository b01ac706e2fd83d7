"""CircuitConfig: defaults, validation at construction, derived values."""

from __future__ import annotations

import pytest

from resilience import CircuitConfig, CircuitState, ErrorCategory, Outcome


def test_defaults_match_the_contract() -> None:
    """The documented defaults."""
    c = CircuitConfig()
    assert (c.failure_threshold, c.error_rate, c.minimum_calls, c.window_size) == (5, 0.5, 10, 100)
    assert (c.recovery_timeout, c.recovery_backoff, c.jitter, c.success_threshold) == (
        60.0,
        1.0,
        0.0,
        3,
    )
    assert c.window_duration is None and c.slow_call_duration is None
    assert c.slow_call_rate == 1.0 and c.half_open_timeout is None
    assert c.ignore == () and c.record == (Exception,)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failure_threshold", 0),
        ("failure_threshold", 2.5),
        ("failure_threshold", True),
        ("success_threshold", 0),
        ("minimum_calls", 0),
        ("window_size", 0),
        ("half_open_max_calls", 0),
        ("error_rate", 0.0),
        ("error_rate", 1.5),
        ("slow_call_rate", 0.0),
        ("recovery_timeout", -1),
        ("recovery_timeout", float("nan")),
        ("window_duration", 0),
        ("slow_call_duration", -0.1),
        ("half_open_timeout", 0),
        ("recovery_backoff", 0.5),
        ("jitter", 1.5),
        ("jitter", -0.1),
        ("ignore", "ValueError"),
        ("record", (int,)),
    ],
)
def test_bad_values_raise_value_error_naming_the_field(field: str, value: object) -> None:
    """Each invalid value is rejected at construction with the field's name."""
    with pytest.raises(ValueError, match=field):
        CircuitConfig(**{field: value})  # type: ignore[arg-type]


def test_unknown_field_is_a_type_error_naming_it() -> None:
    """A misspelt setting fails loudly."""
    with pytest.raises(TypeError, match="failure_treshold"):
        CircuitConfig(failure_treshold=3)  # type: ignore[call-arg]


def test_cap_below_recovery_timeout_is_rejected() -> None:
    """An explicit max_recovery_timeout below recovery_timeout is an error."""
    with pytest.raises(ValueError, match="max_recovery_timeout"):
        CircuitConfig(recovery_timeout=60, max_recovery_timeout=30)


def test_default_cap_is_600_or_the_recovery_timeout() -> None:
    """max_recovery_timeout None means max(600, recovery_timeout)."""
    assert CircuitConfig().effective_max_recovery_timeout == 600.0
    assert CircuitConfig(recovery_timeout=900).effective_max_recovery_timeout == 900.0


def test_minimum_calls_is_capped_to_the_count_window() -> None:
    """Shrinking the window never makes the minimum_calls default invalid."""
    c = CircuitConfig(window_size=5)
    assert c.minimum_calls == 10 and c.effective_minimum_calls == 5
    assert CircuitConfig(window_duration=10, minimum_calls=50).effective_minimum_calls == 50


def test_half_open_max_calls_defaults_to_success_threshold() -> None:
    """None means success_threshold, re-derived when that changes."""
    c = CircuitConfig(success_threshold=4)
    assert c.effective_half_open_max_calls == 4
    assert c.replace(success_threshold=2).effective_half_open_max_calls == 2
    assert c.replace(half_open_max_calls=7).effective_half_open_max_calls == 7


def test_config_is_frozen() -> None:
    """Settings cannot be mutated after construction."""
    c = CircuitConfig()
    with pytest.raises(AttributeError):
        c.failure_threshold = 3  # type: ignore[misc]


def test_single_exception_type_is_normalised_to_a_tuple() -> None:
    """ignore=ValueError is accepted as (ValueError,)."""
    assert CircuitConfig(ignore=ValueError).ignore == (ValueError,)  # type: ignore[arg-type]


def test_partial_category_policy_is_merged_over_defaults() -> None:
    """Only the given categories change."""
    c = CircuitConfig(category_policy={ErrorCategory.QUERY_ERROR: Outcome.FAILURE})
    assert c.full_policy[ErrorCategory.QUERY_ERROR] is Outcome.FAILURE
    assert c.full_policy[ErrorCategory.AUTHENTICATION_ERROR] is Outcome.IGNORED


def test_bad_category_policy_names_the_field() -> None:
    """A policy with a bad key or outcome is rejected."""
    with pytest.raises(ValueError, match="category_policy"):
        CircuitConfig(category_policy={"NOPE": Outcome.FAILURE})  # type: ignore[dict-item]


def test_as_dict_is_json_friendly() -> None:
    """Types appear by qualified name and enums by value."""
    d = CircuitConfig(
        ignore=(KeyError,), category_policy={ErrorCategory.QUERY_ERROR: Outcome.TRIP}
    ).as_dict()
    assert d["ignore"] == ["builtins.KeyError"]
    assert d["category_policy"] == {"QUERY_ERROR": "trip"}


def test_state_values_are_lower_case_strings() -> None:
    """CircuitState is a str enum with lower-case values."""
    assert [s.value for s in CircuitState] == [
        "closed",
        "open",
        "half_open",
        "forced_open",
        "disabled",
        "metrics_only",
    ]
    assert str(CircuitState.HALF_OPEN) == "half_open"
