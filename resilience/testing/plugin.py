"""pytest plugin (loaded automatically once resilience-patterns is installed).

Fixtures:
    fake_clock: a fresh :class:`FakeClock` at 0.0.
    isolated_registry: a fresh :class:`Registry` on ``fake_clock``; use it in
        place of ``resilience.registry`` so tests never share breakers.
    resilience_testing: :func:`set_testing` for the test: the breakers of
        ``resilience.registry`` (where ``@circuit`` puts those of code
        decorated at import) start clean and are cleaned again after it;
        ``@retry`` does not wait between attempts. Use it from an autouse
        fixture in your ``conftest.py`` to cover a whole suite.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .._registry import Registry
from ._clock import FakeClock
from ._switch import set_testing


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock that moves only when the test advances it."""
    return FakeClock()


@pytest.fixture
def isolated_registry(fake_clock: FakeClock) -> Registry:
    """A registry of its own, on the test's fake clock."""
    return Registry(clock=fake_clock)


@pytest.fixture
def resilience_testing() -> Iterator[None]:
    """Clean breakers in ``resilience.registry`` and no retry waits, for one test."""
    with set_testing(True):
        yield
