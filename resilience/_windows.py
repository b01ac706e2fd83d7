"""Sliding windows of recorded calls, O(1) per call.

Both keep running totals (``calls``, ``failures``, ``slow``) so the rate rules
never scan. Storage is allocated on first use: a breaker that is never called
costs no window memory.

- :class:`CountWindow`: the last N calls in a ring of one byte per call.
- :class:`TimeWindow`: the calls of the last D seconds in a ring of buckets,
  advanced lazily when touched (no timers). Buckets are 1 s wide up to 600 s
  windows, then D/600 s wide.
"""

from __future__ import annotations

import math
from array import array

__all__ = ("CountWindow", "TimeWindow")

_FAILURE = 1
_SLOW = 2
_MAX_BUCKETS = 600


class CountWindow:
    """The last ``size`` recorded calls.

    While the window holds no failure and no slow call, a caller may count a
    plain success by only incrementing ``calls`` (up to ``size``): every slot
    is zero, so which slot the ring would evict does not matter, and a slot
    written later is still evicted exactly ``size`` records after it.
    """

    __slots__ = ("_i", "_ring", "calls", "failures", "size", "slow")

    def __init__(self, size: int) -> None:
        self.size = size
        self._ring: bytearray | None = None
        self._i = 0
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def record(self, failure: bool, slow: bool, now: float) -> None:
        """Add one call, evicting the oldest when full."""
        ring = self._ring
        if ring is None:
            ring = self._ring = bytearray(self.size)

        i = self._i
        if self.calls == self.size:
            old = ring[i]
            if old:
                if old & _FAILURE:
                    self.failures -= 1
                if old & _SLOW:
                    self.slow -= 1
        else:
            self.calls += 1
        code = 0
        if failure:
            code = _FAILURE
            self.failures += 1
        if slow:
            code |= _SLOW
            self.slow += 1
        ring[i] = code
        i += 1
        self._i = 0 if i == self.size else i

    def refresh(self, now: float) -> None:
        """Nothing expires by time in a count window."""

    def clear(self) -> None:
        """Forget every call."""
        self._ring = None
        self._i = self.calls = self.failures = self.slow = 0


class TimeWindow:
    """The calls recorded over the last ``duration`` seconds."""

    __slots__ = (
        "_calls",
        "_epoch",
        "_failures",
        "_n",
        "_slow",
        "_width",
        "calls",
        "failures",
        "slow",
    )

    def __init__(self, duration: float) -> None:
        self._n = max(1, min(math.ceil(duration), _MAX_BUCKETS))
        self._width = duration / self._n
        self._epoch = -1  # index of the newest bucket (in bucket-widths since 0)
        self._calls: array[int] | None = None
        self._failures: array[int] | None = None
        self._slow: array[int] | None = None
        self.calls = self.failures = self.slow = 0

    @property
    def newest_end(self) -> float:
        """When the newest bucket ends: successes counted without the lock
        (``Machine.fast``, ``Machine.hot``) that end before it are added to
        that bucket (count_newest); anything else goes through record()."""
        return (self._epoch + 1) * self._width

    def _advance(self, now: float) -> int:
        """Expire buckets older than the window; return the index of `now`'s bucket."""
        epoch = int(now // self._width)
        last = self._epoch
        if epoch == last:
            return epoch % self._n
        calls, failures, slow = self._calls, self._failures, self._slow
        assert calls is not None and failures is not None and slow is not None
        n = self._n
        if last < 0 or epoch - last >= n:
            for a in (calls, failures, slow):
                a[:] = array("l", bytes(a.itemsize * n))
            self.calls = self.failures = self.slow = 0
        elif epoch > last:
            for e in range(last + 1, epoch + 1):
                j = e % n
                self.calls -= calls[j]
                self.failures -= failures[j]
                self.slow -= slow[j]
                calls[j] = failures[j] = slow[j] = 0
        else:
            # The clock went backwards (it must not; FakeClock cannot): count
            # the call in the newest bucket rather than corrupt the totals.
            return last % n
        self._epoch = epoch
        return epoch % n

    def record(self, failure: bool, slow: bool, now: float) -> None:
        """Add one call to the bucket of ``now``."""
        if self._calls is None:
            self._calls = array("l", bytes(8 * self._n))
            self._failures = array("l", bytes(8 * self._n))
            self._slow = array("l", bytes(8 * self._n))
        epoch = int(now // self._width)
        j = epoch % self._n if epoch == self._epoch else self._advance(now)
        self._calls[j] += 1
        self.calls += 1
        if failure:
            self._failures[j] += 1  # type: ignore[index]
            self.failures += 1
        if slow:
            self._slow[j] += 1  # type: ignore[index]
            self.slow += 1

    def count_newest(self, n: int) -> None:
        """Add ``n`` successes to the newest bucket (``Machine.fold``)."""
        assert self._calls is not None
        self._calls[self._epoch % self._n] += n
        self.calls += n

    def refresh(self, now: float) -> None:
        """Expire what has aged out, so the totals describe the window at ``now``."""
        if self._calls is not None:
            self._advance(now)

    def clear(self) -> None:
        """Forget every call."""
        self._calls = self._failures = self._slow = None
        self._epoch = -1
        self.calls = self.failures = self.slow = 0


Window = CountWindow | TimeWindow
