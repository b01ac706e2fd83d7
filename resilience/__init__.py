"""resilience-patterns: asyncio-first circuit breakers, fallbacks and failover.

The package root only re-exports; see the private modules for the code.
"""

from ._breaker import CircuitBreaker, Listener, Permit
from ._categories import ErrorCategory, Outcome, classify, register_category
from ._clock import Clock, SystemClock
from ._config import CircuitConfig, CircuitState
from ._context import degradation_scope, is_degraded, mark_degraded
from ._decorators._circuit import circuit
from ._errors import (
    BulkheadFullError,
    CallTimeoutError,
    ChainExhaustedError,
    CircuitBreakerOpenError,
    CircuitOpenError,
    ResilienceError,
)
from ._machine import Transition
from ._registry import Registry, registry
from ._store import LocalStore, StateStore

__version__ = "0.1.0.dev0"

__all__ = (
    "BulkheadFullError",
    "CallTimeoutError",
    "ChainExhaustedError",
    "CircuitBreaker",
    "CircuitBreakerOpenError",
    "CircuitConfig",
    "CircuitOpenError",
    "CircuitState",
    "Clock",
    "ErrorCategory",
    "Listener",
    "LocalStore",
    "Outcome",
    "Permit",
    "Registry",
    "ResilienceError",
    "StateStore",
    "SystemClock",
    "Transition",
    "__version__",
    "circuit",
    "classify",
    "degradation_scope",
    "is_degraded",
    "mark_degraded",
    "register_category",
    "registry",
)
