"""Fixtures for the @fallback tests: the decorated ``get`` most tests need."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from resilience import fallback

from ..conftest import Dependency

MakeGet = Callable[..., Any]
"""``make_get(*source, dependency=None, **options)``: ``@fallback(*source,
**options)`` around ``async def get(x): return await dep.fetch(x)`` (the
``dep`` fixture, or ``dependency``)."""


@pytest.fixture
def make_get(dep: Dependency) -> MakeGet:
    """Builds the decorated ``get(x)`` over the test's dependency."""

    def make(*source: Any, dependency: Dependency | None = None, **options: Any) -> Any:
        backend = dep if dependency is None else dependency

        @fallback(*source, **options)
        async def get(x: int) -> Any:
            return await backend.fetch(x)

        return get

    return make
