"""The breaker's rules: sans-I/O, no asyncio, no locks, no clock.

Every method takes ``now`` (monotonic seconds) and returns a decision; the
caller (:class:`resilience.CircuitBreaker`) supplies the time, holds the lock,
and delivers the transitions this machine queues in ``pending``. Each rule
lives in one place:

- trip rules (consecutive failures, error rate, slow-call rate, gated by
  ``minimum_calls``): :meth:`Machine._after_record`;
- the open period (backoff, cap, jitter): :meth:`Machine._open`;
- the lazy moves (OPEN -> HALF_OPEN at the deadline; HALF_OPEN -> OPEN when
  the first probe's ``half_open_timeout`` runs out): :meth:`Machine._catch_up`;
- half-open permits and the close/re-open decision: :meth:`Machine.admit`,
  :meth:`Machine.on_success`, :meth:`Machine.on_failure`, :meth:`Machine.on_ignored`;
- generations: every admission returns the generation it was admitted under,
  and a result from an older generation is counted in the metrics only;
- which calls may be counted without the lock: :meth:`Machine._open_lane`.

Latency statistics live in ``resilience._latency``; the lock-free side of
the hot path (what a caller may do without the lock while ``lane`` says so)
in ``resilience._guard``.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable
from typing import NamedTuple

from ._config import CircuitConfig
from ._latency import EXACT, Latency, next_run, next_skip
from ._states import CircuitState, ErrorCategory
from ._windows import CountWindow, TimeWindow

__all__ = (
    "HALF_OPEN_RETRY_ESTIMATE",
    "LANE_LOCKED",
    "LANE_OPEN",
    "LANE_TIMED",
    "LANE_UNTIMED",
    "LOCK_FREE",
    "LaneToken",
    "REJECTED",
    "Machine",
    "Transition",
)

REJECTED = -1
"""What :meth:`Machine.admit` returns instead of a generation when it rejects."""

HALF_OPEN_RETRY_ESTIMATE = 1.0
"""Seconds a caller rejected in HALF_OPEN (every permit taken) is told to wait."""

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN
_FORCED_OPEN = CircuitState.FORCED_OPEN
_DISABLED = CircuitState.DISABLED
_METRICS_ONLY = CircuitState.METRICS_ONLY
_INF = math.inf
_CATEGORIES = tuple(ErrorCategory)
_CATEGORY_INDEX = {c: i for i, c in enumerate(_CATEGORIES)}

_SHARED_RNG = random.Random()

LOCK_FREE = getattr(sys, "_is_gil_enabled", lambda: True)()
"""Whether callers may count settled successes and rejections without the
lock: they rely on CPython's GIL not switching threads between a check and
the attribute writes that follow it (no call, no backward jump in between).
False on a free-threaded build, where every result takes the lock."""

# ``Machine.lane``: what a caller may do without the lock (with the lane's
# token, ``Machine.valid``, see LaneToken). Every change that can unsettle the
# window closes the lane (``Machine._close_lane``) *first*, before anything
# else it does.
LANE_OPEN = -1
"""OPEN: a call before ``open_until`` may be rejected without the lock (set
once the transition is complete; callers check the generation again after
reading the clock)."""
LANE_LOCKED = 0
"""Every admission and result goes through the breaker's locked methods."""
LANE_TIMED = 1
"""CLOSED or METRICS_ONLY with a clean window (a full count window of fast
successes, or a time window with no failure and no slow call): a fast
success admitted under the lane's token that ends before ``lockfree_until``
changes nothing but counters, so it is counted down in ``left``."""
LANE_UNTIMED = 2
"""LANE_TIMED, no rule needs durations, and 1,024 successes were timed: only
one admission in each run (128 to 255 calls) reads the clock, the latency
sample."""


class LaneToken:
    """One opening of the lock-free lane.

    A caller reads the token before its call (``Machine.fast``: the untimed
    lane with no latency sample due; else ``Machine.valid``) and, after it,
    counts its success without the lock only if ``Machine.valid`` is still
    that very token: one load and one identity test say that neither the
    generation nor the lane changed meanwhile. Closing the lane drops the
    token; opening it again makes a new one.
    """

    __slots__ = ("gen", "timed")

    def __init__(self, gen: int, timed: bool) -> None:
        self.gen = gen  # the generation the lane's calls are admitted under
        self.timed = timed  # LANE_TIMED: every call reads the clock twice


