"""Latency statistics of one breaker: mean, histogram, and which calls feed them.

Bounded memory: a histogram of two buckets per octave from 2**-20 s (about
1 us) to 2**12 s, so p99 is reported within about 20%.

Which calls are timed and counted (the sampling rule, in one place):

- a call recorded under the breaker's lock (anything but a settled success)
  feeds the mean itself; the histogram, every one of the first :data:`EXACT`,
  then one in 32 drawn at random, weighted for 32 (:meth:`Latency.add_locked`);
- lock-free successes (``resilience._guard``) are counted in runs: every one
  of the first :data:`EXACT` feeds them at weight 1; after that, one call in
  each run of :data:`SAMPLE_WEIGHT` does, weighted to stand for the run. The
  sampled call sits at a random place in its run, drawn (from the breaker's
  ``rng``) when the run before it is sampled: not every 32nd call, which a
  rhythm in the traffic (two queries per request, one slow) would turn into a
  sample of one query, and not the first call to finish, which under
  concurrency is the fastest. :func:`next_place` is that draw.
"""

from __future__ import annotations

import math
import random
from array import array

__all__ = ("EXACT", "SAMPLE_WEIGHT", "Latency", "next_place")

EXACT = 1024
"""Lock-free successes timed one by one before sampling starts."""
SAMPLE_WEIGHT = 32
"""Past :data:`EXACT`, one lock-free success in each run of this many is sampled."""
_SHIFT = 5  # SAMPLE_WEIGHT == 1 << _SHIFT
_SAMPLE_P = 1.0 / SAMPLE_WEIGHT

_MIN_EXP = -20
_BUCKETS = 64
_SQRT_HALF = math.sqrt(0.5)
_MAX_COUNT = 0xFFFFFFFF  # the buckets are unsigned 32-bit


def next_place(count: int, rng: random.Random) -> int:
    """The count at which the run after ``count``'s run is sampled: a random
    place in that run."""
    return ((count >> _SHIFT) + 1 << _SHIFT) + rng.getrandbits(_SHIFT)


class Latency:
    """Mean and histogram of call durations (seconds), with weights."""

    __slots__ = ("_hist", "timed", "total")

    def __init__(self) -> None:
        self._hist: array[int] | None = None  # allocated on first use
        self.timed = 0  # calls the mean stands for
        self.total = 0.0  # their summed duration

    def reset(self) -> None:
        """Forget every call."""
        self._hist = None
        self.timed = 0
        self.total = 0.0

    def add(self, duration: float, weight: int = 1) -> None:
        """Count ``weight`` calls that took ``duration`` seconds."""
        self.timed += weight
        self.total += duration * weight
        self.bucket(duration, weight)

    def add_locked(self, duration: float, rng: random.Random) -> None:
        """Count one call recorded under the lock: in the mean always; in the
        histogram (bucketing costs more than the rest of a locked success)
        every one of the first :data:`EXACT`, then one in 32 drawn at
        random, weighted for 32."""
        self.timed += 1
        self.total += duration
        if self.timed <= EXACT:
            self.bucket(duration, 1)
        elif rng.random() < _SAMPLE_P:
            self.bucket(duration, SAMPLE_WEIGHT)

    def bucket(self, duration: float, weight: int) -> None:
        """Count ``weight`` calls of ``duration`` in the histogram only."""
        hist = self._hist
        if hist is None:
            hist = self._hist = array("I", bytes(4 * _BUCKETS))
        i = 0
        if duration > 0.0:
            mantissa, exp = math.frexp(duration)
            i = min(max((exp - _MIN_EXP) * 2 + (mantissa >= _SQRT_HALF), 0), _BUCKETS - 1)
        if hist[i] > _MAX_COUNT - weight:
            # Halve every bucket rather than overflow: the shape (and so every
            # quantile) is kept, and histogram() rescales the counts.
            for j in range(_BUCKETS):
                hist[j] >>= 1
        hist[i] += weight

    @property
    def mean(self) -> float | None:
        """Mean duration in seconds, or ``None`` before any timed call."""
        return self.total / self.timed if self.timed else None

    def quantile(self, q: float) -> float | None:
        """The duration below which ``q`` of the counted calls fell (seconds)."""
        hist = self._hist
        total = sum(hist) if hist is not None else 0
        if hist is None or not total:
            return None
        rank = q * total
        seen = 0
        for i, count in enumerate(hist):
            seen += count
            if seen >= rank:
                # Geometric middle of the bucket [2**lo, 2**hi).
                return float(2.0 ** (_MIN_EXP - 1 + i / 2 + 0.25))
        return None  # pragma: no cover - unreachable: seen ends at total

    def histogram(self, finished: int) -> list[tuple[float, int]]:
        """``(upper bound in seconds, calls)`` per bucket, scaled so the counts
        add up to ``finished`` calls; empty before any call."""
        hist = self._hist
        if hist is None:
            return []
        sampled = sum(hist)
        scale = finished / sampled if sampled else 0.0
        return [
            (float(2.0 ** (_MIN_EXP - 0.5 + i / 2)), round(count * scale))
            for i, count in enumerate(hist)
        ]
