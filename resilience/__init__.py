"""resilience-patterns: asyncio-first circuit breakers, fallbacks and failover.

The package root only re-exports; see the private modules for the code.
"""

from ._breaker import CircuitBreaker, Listener, Permit, add_global_observer
from ._categories import ErrorCategory, Outcome, classify, is_transient, register_category
from ._clock import Clock, SystemClock
from ._config import CircuitConfig, CircuitState
from ._context import Degradation, degradation_scope, is_degraded, mark_degraded
from ._decorators._bulkhead import Bulkhead, bulkhead
from ._decorators._chain import chain
from ._decorators._circuit import circuit
from ._decorators._fallback import MISSING, fallback, flush_fallbacks
from ._decorators._retry import retry
from ._decorators._timeout import timeout
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
from ._store import LocalStore, RemoteState, SharedBreaker, StateStore

__version__ = "0.1.0.dev0"

__all__ = (
    "Bulkhead",
    "BulkheadFullError",
    "CallTimeoutError",
    "ChainExhaustedError",
    "CircuitBreaker",
    "CircuitBreakerOpenError",
    "CircuitConfig",
    "CircuitOpenError",
    "CircuitState",
    "Clock",
    "Degradation",
    "ErrorCategory",
    "Listener",
    "LocalStore",
    "MISSING",
    "Outcome",
    "Permit",
    "Registry",
    "RemoteState",
    "ResilienceError",
    "SharedBreaker",
    "StateStore",
    "SystemClock",
    "Transition",
    "__version__",
    "add_global_observer",
    "bulkhead",
    "chain",
    "circuit",
    "classify",
    "degradation_scope",
    "fallback",
    "flush_fallbacks",
    "is_degraded",
    "is_transient",
    "mark_degraded",
    "register_category",
    "registry",
    "retry",
    "timeout",
)
