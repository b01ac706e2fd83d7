"""Test helpers shipped with the library, for its own tests and for yours.

- :class:`FakeClock`: a clock you advance by hand; nothing ever sleeps.
- :func:`capture_events`: records every breaker transition while active.
- :class:`FaultProxy`: an asyncio TCP proxy in front of a real server that can
  refuse, black-hole, reset or delay connections, to rehearse an outage.
- :class:`ThrowawayPostgres` / :class:`ThrowawayRedis`: start a private server
  for a test run or a demo when none is configured, and stop it afterwards.
- a pytest plugin (auto-loaded) with the fixtures ``fake_clock`` and
  ``isolated_registry``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._clock import FakeClock
from ._events import CapturedEvent, capture_events

if TYPE_CHECKING:
    from ._fault_proxy import FaultProxy
    from ._servers import ThrowawayPostgres, ThrowawayRedis

__all__ = (
    "CapturedEvent",
    "FakeClock",
    "FaultProxy",
    "ThrowawayPostgres",
    "ThrowawayRedis",
    "capture_events",
)

# The network helpers are imported on first use: most users of FakeClock
# never need them.
_LAZY = {
    "FaultProxy": "._fault_proxy",
    "ThrowawayPostgres": "._servers",
    "ThrowawayRedis": "._servers",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'resilience.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