class Transition(NamedTuple):
    """A committed state change, waiting to be delivered to listeners."""

    old: CircuitState
    new: CircuitState
    reason: str
    at: float  # monotonic time at which it took effect (a lazy one: its deadline)
    remote: bool = False  # made elsewhere in the fleet: not published again


PROBE_RECHECK = 0.1
"""Seconds an OPEN breaker whose store says another process probes waits
before asking again (rejecting meanwhile, without the lock)."""


def _fmt_seconds(value: float) -> str:
    return f"{value:.3g}s"


class Machine:
    """State, window and counters of one breaker."""

    __slots__ = (
        "config",
        "consecutive_failures",
        "consecutive_openings",
        "error_rate",
        "failed_calls",
        "failures_by_category",
        "fast",
        "gen",
        "half_open_inflight",
        "half_open_max",
        "half_open_successes",
        "half_open_timeout",
        "half_open_until",
        "ignored_calls",
        "issued",
        "lane",
        "last_failure_at",
        "last_failure_category",
        "latency",
        "left",
        "lockfree_folded",
        "lockfree_until",
        "minimum_calls",
        "nested",
        "open_base",
        "open_count",
        "open_period",
        "open_until",
        "opened_at",
        "pending",
        "probe_gate",
        "probe_since",
        "rejected_calls",
        "rejected_retry_after",
        "rng",
        "run",
        "skip",
        "slow_call_rate",
        "slow_calls",
        "slow_threshold",
        "state",
        "state_changes",
        "successful_calls",
        "unsampled",
        "untimed_ok",
        "valid",
        "window",
    )

    def __init__(self, config: CircuitConfig, rng: random.Random | None = None) -> None:
        self.state = _CLOSED
        self.gen = 0
        self.lane = LANE_LOCKED
        self.valid: LaneToken | None = None  # the open lane's token
        self.fast: LaneToken | None = None  # the same, in the untimed lane with no sample due
        # A Random holds 2.5 KB of state: breakers share one unless given theirs.
        self.rng = rng if rng is not None else _SHARED_RNG
        self.pending: list[Transition] | None = None
        # Set by a shared store: whether this process may probe when an open
        # period ends (None: always, the local default).
        self.probe_gate: Callable[[], bool] | None = None
        self.consecutive_failures = 0
        self.consecutive_openings = 0  # openings since the last close (backoff)
        self.half_open_successes = 0
        self.half_open_inflight = 0
        # Set when the first probe of a HALF_OPEN is admitted; the HALF_OPEN
        # must be decided by probe_since + half_open_timeout.
        self.probe_since: float | None = None
        self.half_open_until = _INF
        self.open_until = 0.0
        self.open_base = 0.0
        self.open_period = 0.0
        self.opened_at: float | None = None
        self.rejected_retry_after: float | None = None
        self.last_failure_at: float | None = None
        self.last_failure_category: ErrorCategory | None = None
        self.window: CountWindow | TimeWindow = CountWindow(1)
        self.lockfree_until = -_INF
        # Set once a call nested in another call of this breaker is seen:
        # from then on every call takes the lock, where nesting is exact.
        self.nested = False
        self.latency: Latency | None = None  # made on the first timed call
        self.reset_metrics()
        self.apply_config(config, rebuild_window=True)

    # -- configuration -----------------------------------------------------

    def apply_config(self, config: CircuitConfig, *, rebuild_window: bool | None = None) -> None:
        """Adopt ``config`` keeping state and counters (the window is rebuilt
        only when its shape changes)."""
        self._close_lane()
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
        was_untimed = getattr(self, "untimed_ok", False)
        self.untimed_ok = self.slow_threshold == _INF and isinstance(self.window, CountWindow)
        if was_untimed and not self.untimed_ok:
            # Calls in flight may not have been timed: a new generation counts
            # their results in the metrics only, not for the new rules.
            self.gen += 1
        self.half_open_max = config.effective_half_open_max_calls
        self.half_open_timeout = config.half_open_timeout
        if self.state is _HALF_OPEN and self.probe_since is not None:
            # A new half_open_timeout applies to the HALF_OPEN under way.
            hot = config.half_open_timeout
            self.half_open_until = self.probe_since + hot if hot is not None else _INF
        if self.state is _OPEN and LOCK_FREE:
            self.lane = LANE_OPEN

    def reset_metrics(self) -> None:
        """Zero the lifetime counters reported by ``metrics()``."""
        # Successes counted without the lock count ``left`` down, in runs
        # (see lockfree_step); ``issued`` is what the runs so far add up to,
        # so ``issued - left`` successes were counted. fold() adds what that
        # gained since ``lockfree_folded`` to successful_calls (and to a time
        # window), under the lock, before either is read.
        self.run = 1
        self.issued = 1
        self.left = 1
        self.lockfree_folded = 0
        self.skip = 0  # LANE_UNTIMED, a run over: admissions to its sample
        self.unsampled = 0  # lock-free calls the next latency sample stands for
        self.successful_calls = 0
        self.failed_calls = 0
        self.ignored_calls = 0
        self.rejected_calls = 0
        self.slow_calls = 0
        self.open_count = 0
        self.state_changes = 0
        self.failures_by_category: list[int] | None = None
        self.latency = None

    # -- admission ---------------------------------------------------------

    def admit(self, now: float) -> int:
        """Admit a call at ``now``: its generation, or :data:`REJECTED`, in
        which case ``rejected_retry_after`` holds what the caller should wait."""
        s = self.state
        if s is _CLOSED or s is _METRICS_ONLY or s is _DISABLED:
            return self.gen
        if (s is _OPEN and now >= self.open_until) or (
            s is _HALF_OPEN and now >= self.half_open_until
        ):
            self._catch_up(now)
            s = self.state
        if s is _HALF_OPEN and self.half_open_inflight < self.half_open_max:
            if self.probe_since is None:
                # The first probe starts the half-open clock.
                self.probe_since = now
                hot = self.half_open_timeout
                if hot is not None:
                    self.half_open_until = now + hot
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
        s = self.current_state(now, admitting=True)
        if s is _HALF_OPEN:
            return self.half_open_inflight < self.half_open_max
        return s is _CLOSED or s is _METRICS_ONLY or s is _DISABLED

    def current_state(self, now: float, admitting: bool = False) -> CircuitState:
        """The state at ``now``, after any lazy transition that is due
        (``admitting``: as an admission would see it, asking a shared store
        whether this process may probe)."""
        s = self.state
        if (s is _OPEN and now >= self.open_until) or (
            s is _HALF_OPEN and now >= self.half_open_until
        ):
            self._catch_up(now, admitting)
        return self.state

    # -- results -----------------------------------------------------------

    def _timed(self, duration: float | None, weight: int) -> bool:
        """Add a call's duration to the latency statistics; whether it was slow."""
        if duration is None:
            return False
        lat = self.latency
        if lat is None:
            lat = self.latency = Latency()
        if weight == 1:
            lat.add_locked(duration, self.rng)
        else:
            lat.add(duration, weight)
        if duration > self.slow_threshold:
            self.slow_calls += 1
            return True
        return False

    def on_success(self, gen: int, now: float, duration: float | None, weight: int = 0) -> None:
        """Record a success of a call admitted under ``gen`` that took
        ``duration`` seconds (``None``: not timed); ``weight``: a lock-free
        caller's latency sample, standing for that many calls."""
        self.fold()
        self.successful_calls += 1
        same = gen == self.gen
        slow = self._timed(duration, weight if weight and same else 1)
        if not same:
            return
        s = self.state
        if s is _CLOSED or s is _METRICS_ONLY:
            self.consecutive_failures = 0
            if not slow and self.lane > 0 and self.lockfree_until == _INF:
                return  # a settled count window: one more success changes nothing
            w = self.window
            w.record(False, slow, now)
            if w.failures or w.slow:
                # A success can still trip: it may bring the window up to
                # minimum_calls with a rate over its limit.
                self._close_lane()
                self._after_record(now)
            else:
                self._open_lane()
        elif s is _HALF_OPEN:
            if self._timed_out(now):
                return
            self.half_open_inflight -= 1
            if slow:
                # A probe must be fast as well as successful, or a slow
                # dependency would close the circuit only to trip it again.
                assert duration is not None
                self.consecutive_failures += 1
                self._open(now, f"slow probe ({_fmt_seconds(duration)})")
                return
            self.consecutive_failures = 0
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
            self._close_lane()  # first: lock-free callers must see it at once
        self.fold()
        self.failed_calls += 1
        by_cat = self.failures_by_category
        if by_cat is None:
            by_cat = self.failures_by_category = [0] * len(_CATEGORIES)
        by_cat[_CATEGORY_INDEX[category]] += 1
        self.last_failure_at = now
        self.last_failure_category = category
        slow = self._timed(duration, 1)
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
            if self._timed_out(now):
                return
            self.half_open_inflight -= 1
            self.consecutive_failures += 1
            self._open(now, f"probe failed with {category.value}")

    def on_ignored(self, gen: int, now: float, duration: float | None) -> None:
        """Record a call whose outcome does not count; its probe permit is returned."""
        self.ignored_calls += 1
        if gen == self.gen and self.state is _HALF_OPEN and not self._timed_out(now):
            self.half_open_inflight -= 1

    def release(self, gen: int, now: float) -> None:
        """Return a call's probe permit without recording anything (a misused
        guard: the call never reached the dependency)."""
        if gen == self.gen and self.state is _HALF_OPEN and not self._timed_out(now):
            self.half_open_inflight -= 1

    def _timed_out(self, now: float) -> bool:
        """A probe's result arriving after the half-open deadline: the circuit
        re-opened at that deadline, and the result belongs to the old round."""
        if now < self.half_open_until:
            return False
        self._catch_up(now)
        return True

    def _after_record(self, now: float) -> None:
        if self.state is not _CLOSED:
            return  # METRICS_ONLY records and reports, never trips
        n = self.consecutive_failures
        if n >= self.config.failure_threshold:
            self._open(now, f"{n} consecutive failures")
            return
        w = self.window
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

    # -- the lock-free lane --------------------------------------------------

    def _open_lane(self) -> None:
        """After a clean success under the lock: let later successes be
        counted without it, if the window is settled (see LANE_TIMED). A lane
        already open keeps its token (callers under way stay lock-free)."""
        if not LOCK_FREE or self.nested:
            return
        w = self.window
        if isinstance(w, CountWindow):
            if w.calls != w.size:
                return
            self.lockfree_until = _INF  # a count window has no buckets
        else:
            self.lockfree_until = w.newest_end
        timed = not (self.untimed_ok and self.successful_calls >= EXACT)
        t = self.valid
        if t is None or t.gen != self.gen or t.timed != timed:
            t = LaneToken(self.gen, timed)
            if self.left < 1:
                self._next_run()  # a run ended and its thread has not started the next yet
            self.lane = LANE_TIMED if timed else LANE_UNTIMED
            self.valid = t
            self.fast = None if timed else t

    def _close_lane(self) -> None:
        """Count nothing more without the lock: first in every change that
        can unsettle the window."""
        self.valid = None
        self.fast = None
        self.lane = LANE_LOCKED

    def note_nested(self) -> None:
        """A nested call was seen: close the lock-free lane for good (a call
        counted without the lock cannot tell that it is nested)."""
        self.nested = True
        if self.lane > 0:
            self._close_lane()

    def fold(self) -> None:
        """Add the successes counted without the lock since the last fold to
        ``successful_calls`` and, with a time window, to its newest bucket
        (a count window is full of successes while they are counted, so it
        has nothing to add). Under the lock, before either is read."""
        counted = self.issued - self.left
        n = counted - self.lockfree_folded
        if n:
            self.lockfree_folded = counted
            self.successful_calls += n
            w = self.window
            if isinstance(w, TimeWindow):
                w.count_newest(n)

    def count_lockfree(self, gen: int, end: float, duration: float) -> bool:
        """Count a timed success admitted under ``gen`` without the lock if
        the lane allows it (the guard's timed lane, for the generic driver,
        which times every call: the call that ends a run is its sample, in
        either lane); whether it did. No call between the check and the
        write."""
        t = self.valid
        if (
            t is not None
            and t.gen == gen
            and duration <= self.slow_threshold
            and end < self.lockfree_until
        ):
            n = self.left - 1
            self.left = n
            if not n:
                self._end_run_sampled(t, duration)
            return True
        return False

    def lockfree_step(self, t: LaneToken, n: int, duration: float, weight: int) -> bool:
        """A guard's success counted without the lock under ``t``,
        ``duration`` seconds long, that left ``n`` to go in its run, and is
        LANE_UNTIMED's latency sample standing for ``weight`` calls (0: it is
        not). Whether the lane is due to become LANE_UNTIMED (:meth:`promote`,
        under the lock). Not under the lock itself: a racing thread may cost
        a sample, never a count.

        The sampling rule (see ``resilience._latency``): successes counted
        without the lock count ``left`` down, in runs of random length; each
        run that ends adds what it stands for to ``unsampled``, and each
        sample takes all of it. In LANE_TIMED the sample is the call that
        ends the run. In LANE_UNTIMED the call that ends a run calls
        :meth:`arm_sample` (no clock read before that), and the sample is an
        admission a random number of admissions later (it takes
        ``unsampled`` when admitted): a random place among the calls
        started, not the first to start after a run ends (with calls gathered
        in batches, always the batch's first query), nor the first to finish
        (under concurrency, the fastest). Either way the weight is fixed
        before the sample's call ends, so it does not depend on how long the
        call took.
        """
        if weight:
            self._sample(t, duration, weight)
        if n:
            return False
        if not t.timed:
            self.arm_sample(t)
            return False
        self._end_run_sampled(t, duration)
        return (
            self.untimed_ok
            and self.valid is t
            and self.successful_calls + self.issued - self.left - self.lockfree_folded >= EXACT
        )

    def arm_sample(self, t: LaneToken) -> None:
        """LANE_UNTIMED: a run ended under ``t``; the next one starts, and the
        ``skip``-th admission from now (one to 64, drawn) is the sample
        standing for the runs not sampled yet."""
        skip = next_skip(self.rng)
        self._next_run()
        if self.fast is t:
            self.skip = skip
            self.fast = None

    def _next_run(self) -> None:
        """If the run has ended (``left`` < 1), start the next one, ``run``
        long, and add what the ended one stands for to ``unsampled``: its
        length, and the successes other threads counted past its end before
        this. A thread that finds it started already does nothing. No call
        between the check and the writes."""
        length = next_run(self.issued, self.rng)
        left = self.left
        if left >= 1:
            return
        self.unsampled += self.run - left
        self.run = length
        self.issued += length - left
        self.left = length

    def _end_run_sampled(self, t: LaneToken, duration: float) -> None:
        """A run ended with a timed call: it is the sample of the runs not
        sampled yet."""
        self._next_run()
        self._sample(t, duration, self.take_unsampled())

    def take_unsampled(self) -> int:
        """What the next sample stands for; nothing is left for another. No
        call between the read and the write."""
        weight = self.unsampled
        self.unsampled = 0
        return weight

    def give_back(self, t: LaneToken, weight: int) -> None:
        """A sample that took ``weight`` under ``t`` never finished (its call
        raised or was cancelled): the next sample stands for those calls."""
        if t.gen == self.gen:
            self.unsampled += weight

    def _sample(self, t: LaneToken, duration: float, weight: int) -> None:
        if not weight or t.gen != self.gen:
            return  # taken by another thread; or a transition or a reset since
        lat = self.latency
        if lat is None:
            lat = self.latency = Latency()
        lat.add(duration, weight)

    def promote(self, t: LaneToken) -> None:
        """Under the lock: LANE_TIMED becomes LANE_UNTIMED once 1,024
        successes were timed, if no rule needs durations."""
        if self.valid is t:
            self.fold()
            self._open_lane()

    def refresh_window(self, now: float) -> CountWindow | TimeWindow:
        """The window, describing the calls of the window at ``now``."""
        self.fold()
        w = self.window
        w.refresh(now)
        return w

    # -- transitions -------------------------------------------------------

    def _set(self, new: CircuitState, reason: str, at: float, remote: bool = False) -> None:
        self._close_lane()
        t = Transition(self.state, new, reason, at, remote)
        if self.pending is None:
            self.pending = [t]
        else:
            self.pending.append(t)
        self.state = new
        self.gen += 1
        self.state_changes += 1
        if new is _OPEN and LOCK_FREE:
            self.lane = LANE_OPEN

    def _open(self, at: float, reason: str) -> None:
        cfg = self.config
        self.consecutive_openings += 1
        if self.consecutive_openings == 1:
            base = cfg.recovery_timeout
        else:
            # Multiply the previous (capped) base: never overflows, however
            # long the outage.
            base = min(self.open_base * cfg.recovery_backoff, cfg.effective_max_recovery_timeout)
        self.open_base = base
        jitter = cfg.jitter
        period = base * (1.0 - jitter + 2.0 * jitter * self.rng.random()) if jitter else base
        self.open_period = period
        self.open_until = at + period
        self.opened_at = at
        self._leave_half_open()
        self.open_count += 1
        self._set(_OPEN, reason, at)

    def _half_open(self, at: float, reason: str) -> None:
        self._leave_half_open()
        self._set(_HALF_OPEN, reason, at)

    def _leave_half_open(self) -> None:
        self.half_open_inflight = 0
        self.half_open_successes = 0
        self.half_open_until = _INF
        self.probe_since = None

    def _close(self, at: float, reason: str, remote: bool = False) -> None:
        self._close_lane()
        self.fold()
        self.window.clear()
        self.consecutive_failures = 0
        self.consecutive_openings = 0
        self.opened_at = None
        self._leave_half_open()
        self._set(_CLOSED, reason, at, remote)

    def _catch_up(self, now: float, admitting: bool = True) -> None:
        """Apply, at their deadlines, the lazy transitions due by ``now``: at
        most a timed-out HALF_OPEN re-opening, then the OPEN period ending.
        An idle HALF_OPEN has no deadline (it waits for its first probe), so
        nothing here can repeat, whatever ``now`` or the periods are.

        With a shared store (``probe_gate``), the open period ends in
        HALF_OPEN only in the process the store lets probe; the others stay
        OPEN and ask again after :data:`PROBE_RECHECK`. A read of the state
        (``admitting`` false) never asks.
        """
        if self.state is _HALF_OPEN and now >= self.half_open_until:
            assert self.half_open_timeout is not None
            self._open(
                self.half_open_until,
                f"half-open undecided after {_fmt_seconds(self.half_open_timeout)}",
            )
        if self.state is _OPEN and now >= self.open_until:
            gate = self.probe_gate
            if gate is not None and (not admitting or not gate()):
                if admitting:
                    self.open_until = now + PROBE_RECHECK
                return
            self._half_open(self.open_until, f"open for {_fmt_seconds(self.open_period)}; probing")

    def apply_remote(self, state: CircuitState, remaining: float, now: float, reason: str) -> None:
        """Adopt the fleet's state, decided elsewhere (queued as a remote
        transition, which the store does not publish again).

        OPEN: open until ``now + remaining`` (the fleet's deadline, on this
        process's clock). HALF_OPEN (another process holds the probe lease):
        stay or become OPEN until the lease's ``remaining`` runs out, and ask
        again then. CLOSED: close. The manual states (FORCED_OPEN, DISABLED,
        METRICS_ONLY) are this process's own and are kept.
        """
        s = self.state
        if s is _FORCED_OPEN or s is _DISABLED or s is _METRICS_ONLY:
            return
        if state is _OPEN or state is _HALF_OPEN:
            until = now + max(0.0, remaining)
            if s is _OPEN:
                self.open_until = until  # the fleet's deadline; no transition
                return
            self.consecutive_openings += 1
            self.open_base = max(self.open_base, self.config.recovery_timeout)
            self.open_period = max(0.0, remaining)
            self.open_until = until
            self.opened_at = now
            self._leave_half_open()
            self.open_count += 1
            self._set(_OPEN, reason, now, remote=True)
        elif state is _CLOSED and (s is _OPEN or s is _HALF_OPEN):
            self._close(now, reason, remote=True)

    def transition_to(self, state: CircuitState, reason: str, now: float) -> None:
        """Move to ``state`` by hand; a move to the current state does nothing."""
        state = CircuitState(state)
        if state is self.state:
            return
        if state is _OPEN:
            self._open(now, reason)
        elif state is _HALF_OPEN:
            self._half_open(now, reason)
        elif state is _CLOSED:
            self._close(now, reason)
        else:
            self._leave_half_open()
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
            self.state_changes -= 1
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
        lat = self.latency
        return lat.histogram(self.successful_calls + self.failed_calls) if lat else []
