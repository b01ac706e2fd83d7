"""The breaker's decision engine: sans-I/O, no asyncio, no locks, no clock.

Every method takes ``now`` (monotonic seconds) and returns a decision; the
caller (:class:`resilience.CircuitBreaker`) supplies the time, holds the lock,
and delivers the transitions this machine queues in ``pending``. All the rules
of the breaker live here, each in one place:

- trip rules: :meth:`Machine._after_record` (consecutive failures, error rate,
  slow-call rate, gated by ``minimum_calls``);
- the open period (backoff, cap, jitter): :meth:`Machine._open`;
- lazy OPEN -> HALF_OPEN and the half-open timeout: :meth:`Machine._catch_up`;
- half-open permits and the close/re-open decision: :meth:`Machine.admit`,
  :meth:`Machine.on_success`, :meth:`Machine.on_failure`, :meth:`Machine.on_ignored`;
- generations: every admission returns the generation it was admitted under,
  and a result from an older generation is counted in the metrics only.
"""

from __future__ import annotations

import math
import random
import sys
from array import array
from typing import NamedTuple

from ._categories import ErrorCategory
from ._config import CircuitConfig, CircuitState
from ._windows import CountWindow, TimeWindow

__all__ = (
    "FAST_NONE",
    "FAST_OPEN",
    "FAST_SETTLED",
    "FAST_TIME",
    "FAST_UNTIMED",
    "LOCK_FREE",
    "REJECTED",
    "RNG_INCREMENT",
    "RNG_MASK",
    "RNG_MULTIPLIER",
    "SAMPLE_SHIFT",
    "SAMPLE_WEIGHT",
    "Machine",
    "Transition",
)

REJECTED = -1
"""What :meth:`Machine.admit` returns instead of a generation when it rejects."""

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN
_FORCED_OPEN = CircuitState.FORCED_OPEN
_DISABLED = CircuitState.DISABLED
_METRICS_ONLY = CircuitState.METRICS_ONLY
_INF = math.inf
_NEG_INF = -math.inf
_CATEGORIES = tuple(ErrorCategory)
_CATEGORY_INDEX = {c: i for i, c in enumerate(_CATEGORIES)}

# While catching up lazily on a long idle period that alternates OPEN and a
# timed-out HALF_OPEN, transitions after this many are folded arithmetically.
_MAX_CATCH_UP = 64
# Half-open retry estimate when every probe permit is taken.
HALF_OPEN_RETRY_ESTIMATE = 1.0

# Latency histogram: two buckets per octave from 2**-20 s (about 1 us) to
# 2**12 s, so p99 is reported within about 20% in bounded memory.
_HIST_MIN_EXP = -20
_HIST_BUCKETS = 64
_SQRT_HALF = math.sqrt(0.5)
_HIST_EXACT = 1024
# Past the first _HIST_EXACT calls, latency is sampled: one call in
# SAMPLE_WEIGHT feeds the histogram (and the mean, for calls counted without
# the lock; with FAST_UNTIMED, only that call is timed at all), weighted for
# SAMPLE_WEIGHT calls. Counted calls fall in runs of SAMPLE_WEIGHT, and each
# run's sample is the call at a random place in it, drawn when the run
# before is sampled: not the first call to finish, which under concurrency
# is the fastest, and not every SAMPLE_WEIGHT-th call, which a rhythm in the
# traffic (two queries per request, one of them slow) would turn into a
# sample of one query. The draw must not be a call (it happens inside a
# lock-free step), so it is a step of a linear congruential generator kept
# in ``Machine.sample_rng`` (its top bits; period 2**30). Calls recorded
# under the lock feed the histogram by a random draw.
SAMPLE_WEIGHT = 32
SAMPLE_SHIFT = 5  # SAMPLE_WEIGHT == 1 << SAMPLE_SHIFT
RNG_MULTIPLIER = 1664525
RNG_INCREMENT = 1013904223
RNG_MASK = (1 << 30) - 1
"""``rng = (rng * RNG_MULTIPLIER + RNG_INCREMENT) & RNG_MASK``; the place in
the run is ``rng >> (30 - SAMPLE_SHIFT)``."""
_SAMPLE_P = 1.0 / SAMPLE_WEIGHT
_PLACE_SHIFT = 30 - SAMPLE_SHIFT
_sampling = random.Random()


