"""Test helpers shipped with the library, for its own tests and for yours.

- :class:`FakeClock`: a clock you advance by hand; nothing ever sleeps.
- :func:`capture_events`: records every breaker transition while active.
- :class:`FaultProxy`: an asyncio TCP proxy in front of a real server that can
  refuse, black-hole, reset or delay connections, to rehearse an outage.
- :class:`ThrowawayPostgres` / :class:`ThrowawayRedis`: start a private server
  for a test run or a demo when none is configured, and stop it afterwards.
- :func:`set_testing` / :func:`is_testing`: a switch for application code
  decorated at import: fresh breakers in ``resilience.registry`` and
  ``@retry`` without waits (stamina's ``set_testing``).
- a pytest plugin (auto-loaded) with the fixtures ``fake_clock``,
  ``isolated_registry`` and ``resilience_testing``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._clock import FakeClock
from ._events import CapturedEvent, capture_events
from ._switch import TestingSwitch, is_testing, set_testing

if TYPE_CHECKING:
    from ._fault_proxy import FaultProxy
    from ._servers import ThrowawayPostgres, ThrowawayRedis

__all__ = (
    "CapturedEvent",
    "FakeClock",
    "FaultProxy",
    "ThrowawayPostgres",
    "TestingSwitch",
    "ThrowawayRedis",
    "capture_events",
    "is_testing",
    "set_testing",
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
