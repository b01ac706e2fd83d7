"""Hypothesis state-machine test: the breaker against a small reference model."""

from __future__ import annotations

from collections import deque

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from resilience import CircuitBreaker, CircuitOpenError, CircuitState, Permit
from resilience.testing import FakeClock

RECOVERY = 10.0
BACKOFF = 2.0
CAP = 40.0
SLOW = 1.0  # slow_call_duration


class Model:
    """The rules of DESIGN.md, written as plainly as possible."""

    def __init__(self, threshold: int, rate: float | None, size: int, minimum: int,
                 successes: int, slow_rate: float) -> None:  # fmt: skip
        self.threshold, self.rate, self.minimum = threshold, rate, minimum
        self.successes, self.slow_rate = successes, slow_rate
        self.window: deque[tuple[bool, bool]] = deque(maxlen=size)  # (failed, slow)
        self.state = CircuitState.CLOSED
        self.gen = 0
        self.consecutive = 0
        self.openings = 0
        self.period = 0.0
        self.open_until = 0.0
        self.inflight = 0
        self.half_open_ok = 0

    def _move(self, state: CircuitState) -> None:
        self.state = state
        self.gen += 1

    def _open(self, now: float) -> None:
        self.openings += 1
        self.period = min(RECOVERY * BACKOFF ** min(self.openings - 1, 10), CAP)
        self.open_until = now + self.period
        self._move(CircuitState.OPEN)

    def read(self, now: float) -> CircuitState:
        if self.state is CircuitState.OPEN and now >= self.open_until:
            self.inflight = self.half_open_ok = 0
            self._move(CircuitState.HALF_OPEN)
        return self.state

    def admit(self, now: float) -> int | None:
        state = self.read(now)
        if state is CircuitState.CLOSED:
            return self.gen
        if state is CircuitState.HALF_OPEN and self.inflight < self.successes:
            self.inflight += 1
            return self.gen
        return None

    def result(self, gen: int, ok: bool, slow: bool, now: float) -> None:
        if gen != self.gen:
            return
        if self.state is CircuitState.CLOSED:
            self.consecutive = 0 if ok else self.consecutive + 1
            self.window.append((not ok, slow))
            n = len(self.window)
            failed = sum(f for f, _ in self.window)
            slowed = sum(s for _, s in self.window)
            if self.consecutive >= self.threshold or (
                n >= self.minimum
                and (
                    (self.rate is not None and failed / n >= self.rate)
                    or slowed / n >= self.slow_rate
                )
            ):
                self._open(now)
        elif self.state is CircuitState.HALF_OPEN:
            self.inflight -= 1
            if not ok or slow:  # a probe must be fast as well as successful
                self._open(now)
                return
            self.half_open_ok += 1
            if self.half_open_ok >= self.successes:
                self.window.clear()
                self.consecutive = 0
                self.openings = 0
                self._move(CircuitState.CLOSED)


class Down(ConnectionError):
    pass


class BreakerVsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[Permit, int, float]] = []  # permit, generation, started

    @initialize(
        threshold=st.integers(1, 5),
        rate=st.sampled_from([None, 0.5, 0.3]),
        size=st.integers(2, 8),
        minimum=st.integers(1, 8),
        successes=st.integers(1, 3),
        slow_rate=st.sampled_from([0.3, 0.5, 1.0]),
    )
    def setup(self, threshold: int, rate: float | None, size: int, minimum: int,
              successes: int, slow_rate: float) -> None:  # fmt: skip
        self.clock = FakeClock()
        self.breaker = CircuitBreaker(
            "model", clock=self.clock, failure_threshold=threshold, error_rate=rate,
            window_size=size, minimum_calls=minimum, success_threshold=successes,
            recovery_timeout=RECOVERY, recovery_backoff=BACKOFF, max_recovery_timeout=CAP,
            slow_call_duration=SLOW, slow_call_rate=slow_rate,
        )  # fmt: skip
        self.model = Model(threshold, rate, size, min(minimum, size), successes, slow_rate)

        def work(ok: bool, slow: bool) -> None:
            if slow:
                self.clock.advance(SLOW + 0.5)
            if not ok:
                raise Down()

        # The same breaker through the function @circuit generates (its
        # lock-free admission, rejection and settled-success paths).
        self.guarded = self.breaker(work)

    def _admit(self) -> tuple[Permit | None, int | None]:
        permit = self.breaker.try_acquire()
        gen = self.model.admit(self.clock.monotonic())
        assert (permit is None) == (gen is None)
        return permit, gen

    def _settle(self, permit: Permit, gen: int, ok: bool, slow: bool) -> None:
        permit.success() if ok else permit.failure(Down())
        self.model.result(gen, ok, slow, self.clock.monotonic())

    @rule(ok=st.booleans(), slow=st.booleans())
    def call(self, ok: bool, slow: bool) -> None:
        permit, gen = self._admit()
        if permit is not None and gen is not None:
            if slow:
                self.clock.advance(SLOW + 0.5)
            self._settle(permit, gen, ok, slow)

    @rule(ok=st.booleans(), slow=st.booleans())
    def call_through_guard(self, ok: bool, slow: bool) -> None:
        gen = self.model.admit(self.clock.monotonic())
        try:
            self.guarded(ok, slow)
        except CircuitOpenError:
            assert gen is None
            return
        except Down:
            assert not ok
        assert gen is not None
        self.model.result(gen, ok, slow, self.clock.monotonic())

    @rule(n=st.integers(1, 12))
    def guarded_successes(self, n: int) -> None:
        """Runs of plain successes through the guard: its settled fast path."""
        for _ in range(n):
            self.call_through_guard(True, False)

    @rule(n=st.integers(1, 12))
    def fast_successes(self, n: int) -> None:
        """Runs of plain successes: what fills a window and takes its fast path."""
        for _ in range(n):
            self.call(True, False)

    @precondition(lambda self: len(self.held) < 4)
    @rule()
    def hold(self) -> None:
        permit, gen = self._admit()
        if permit is not None and gen is not None:
            self.held.append((permit, gen, self.clock.monotonic()))

    @precondition(lambda self: self.held)
    @rule(ok=st.booleans(), data=st.data())
    def release(self, ok: bool, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.held) - 1))
        permit, gen, started = self.held.pop(i)
        slow = self.clock.monotonic() - started > SLOW  # strictly slower (DESIGN)
        self._settle(permit, gen, ok, slow)

    @rule(seconds=st.sampled_from([0.5, 5.0, 10.0, 20.0, 40.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def same_state(self) -> None:
        if hasattr(self, "model"):
            assert self.breaker.state is self.model.read(self.clock.monotonic())
            retry = self.breaker.status()["retry_after"]
            if self.model.state is CircuitState.OPEN:
                assert retry == self.model.open_until - self.clock.monotonic()

    @invariant()
    def same_window(self) -> None:
        """What the window holds, whichever path counted each call (the lock,
        or the guard's lock-free step and a later fold)."""
        if hasattr(self, "model") and self.model.state is CircuitState.CLOSED:
            status = self.breaker.status()
            window = self.model.window
            assert status["calls_in_window"] == len(window)
            failed = sum(f for f, _ in window)
            assert status["error_rate"] == (failed / len(window) if window else 0.0)


TestBreakerVsModel = BreakerVsModel.TestCase
TestBreakerVsModel.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