def next_sample(count: int, rng: int) -> tuple[int, int]:
    """``(the count at which the run after ``count``'s is sampled, the new
    rng)``. The generated guards and :meth:`Machine.settled_success` inline
    these steps, which must not make a call."""
    rng = (rng * RNG_MULTIPLIER + RNG_INCREMENT) & RNG_MASK
    return ((count >> SAMPLE_SHIFT) + 1 << SAMPLE_SHIFT) + (rng >> _PLACE_SHIFT), rng


_HIST_MAX = 0xFFFFFFFF  # the histogram's counters are unsigned 32-bit

LOCK_FREE = getattr(sys, "_is_gil_enabled", lambda: True)()
"""Whether callers may count settled successes and rejections without the
lock: they rely on CPython's GIL not switching threads between a check and
the attribute writes that follow it (no call, no backward jump in between).
False on a free-threaded build, where every result takes the lock."""

# What a caller may do without the lock (``Machine.fast``); see
# ``resilience._hotpath``. Every change that can unsettle the window clears it
# to FAST_NONE *first*, before anything else it does.
FAST_OPEN = -1
"""OPEN: a call before ``open_until`` may be rejected without the lock (set
after the transition is complete; the generation is checked again after the
clock read)."""
FAST_NONE = 0
"""Every result goes through :meth:`Machine.on_success` and friends, under the lock."""
FAST_SETTLED = 1
"""CLOSED or METRICS_ONLY with a full count window of fast successes: a success
of the current generation changes nothing but counters, so it may be counted
without the lock, in ``hot`` (``resilience._hotpath``)."""
FAST_UNTIMED = 2
"""FAST_SETTLED, no rule needs durations, and the first 1,024 successes were
timed: 31 calls in 32 may skip the clock (the latency metrics sample one call
in each run of 32 admissions, at a random place in it)."""
FAST_TIME = 3
"""CLOSED or METRICS_ONLY with a time window holding no failure and no slow
call: a fast success of the current generation that ends in the newest
bucket (before ``hot_end``) only adds to that bucket's count, so it may be
counted without the lock, in ``hot``; :meth:`Machine.fold` adds it to the
bucket."""


class Transition(NamedTuple):
    """A committed state change, waiting to be delivered to listeners."""

    old: CircuitState
    new: CircuitState
    reason: str
    at: float  # monotonic time at which it took effect (a lazy one: its deadline)


def _fmt_seconds(value: float) -> str:
    return f"{value:.3g}s"


