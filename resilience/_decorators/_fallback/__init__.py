"""``@fallback``: serve something else when the dependency fails.

Three kinds of source, told apart once, at decoration time:

- a **cache** (an aiocache ``BaseCache``, or any object with ``get(key)`` and
  ``set(key, value, ttl=...)``): every call goes to the dependency; a success
  is written behind (the call never waits for the cache), a failure serves
  the last good value (stale-on-error);
- a **callable**, sync or async, called with the same arguments;
- nothing but a ``default=`` value.

The package, one job per module, in the order a call meets them:

- :mod:`._decorator`: ``fallback()`` itself: validation, the wrapper, the
  choice of driver (made once), ``fn.fallback`` and ``flush_fallbacks``;
- :mod:`._keys`: the cache key of a call;
- :mod:`._async` and :mod:`._sync`: the drivers, which call the function
  and carry out the decisions;
- :mod:`._decide`: the decisions (trigger? serve what? fresh?), pure functions;
- :mod:`._runtime`: one function's state and its cache I/O, behind the
  cache's own breaker;
- :mod:`._flights`: single flight (one read, one attempt, many callers);
- :mod:`._writer`: write-behind (coalesced, bounded, flushed);
- :mod:`._memory`: the built-in in-process cache; :mod:`._metrics`: counters.
"""

from ._decide import MISSING
from ._decorator import FallbackControl, fallback, flush_fallbacks
from ._keys import KEY_PREFIX, KeyMaker, UnkeyableError
from ._memory import LocalCache
from ._runtime import CACHE_BREAKER_SETTINGS, Fallback, cache_breaker_settings

_Fallback = Fallback  # the name it had when this package was one module

__all__ = (
    "CACHE_BREAKER_SETTINGS",
    "KEY_PREFIX",
    "MISSING",
    "FallbackControl",
    "KeyMaker",
    "LocalCache",
    "UnkeyableError",
    "cache_breaker_settings",
    "fallback",
    "flush_fallbacks",
)
