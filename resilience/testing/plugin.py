"""pytest plugin (loaded automatically once resilience-patterns is installed).

Fixtures:
    fake_clock: a fresh :class:`FakeClock` at 0.0.
    isolated_registry: a fresh :class:`Registry` on ``fake_clock``; use it in
        place of ``resilience.registry`` so tests never share breakers.
"""

from __future__ import annotations

import pytest

from .._registry import Registry
from ._clock import FakeClock


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock that moves only when the test advances it."""
    return FakeClock()


@pytest.fixture
def isolated_registry(fake_clock: FakeClock) -> Registry:
    """A registry of its own, on the test's fake clock."""
    return Registry(clock=fake_clock)