class Machine:
    """State, window and counters of one breaker."""

    __slots__ = (
        "_hist",
        "avg_latency_sum",
        "config",
        "consecutive_failures",
        "error_rate",
        "failed_calls",
        "failures_by_category",
        "fast",
        "gen",
        "half_open_inflight",
        "half_open_max",
        "half_open_since",
        "half_open_successes",
        "half_open_timeout",
        "half_open_until",
        "hot",
        "hot_end",
        "hot_folded",
        "ignored_calls",
        "last_failure_at",
        "last_failure_category",
        "minimum_calls",
        "open_base",
        "open_count",
        "open_period",
        "open_until",
        "opened_at",
        "openings",
        "pending",
        "rejected_calls",
        "rejected_retry_after",
        "sample_at",
        "sample_rng",
        "slow_call_rate",
        "slow_calls",
        "slow_threshold",
        "state",
        "state_changes",
        "successful_calls",
        "tick_at",
        "ticks",
        "timed_calls",
        "untimed_ok",
        "window",
    )

    def __init__(self, config: CircuitConfig) -> None:
        self.state = _CLOSED
        self.gen = 0
        # Admissions while FAST_UNTIMED; the one that reaches tick_at is
        # timed, and moves tick_at on to the next run's place.
        self.ticks = 0
        # Where runs are sampled (see next_sample): seeded at random when
        # the window first settles, so breakers do not all sample the same
        # calls (0 until then costs a fresh breaker no memory).
        self.sample_rng = 0
        self.pending: list[Transition] | None = None
        self.consecutive_failures = 0
        self.half_open_successes = 0
        self.half_open_inflight = 0
        self.half_open_until = _INF
        self.half_open_since = 0.0
        self.open_until = 0.0
        self.open_base = 0.0
        self.open_period = 0.0
        self.opened_at: float | None = None
        self.rejected_retry_after: float | None = None
        self.openings = 0
        self.last_failure_at: float | None = None
        self.last_failure_category: ErrorCategory | None = None
        self.window: CountWindow | TimeWindow = CountWindow(1)
        # While fast is positive, a lock-free success must end before this:
        # the end of a time window's newest bucket; infinity with a count
        # window.
        self.hot_end = _NEG_INF
        self.reset_metrics()
        self.apply_config(config, rebuild_window=True)

    # -- configuration -----------------------------------------------------

    def apply_config(self, config: CircuitConfig, *, rebuild_window: bool | None = None) -> None:
        """Adopt ``config`` keeping state and counters (the window is rebuilt
        only when its shape changes)."""
        self.fast = FAST_NONE
        self.fold()
        old = getattr(self, "config", None)
        if rebuild_window is None:
            rebuild_window = old is None or (
                old.window_size != config.window_size
                or old.window_duration != config.window_duration
            )
        self.config = config
        if rebuild_window:
            self.window = (
                TimeWindow(config.window_duration)
                if config.window_duration is not None
                else CountWindow(config.window_size)
            )
        self.error_rate = config.error_rate
        self.minimum_calls = config.effective_minimum_calls
        self.slow_threshold = (
            config.slow_call_duration if config.slow_call_duration is not None else _INF
        )
        self.slow_call_rate = config.slow_call_rate
        # Durations feed only the latency metrics: a settled window may skip
        # the clock on most calls.
        was_untimed = getattr(self, "untimed_ok", False)
        self.untimed_ok = self.slow_threshold == _INF and isinstance(self.window, CountWindow)
        if (
            was_untimed
            and not self.untimed_ok
            and (self.state is _CLOSED or self.state is _METRICS_ONLY)
        ):
            # Calls in flight may not have been timed: a new generation makes
            # their results count in the metrics only, not for the new rules.
            self.gen += 1
        self.half_open_max = config.effective_half_open_max_calls
        self.half_open_timeout = config.half_open_timeout
        if self.state is _OPEN and LOCK_FREE:
            self.fast = FAST_OPEN
        if self.state is _HALF_OPEN:
            # A new half_open_timeout applies to the HALF_OPEN under way.
            hot = config.half_open_timeout
            self.half_open_until = self.half_open_since + hot if hot is not None else _INF

    def reset_metrics(self) -> None:
        """Zero the lifetime counters reported by ``metrics()``."""
        # Successes counted without the lock (FAST_SETTLED, FAST_UNTIMED,
        # FAST_TIME): hot only grows, and it picks the calls that feed the
        # latency metrics; fold() adds what it gained since hot_folded to
        # successful_calls (and to a time window), under the lock, before
        # either is read.
        self.hot = 0
        self.hot_folded = 0
        # The hot count at which a timed lock-free success next feeds the
        # latency metrics (every one up to _HIST_EXACT, then the one at a
        # random place in the next run of SAMPLE_WEIGHT); the same for ticks.
        self.sample_at = 0
        self.tick_at = 0
        self.successful_calls = 0
        self.failed_calls = 0
        self.ignored_calls = 0
        self.rejected_calls = 0
        self.slow_calls = 0
        self.open_count = 0
        self.state_changes = 0
        self.failures_by_category: list[int] | None = None
        self.avg_latency_sum = 0.0
        self.timed_calls = 0
        self._hist: array[int] | None = None

    # -- admission ---------------------------------------------------------

    def admit(self, now: float) -> int:
        """Admit a call at ``now``: its generation, or :data:`REJECTED`, in
        which case ``rejected_retry_after`` holds what the caller should wait."""
        s = self.state
        if s is _CLOSED or s is _METRICS_ONLY or s is _DISABLED:
            return self.gen
        if s is _OPEN:
            if now < self.open_until:
                self.rejected_calls += 1
                self.rejected_retry_after = self.open_until - now
                return REJECTED
            self._catch_up(now)
            s = self.state
        elif s is _HALF_OPEN and now >= self.half_open_until:
            self._catch_up(now)
            s = self.state
        if s is _HALF_OPEN and self.half_open_inflight < self.half_open_max:
            self.half_open_inflight += 1
            return self.gen
        self.rejected_calls += 1
        self.rejected_retry_after = self.retry_after(now)
        return REJECTED

    def retry_after(self, now: float) -> float | None:
        """Seconds until a call may be admitted (0.0 when one would be now)."""
        s = self.state
        if s is _OPEN:
            return max(0.0, self.open_until - now)
        if s is _HALF_OPEN:
            if self.half_open_inflight < self.half_open_max:
                return 0.0
            return max(0.0, min(HALF_OPEN_RETRY_ESTIMATE, self.half_open_until - now))
        if s is _FORCED_OPEN:
            return None
        return 0.0

    def would_admit(self, now: float) -> bool:
        """Whether :meth:`admit` would admit a call at ``now`` (admits nothing)."""
        s = self.current_state(now)
        if s is _HALF_OPEN:
            return self.half_open_inflight < self.half_open_max
        return s is _CLOSED or s is _METRICS_ONLY or s is _DISABLED

    def current_state(self, now: float) -> CircuitState:
        """The state at ``now``, after any lazy transition that is due."""
        s = self.state
        if (s is _OPEN and now >= self.open_until) or (
            s is _HALF_OPEN and now >= self.half_open_until
        ):
            self._catch_up(now)
        return self.state

    # -- results -----------------------------------------------------------

    def _observe(self, n: int, duration: float | None) -> bool:
        """Add the ``n``-th finished call's latency to the metrics; return
        whether it was slow. ``None``: the call was not timed."""
        if duration is None:
            return False
        self._latency(n, duration, 1)
        if duration >= self.slow_threshold:
            self.slow_calls += 1
            return True
        return False

    def _latency(self, n: int, duration: float, weight: int) -> None:
        """Add the latency of the ``n``-th finished call, timed as one of
        ``weight`` calls (1: every call is timed; SAMPLE_WEIGHT: a sample)."""
        self.timed_calls += weight
        self.avg_latency_sum += duration * weight
        self._hist_sample(n, duration, weight)

    def _hist_sample(self, n: int, duration: float, weight: int) -> None:
        # The histogram (for p99) sees every call at first, then one in 32
        # at random, weighted to stand for the 32: bucketing costs more than
        # the rest of the success path. A call timed as a sample always goes in.
        if weight != 1:
            self._hist_add(duration, weight)
        elif n <= _HIST_EXACT:
            self._hist_add(duration, 1)
        elif _sampling.random() < _SAMPLE_P:
            self._hist_add(duration, SAMPLE_WEIGHT)

    def _hist_add(self, duration: float, weight: int, hist: array[int] | None = None) -> None:
        """Count ``weight`` calls of ``duration`` in ``hist`` (default: the
        breaker's histogram, created on first use)."""
        if hist is None:
            hist = self._hist
            if hist is None:
                hist = self._hist = array("I", bytes(4 * _HIST_BUCKETS))
        i = 0
        if duration > 0.0:
            m, e = math.frexp(duration)
            i = (e - _HIST_MIN_EXP) * 2 + (m >= _SQRT_HALF)
            if i < 0:
                i = 0
            elif i >= _HIST_BUCKETS:
                i = _HIST_BUCKETS - 1
        if hist[i] > _HIST_MAX - weight:
            # Halve every bucket rather than overflow: the shape (and so every
            # quantile) is kept, and latency_histogram() rescales the counts.
            for j in range(_HIST_BUCKETS):
                hist[j] >>= 1
        hist[i] += weight

    def settled_success(self, gen: int, duration: float) -> bool:
        """Count, without the lock (in ``hot``), a success admitted under
        ``gen`` that took ``duration`` s, if the count window is settled
        (FAST_SETTLED or FAST_UNTIMED) and the call was fast; ``False``:
        record it under the lock instead. The generated guards
        (``resilience._hotpath``) inline these same steps.

        No call and no backward jump lies between the check and the counter
        writes, so the GIL cannot hand the thread over in between.
        """
        f = self.fast
        if 0 < f < FAST_TIME and gen == self.gen and duration < self.slow_threshold:
            n = self.hot + 1
            self.hot = n
            if f == FAST_UNTIMED:
                # The run of admissions the generated guards sample from: a
                # call timed anyway takes its turn there, not on hot.
                k = self.ticks + 1
                self.ticks = k
                if k >= self.tick_at:
                    x = (self.sample_rng * RNG_MULTIPLIER + RNG_INCREMENT) & RNG_MASK
                    self.sample_rng = x
                    self.tick_at = ((k >> SAMPLE_SHIFT) + 1 << SAMPLE_SHIFT) + (x >> _PLACE_SHIFT)
                    self.settled_sample(gen, n, duration, 1)
            elif n >= self.sample_at:
                if n < _HIST_EXACT:
                    self.sample_at = n + 1
                else:
                    x = (self.sample_rng * RNG_MULTIPLIER + RNG_INCREMENT) & RNG_MASK
                    self.sample_rng = x
                    self.sample_at = ((n >> SAMPLE_SHIFT) + 1 << SAMPLE_SHIFT) + (x >> _PLACE_SHIFT)
                self.settled_sample(gen, n, duration, 0)
            return True
        return False

    def settled_sample(self, gen: int, n: int, duration: float, forced: int) -> None:
        """The latency part of a success admitted under ``gen`` that a caller
        timed and counted without the lock as the ``n``-th in ``hot``, picked
        because ``n`` reached ``sample_at`` or at admission (``forced``); the
        caller has moved ``sample_at`` or ``tick_at`` on (see
        ``resilience._hotpath``). Once 1,024 successes have been timed, allow
        FAST_UNTIMED.

        ``forced`` 0: a call of a run that times every call; the first 1,023
        are all taken, at weight 1, then one in each run of 32, at weight 32.
        ``forced`` 1: the call an untimed run picked at admission
        (``tick_at``), which stands for 32 calls.
        """
        if gen != self.gen:
            return  # a transition or a reset since: not these metrics' call
        # No call from the generation check to _hist_add, so no other
        # thread's reset can land in between; the histogram is read here, so
        # that a reset during _hist_add leaves this sample in the old one.
        hist = self._hist
        weight = 1 if not forced and n < _HIST_EXACT else SAMPLE_WEIGHT
        self.timed_calls += weight
        self.avg_latency_sum += duration * weight
        if (
            self.fast == FAST_SETTLED
            and self.untimed_ok
            and self.successful_calls + n - self.hot_folded >= _HIST_EXACT
        ):
            self.fast = FAST_UNTIMED
        self._hist_add(duration, weight, hist)

    def fold(self) -> None:
        """Add the successes counted without the lock since the last fold to
        ``successful_calls`` and, with a time window (FAST_TIME), to its
        newest bucket: under the lock, before either is read or the window
        changes (a count window is full of successes while they are counted,
        so it has nothing to add)."""
        hot = self.hot
        n = hot - self.hot_folded
        if n:
            self.hot_folded = hot
            self.successful_calls += n
            w = self.window
            if isinstance(w, TimeWindow):
                w.count_newest(n)

    def refresh_window(self, now: float) -> CountWindow | TimeWindow:
        """The window, describing the calls of the window at ``now``."""
        self.fold()
        w = self.window
        w.refresh(now)
        return w

    def _let_in(self, fast: int, hot_end: float) -> None:
        """Let lock-free successes in (``fast``) that end before ``hot_end``;
        the first time, seed where this breaker samples (see next_sample)."""
        if not self.sample_rng:
            self.sample_rng = _sampling.getrandbits(30)
        self.hot_end = hot_end
        self.fast = fast

    def _settle(self, n: int) -> int:
        if not LOCK_FREE:
            return FAST_NONE
        return FAST_UNTIMED if self.untimed_ok and n >= _HIST_EXACT else FAST_SETTLED

    def on_success(self, gen: int, now: float, duration: float | None, weight: int = 1) -> None:
        """Record a call admitted under ``gen`` that succeeded after ``duration``
        seconds (``None``: not timed), timed as one of ``weight`` calls."""
        if self.hot != self.hot_folded:
            self.fold()
        n = self.successful_calls + 1
        self.successful_calls = n
        if weight != 1 and gen != self.gen:
            weight = 1  # a sample from before a transition or reset: just itself
        if duration is None:
            slow = False
        else:
            self._latency(n, duration, weight)
            slow = duration >= self.slow_threshold
            if slow:
                self.slow_calls += 1
        if not slow and gen == self.gen and 0 < self.fast < FAST_TIME:
            # One more plain success in a settled count window changes nothing.
            self.consecutive_failures = 0
            if n >= _HIST_EXACT and self.untimed_ok:
                self.fast = FAST_UNTIMED
            return
        if gen != self.gen:
            return
        s = self.state
        if s is _CLOSED or s is _METRICS_ONLY:
            self.consecutive_failures = 0
            w = self.window
            if slow:
                self.fast = FAST_NONE
            w.record(False, slow, now)
            if w.failures or w.slow:
                # The ring holds a non-zero slot, and a success can still trip:
                # it may bring the window up to minimum_calls.
                self.fast = FAST_NONE
                self._after_record(now)
            elif isinstance(w, CountWindow):
                if w.calls == w.size:
                    # Any end: a count window has no buckets.
                    self._let_in(self._settle(n), _INF)
            elif LOCK_FREE:
                self._let_in(FAST_TIME, w.newest_end)
        elif s is _HALF_OPEN:
            if now >= self.half_open_until:
                self._catch_up(now)
                return
            self.half_open_inflight -= 1
            if slow:
                # A probe must be fast as well as successful, or a slow
                # dependency would close the circuit only to trip it again.
                assert duration is not None
                self._open(now, f"slow probe ({_fmt_seconds(duration)})")
                return
            self.half_open_successes += 1
            if self.half_open_successes >= self.config.success_threshold:
                self._close(now, f"{self.half_open_successes} successful probes")

    def on_failure(
        self,
        gen: int,
        now: float,
        duration: float | None,
        category: ErrorCategory,
        trip: bool = False,
    ) -> None:
        """Record a failure of ``category``; ``trip`` opens the circuit at once."""
        if gen == self.gen:
            self.fast = FAST_NONE  # first: lock-free callers must see it at once
        if self.hot != self.hot_folded:
            self.fold()
        self.failed_calls += 1
        by_cat = self.failures_by_category
        if by_cat is None:
            by_cat = self.failures_by_category = [0] * len(_CATEGORIES)
        by_cat[_CATEGORY_INDEX[category]] += 1
        self.last_failure_at = now
        self.last_failure_category = category
        slow = self._observe(self.successful_calls + self.failed_calls, duration)
        if gen != self.gen:
            return
        s = self.state
        if s is _CLOSED or s is _METRICS_ONLY:
            self.consecutive_failures += 1
            self.window.record(True, slow, now)
            if trip and s is _CLOSED:
                self._open(now, f"{category.value} trips the circuit at once")
            else:
                self._after_record(now)
        elif s is _HALF_OPEN:
            if now >= self.half_open_until:
                self._catch_up(now)
                return
            self.half_open_inflight -= 1
            self._open(now, f"probe failed with {category.value}")

    def on_ignored(self, gen: int, now: float, duration: float | None) -> None:
        """Record a call whose outcome does not count; its probe permit is returned."""
        self.ignored_calls += 1
        if gen == self.gen and self.state is _HALF_OPEN:
            if now >= self.half_open_until:
                self._catch_up(now)
            else:
                self.half_open_inflight -= 1

    def _after_record(self, now: float) -> None:
        w = self.window
        if self.state is not _CLOSED:
            return  # METRICS_ONLY records and reports, never trips
        n = self.consecutive_failures
        if n >= self.config.failure_threshold:
            self._open(now, f"{n} consecutive failures")
            return
        calls = w.calls
        if calls < self.minimum_calls:
            return
        rate = self.error_rate
        if rate is not None and w.failures / calls >= rate:
            self._open(now, f"error rate {w.failures / calls:.2f} >= {rate:.2f} over {calls} calls")
        elif self.slow_threshold != _INF and w.slow / calls >= self.slow_call_rate:
            self._open(
                now,
                f"slow-call rate {w.slow / calls:.2f} >= {self.slow_call_rate:.2f} "
                f"over {calls} calls",
            )

    # -- transitions -------------------------------------------------------

    def _set(self, new: CircuitState, reason: str, at: float) -> None:
        self.fast = FAST_NONE
        t = Transition(self.state, new, reason, at)
        if self.pending is None:
            self.pending = [t]
        else:
            self.pending.append(t)
        self.state = new
        self.gen += 1
        self.state_changes += 1
        if new is _OPEN and LOCK_FREE:
            self.fast = FAST_OPEN

    def _open(self, at: float, reason: str) -> None:
        cfg = self.config
        self.openings += 1
        if self.openings == 1:
            base = cfg.recovery_timeout
        else:
            # Multiply the previous (capped) base: never overflows, however
            # long the outage.
            base = min(self.open_base * cfg.recovery_backoff, cfg.effective_max_recovery_timeout)
        self.open_base = base
        jitter = cfg.jitter
        period = base * (1.0 - jitter + 2.0 * jitter * random.random()) if jitter else base
        self.open_period = period
        self.open_until = at + period
        self.opened_at = at
        self.half_open_until = _INF
        self.half_open_inflight = 0
        self.half_open_successes = 0
        self.open_count += 1
        self._set(_OPEN, reason, at)

    def _half_open(self, at: float, reason: str) -> None:
        self.half_open_inflight = 0
        self.half_open_successes = 0
        hot = self.half_open_timeout
        self.half_open_since = at
        self.half_open_until = at + hot if hot is not None else _INF
        self._set(_HALF_OPEN, reason, at)

    def _close(self, at: float, reason: str) -> None:
        self.fast = FAST_NONE
        self.fold()
        self.window.clear()
        self.consecutive_failures = 0
        self.half_open_successes = 0
        self.half_open_inflight = 0
        self.half_open_until = _INF
        self.openings = 0
        self.opened_at = None
        self._set(_CLOSED, reason, at)

    def _catch_up(self, now: float) -> None:
        """Apply, at their deadlines, the lazy transitions due by ``now``."""
        steps = 0
        while True:
            s = self.state
            if s is _OPEN and now >= self.open_until:
                self._half_open(
                    self.open_until, f"open for {_fmt_seconds(self.open_period)}; probing"
                )
            elif s is _HALF_OPEN and now >= self.half_open_until:
                assert self.half_open_timeout is not None
                self._open(
                    self.half_open_until,
                    f"half-open undecided after {_fmt_seconds(self.half_open_timeout)}",
                )
            else:
                return
            steps += 1
            if steps >= _MAX_CATCH_UP and self.state is _OPEN:
                # Fold whole idle OPEN/HALF_OPEN cycles (at the current open
                # period) instead of replaying each one.
                assert self.half_open_timeout is not None
                cycle = self.open_period + self.half_open_timeout
                skipped = int((now - self.open_until) // cycle)
                if skipped > 0:
                    shift = skipped * cycle
                    self.open_until += shift
                    self.opened_at = self.open_until - self.open_period
                    self.openings += skipped
                    self.open_count += skipped
                    self.state_changes += 2 * skipped

    def transition_to(self, state: CircuitState, reason: str, now: float) -> None:
        """Move to ``state`` by hand (any state, including the current one)."""
        state = CircuitState(state)
        if state is _OPEN:
            self._open(now, reason)
        elif state is _HALF_OPEN:
            self._half_open(now, reason)
        elif state is _CLOSED:
            self._close(now, reason)
        else:
            self.half_open_inflight = 0
            self.half_open_until = _INF
            self._set(state, reason, now)

    def extend_open(self, now: float, seconds: float) -> float | None:
        """Keep an OPEN circuit open until at least ``now + seconds``, but not
        past ``opened_at + max_recovery_timeout``; never shortens the period.
        Returns the seconds left open, or ``None`` when not OPEN (a due
        OPEN -> HALF_OPEN move is applied first)."""
        if self.current_state(now) is not _OPEN:
            return None
        assert self.opened_at is not None
        cap = self.opened_at + self.config.effective_max_recovery_timeout
        until = min(now + seconds, cap)
        if until > self.open_until:
            # Lock-free rejections read open_until: a later deadline only
            # rejects more, so no FAST_NONE round is needed.
            self.open_until = until
            self.open_period = until - self.opened_at
        return self.open_until - now

    def reset(self, now: float, reason: str) -> None:
        """Back to a fresh CLOSED breaker: window, counters and metrics cleared."""
        old = self.state
        self._close(now, reason)
        if old is _CLOSED:
            # Nothing changed for listeners; the new generation still drops
            # results of calls admitted before the reset.
            assert self.pending is not None
            self.pending.pop()
        self.last_failure_at = None
        self.last_failure_category = None
        self.reset_metrics()

    # -- reporting ---------------------------------------------------------

    @property
    def total_calls(self) -> int:
        """Admitted calls that have finished (after :meth:`fold`)."""
        return self.successful_calls + self.failed_calls + self.ignored_calls

    def failures_by_category_dict(self) -> dict[str, int]:
        """Failures per category value (categories never seen are left out)."""
        counts = self.failures_by_category or ()
        return {c.value: n for c, n in zip(_CATEGORIES, counts, strict=False) if n}

    def latency_histogram(self) -> list[tuple[float, int]]:
        """``(upper bound in seconds, calls)`` per bucket, scaled from the
        sample to every finished (non-ignored) call; empty before any call."""
        hist = self._hist
        if hist is None:
            return []
        sampled = sum(hist)
        finished = self.successful_calls + self.failed_calls
        scale = finished / sampled if sampled else 0.0
        return [
            (float(2.0 ** (_HIST_MIN_EXP - 0.5 + i / 2)), round(count * scale))
            for i, count in enumerate(hist)
        ]

    def latency_quantile(self, q: float) -> float | None:
        """The latency below which ``q`` of finished calls fell, in seconds."""
        hist = self._hist
        total = sum(hist) if hist is not None else 0
        if not total:
            return None
        assert hist is not None
        rank = q * total
        seen = 0
        for i, count in enumerate(hist):
            seen += count
            if seen >= rank:
                # Geometric middle of the bucket [2**lo, 2**hi).
                lo = _HIST_MIN_EXP - 1 + i / 2
                return float(2.0 ** (lo + 0.25))
        return None  # pragma: no cover - unreachable: seen ends at total
