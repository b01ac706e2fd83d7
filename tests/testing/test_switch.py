"""set_testing / the resilience_testing fixture: clean breakers, no retry waits."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from resilience import CircuitState, Registry, circuit, retry
from resilience.testing import is_testing, set_testing


class Down(ConnectionError):
    """The dependency is down."""


@pytest.fixture
def app_registry() -> Iterator[Registry]:
    """A registry standing in for resilience.registry; testing left off after."""
    yield Registry()
    set_testing(False)


def test_switching_on_resets_breakers_decorated_earlier(app_registry: Registry) -> None:
    """A breaker opened before the switch starts CLOSED and clean."""

    @circuit("users-db", registry=app_registry, failure_threshold=1)
    def get_user() -> None:
        raise Down

    with pytest.raises(Down):
        get_user()
    assert get_user.breaker.state is CircuitState.OPEN  # type: ignore[attr-defined]
    with set_testing(registry=app_registry):
        breaker = get_user.breaker  # type: ignore[attr-defined]
        assert breaker.state is CircuitState.CLOSED
        assert breaker.metrics()["failed_calls"] == 0


def test_switching_off_cleans_what_the_test_did(app_registry: Registry) -> None:
    """State and reconfigured settings are put back when the switch goes off."""

    @circuit("orders-db", registry=app_registry, failure_threshold=5)
    def get_order() -> None:
        raise Down

    with set_testing(registry=app_registry):
        get_order.breaker.reconfigure(failure_threshold=1)  # type: ignore[attr-defined]
        with pytest.raises(Down):
            get_order()
        assert get_order.breaker.state is CircuitState.OPEN  # type: ignore[attr-defined]
    breaker = get_order.breaker  # type: ignore[attr-defined]
    assert breaker.state is CircuitState.CLOSED
    assert breaker.config.failure_threshold == 5


def test_retries_do_not_wait_while_testing(app_registry: Registry) -> None:
    """A 10 s wait is skipped: sleep is never called."""
    slept: list[float] = []
    calls = 0

    @retry(attempts=3, wait=10.0, sleep=slept.append)
    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise Down
        return "ok"

    with set_testing(registry=app_registry):
        assert flaky() == "ok"
    assert (calls, slept) == (3, [])


def test_attempts_caps_every_retry(app_registry: Registry) -> None:
    """attempts=1 turns retries off altogether."""
    calls = 0

    @retry(attempts=5, wait=0)
    def down() -> None:
        nonlocal calls
        calls += 1
        raise Down

    with set_testing(attempts=1, registry=app_registry), pytest.raises(Down):
        down()
    assert calls == 1


def test_waits_come_back_when_switched_off(app_registry: Registry) -> None:
    """After the switch, @retry sleeps as configured again."""
    slept: list[float] = []

    @retry(attempts=2, wait=0.5, sleep=slept.append)
    def down() -> None:
        raise Down

    with set_testing(registry=app_registry):
        pass
    with pytest.raises(Down):
        down()
    assert slept == [0.5]


async def test_async_retries_do_not_wait_while_testing(app_registry: Registry) -> None:
    """The async driver reads the same switch."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    @retry(attempts=3, wait=5.0, sleep=sleep)
    async def down() -> None:
        raise Down

    set_testing(True, registry=app_registry)
    with pytest.raises(Down):
        await down()
    assert slept == []


def test_nested_switches_restore_the_outer_one(app_registry: Registry) -> None:
    """Leaving an inner switch puts the outer one's attempts back."""
    with set_testing(attempts=2, registry=app_registry):
        with set_testing(attempts=1, registry=app_registry):
            assert is_testing()
        assert is_testing()
        from resilience._decorators._retry import TESTING

        assert TESTING.attempts == 2
    assert not is_testing()


def test_plain_calls_switch_on_and_off(app_registry: Registry) -> None:
    """set_testing(True) then set_testing(False), without a with block."""
    set_testing(True, registry=app_registry)
    assert is_testing()
    set_testing(False)
    assert not is_testing()


@pytest.mark.parametrize(("attempts", "error"), [(0, ValueError), (True, TypeError)])
def test_bad_attempts_are_refused(attempts: object, error: type[Exception]) -> None:
    """attempts must be an int >= 1."""
    with pytest.raises(error, match="attempts"):
        set_testing(attempts=attempts)  # type: ignore[arg-type]
    assert not is_testing()


def test_a_bad_registry_is_refused() -> None:
    """registry must be a Registry."""
    with pytest.raises(TypeError, match="registry"):
        set_testing(registry=object())  # type: ignore[arg-type]


FIXTURE_SUITE = """
import resilience
from resilience.testing import is_testing

def test_inside(resilience_testing):
    assert is_testing()
    resilience.registry.get_or_create("switch-fixture").force_open()

def test_after():
    assert not is_testing()
    assert resilience.registry.get("switch-fixture").state.value == "closed"
"""


def test_the_fixture_switches_on_for_one_test_and_cleans_after(tmp_path: Path) -> None:
    """resilience_testing: on during the test; after it, the breaker it opened is CLOSED."""
    (tmp_path / "test_app.py").write_text(FIXTURE_SUITE)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
