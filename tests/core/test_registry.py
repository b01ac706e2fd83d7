"""Registry: identity by name, conflicts, group control."""

from __future__ import annotations

import pytest

from resilience import CircuitBreaker, CircuitState, Registry, registry
from resilience.testing import FakeClock


def test_same_name_same_breaker(isolated_registry: Registry) -> None:
    """The name is the identity."""
    a = isolated_registry.get_or_create("db", failure_threshold=3)
    assert isolated_registry.get_or_create("db") is a
    assert isolated_registry.get_or_create("db", failure_threshold=3) is a
    assert isolated_registry.get("db") is a and "db" in isolated_registry


def test_conflicting_settings_raise(isolated_registry: Registry) -> None:
    """Different explicit settings for an existing name are a ValueError naming them."""
    isolated_registry.get_or_create("db", failure_threshold=3)
    with pytest.raises(ValueError, match="failure_threshold"):
        isolated_registry.get_or_create("db", failure_threshold=4)


def test_registry_clock_is_given_to_breakers(isolated_registry: Registry) -> None:
    """Registry(clock=...) passes its clock on."""
    b = isolated_registry.get_or_create("db")
    assert b.clock is isolated_registry.clock


def test_get_missing_is_none(isolated_registry: Registry) -> None:
    """get() of an unknown name is None."""
    assert isolated_registry.get("nope") is None


def test_snapshot_lists_status_dicts(isolated_registry: Registry) -> None:
    """snapshot() is the status of every breaker."""
    isolated_registry.get_or_create("a")
    isolated_registry.get_or_create("b")
    assert [s["name"] for s in isolated_registry.snapshot()] == ["a", "b"]


def test_force_open_all_and_reset_all(isolated_registry: Registry) -> None:
    """Group isolation and recovery."""
    a = isolated_registry.get_or_create("a")
    b = isolated_registry.get_or_create("b")
    isolated_registry.force_open_all("maintenance", names=["a"])
    assert (a.state, b.state) == (CircuitState.FORCED_OPEN, CircuitState.CLOSED)
    isolated_registry.force_open_all()
    assert b.state is CircuitState.FORCED_OPEN
    isolated_registry.reset_all()
    assert {a.state, b.state} == {CircuitState.CLOSED}


def test_force_open_all_rejects_unknown_names(isolated_registry: Registry) -> None:
    """A typo in a group name is an error, not a silent no-op."""
    with pytest.raises(KeyError, match="nope"):
        isolated_registry.force_open_all(names=["nope"])


def test_reconfigure_by_name(isolated_registry: Registry) -> None:
    """registry.reconfigure changes an existing breaker."""
    b = isolated_registry.get_or_create("a")
    isolated_registry.reconfigure("a", failure_threshold=9)
    assert b.config.failure_threshold == 9
    with pytest.raises(KeyError):
        isolated_registry.reconfigure("nope", failure_threshold=1)


def test_register_a_directly_built_breaker() -> None:
    """A breaker built directly is not registered until register()."""
    reg = Registry(clock=FakeClock())
    b = CircuitBreaker("direct")
    assert reg.get("direct") is None
    reg.register(b)
    assert reg.get("direct") is b
    with pytest.raises(ValueError, match="already registered"):
        reg.register(CircuitBreaker("direct"))


def test_default_registry_exists() -> None:
    """resilience.registry is a Registry."""
    assert isinstance(registry, Registry)
