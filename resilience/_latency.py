"""Latency statistics of one breaker: mean, histogram, and which calls feed them.

Bounded memory: a histogram of two buckets per octave from 2**-20 s (about
1 us) to 2**12 s, so p99 is reported within about 20%.

Which calls are timed and counted (the sampling rule, in one place):

- a call recorded under the breaker's lock (anything but a settled success)
  feeds the mean itself; the histogram, every one of the first :data:`EXACT`,
  then one in 32 drawn at random, weighted for 32 (:meth:`Latency.add_locked`);
- lock-free successes (``resilience._guard``) are counted in runs
  (``Machine.lockfree_step``), and one call stands for each run, weighted for
  the run's length: the first :data:`EXACT` runs are one call long; after
  that, each run's length is drawn at random, 128 to 255 calls (:data:`RUN`,
  about 192, on average; :func:`next_run`): not every n-th call, which a rhythm in
  the traffic (two queries per request, one slow) would turn into a sample of
  one query. When every call is timed anyway (a slow-call rule, a time
  window), the call that ends a run is its sample. When no rule needs
  durations, no call reads the clock but the sample, which is the 1st to
  64th admission after the run ends (:data:`SKIP`; :func:`next_skip`): not
  the first call to finish, which under concurrency is the fastest, and not
  the first to start after it, which with queries gathered in batches is
  always the batch's first.
"""

from __future__ import annotations

import math
import random
from array import array
from bisect import bisect_right as _bisect

__all__ = (
    "EXACT",
    "RUN",
    "RUN_MAX",
    "RUN_MIN",
    "SAMPLE_WEIGHT",
    "SKIP",
    "Latency",
    "next_run",
    "next_skip",
)

EXACT = 1024
"""Lock-free successes timed one by one before sampling starts."""
SAMPLE_WEIGHT = 32
"""Past :data:`EXACT`, one call in this many recorded under the lock feeds
the histogram."""
RUN_MIN = 128
RUN_MAX = 255
"""Past :data:`EXACT`, runs of lock-free successes are RUN_MIN to RUN_MAX
calls long (drawn), each with one latency sample; the count down of a run
stays within CPython's cached small integers."""
RUN = (RUN_MIN + RUN_MAX + 1) // 2
"""The average run: one lock-free success in this many is sampled."""
_RUN_BITS = 7  # RUN_MAX - RUN_MIN + 1 == 1 << _RUN_BITS
SKIP = 64
"""When no rule needs durations, a run's sample is one of the first this many
admissions after the run ends (drawn)."""
_SKIP_BITS = 6  # SKIP == 1 << _SKIP_BITS
_SAMPLE_P = 1.0 / SAMPLE_WEIGHT

_MIN_EXP = -20
_BUCKETS = 64
_SQRT_HALF = math.sqrt(0.5)
_MAX_COUNT = 0xFFFFFFFF  # the buckets are unsigned 32-bit
# Bucket i (i >= 1) holds durations from 2**(_MIN_EXP - 1 + i/2) up: two
# buckets per octave, the odd ones starting at sqrt(0.5) times a power of two
# (exactly: ldexp scales without rounding). Bucket 0 holds everything shorter.
_LOWER = [math.ldexp(_SQRT_HALF if i % 2 else 0.5, _MIN_EXP + i // 2) for i in range(1, _BUCKETS)]


def next_run(counted: int, rng: random.Random) -> int:
    """The length of the run of lock-free successes after ``counted`` of them."""
    if counted < EXACT:
        return 1
    return RUN_MIN + rng.getrandbits(_RUN_BITS)


def next_skip(rng: random.Random) -> int:
    """Which admission after an untimed run ends is the run's sample (1 to 64)."""
    return 1 + rng.getrandbits(_SKIP_BITS)


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
        i = _bisect(_LOWER, duration)
        count = hist[i] + weight
        if count > _MAX_COUNT:
            # Halve every bucket rather than overflow: the shape (and so every
            # quantile) is kept, and histogram() rescales the counts.
            for j in range(_BUCKETS):
                hist[j] >>= 1
            count = hist[i] + weight
        hist[i] = count

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
