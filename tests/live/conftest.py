"""Every test in this directory talks to a real server and is marked ``integration``.

The server fixtures (``pg_dsn``, ``redis_url``, ...) live in ``tests/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/live as ``integration``."""
    # This hook sees the whole session's items, not only this directory's.
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)
