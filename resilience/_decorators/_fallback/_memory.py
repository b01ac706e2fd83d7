"""The cache ``@fallback()`` uses when given none."""

from __future__ import annotations

import collections
import threading
from typing import Any

__all__ = ("LocalCache",)


class LocalCache:
    """A bounded in-process LRU dict (4,096 entries per decorated function).

    It stores references, like :func:`functools.lru_cache`: a caller that
    mutates a returned value mutates the cached one. Expiry is checked by
    ``@fallback`` itself from the stored-at time, on the injected clock.
    Being in-process, it is written inline on the good path (no writer).
    """

    __slots__ = ("_data", "_lock", "maxsize")

    def __init__(self, maxsize: int = 4096) -> None:
        self.maxsize = maxsize
        self._data: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        """The stored value, or ``None``."""
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def set(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` (``ttl`` is checked on read by ``@fallback``)."""
        with self._lock:
            data = self._data
            data[key] = value
            data.move_to_end(key)
            if len(data) > self.maxsize:
                data.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._data)
