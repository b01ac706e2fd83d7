"""The cache ``@fallback()`` uses when given none."""

from __future__ import annotations

import threading
from typing import Any

__all__ = ("LocalCache",)


class LocalCache:
    """A bounded in-process LRU dict (4,096 entries per decorated function).

    It stores references, like :func:`functools.lru_cache`: a caller that
    mutates a returned value mutates the cached one. Expiry is checked by
    ``@fallback`` itself from the stored-at time, on the injected clock.
    Being in-process, it is written inline on the good path (no writer), so
    a write is two dict operations (each atomic); only eviction takes the lock.
    """

    __slots__ = ("_data", "_lock", "maxsize")

    def __init__(self, maxsize: int = 4096) -> None:
        self.maxsize = maxsize
        # Insertion-ordered: the first key is the least recently used.
        self._data: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        """The stored value, or ``None`` (a read makes it the most recent)."""
        data = self._data
        value = data.pop(key, None)
        if value is not None:
            data[key] = value
        return value

    def set(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` (``ttl`` is checked on read by ``@fallback``)."""
        data = self._data
        data.pop(key, None)
        data[key] = value
        if len(data) > self.maxsize:
            self._evict()
        return True

    def _evict(self) -> None:
        with self._lock:
            data = self._data
            while len(data) > self.maxsize:
                try:
                    del data[next(iter(data))]
                except (KeyError, RuntimeError, StopIteration):  # pragma: no cover - a race
                    continue

    def __len__(self) -> int:
        return len(self._data)
