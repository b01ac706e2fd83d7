"""What happened during one run: every request, every breaker transition,
and the breaker states sampled while it ran."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ._plan import Phase, Plan

__all__ = ("OUTCOMES", "ROUTES", "RunRecord", "Sample", "Second", "percentile")

OUTCOMES = ("fresh", "fallback", "rejected", "error")
"""fresh: 200 from the database; fallback: 200 marked ``X-Degraded`` (a
cached value or the replica); rejected: 503 from an open circuit; error: any
other failure, a 5xx or no answer within the client timeout."""

ROUTES = ("users", "orders", "products")
ROUTE_BREAKER = {"users": "users-db", "orders": "pg-primary", "products": "pg-primary"}
"""The breaker that guards each route's first choice of dependency."""

PROBE_ADMISSION = 0.25
"""seconds between a request being due and its admission, at most, when
telling the probe that moved a circuit to half-open from the requests before."""


class Sample(NamedTuple):
    """One request. Times are seconds since the run started."""

    start: float
    """when the request was due to be sent (open-loop schedule)."""
    end: float
    route: str
    outcome: str
    status: int
    """HTTP status, or 0 when no answer came."""

    @property
    def latency(self) -> float:
        return self.end - self.start


class Transition(NamedTuple):
    at: float
    breaker: str
    old: str
    new: str
    reason: str


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in [0, 100]) of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Second:
    """The requests that finished in one second of a run."""

    index: int
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    latencies: list[float] = field(default_factory=list)

    def add(self, sample: Sample) -> None:
        self.counts[sample.outcome] += 1
        self.latencies.append(sample.latency)

    def quantiles(self) -> tuple[float | None, float | None]:
        values = sorted(self.latencies)
        return percentile(values, 50), percentile(values, 99)


@dataclass
class RunRecord:
    """Everything recorded in one run."""

    kind: str
    plan: Plan
    started_at: float = field(default_factory=time.monotonic)
    """monotonic time of the run's start."""
    wall_started_at: float = field(default_factory=time.time)
    samples: list[Sample] = field(default_factory=list)
    seconds: dict[int, Second] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    states: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    """breaker states sampled while the run went on: ``(t, {name: state})``."""
    breakers: list[str] = field(default_factory=list)
    abandoned: int = 0
    """requests still in flight when the run's drain time ran out."""
    interrupted: bool = False

    def now(self) -> float:
        return time.monotonic() - self.started_at

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)
        index = int(sample.end)
        second = self.seconds.get(index)
        if second is None:
            second = self.seconds[index] = Second(index)
        second.add(sample)

    def add_transition(self, breaker: str, old: Any, new: Any, reason: str) -> None:
        self.transitions.append(
            Transition(self.now(), breaker, _value(old), _value(new), str(reason))
        )

    def add_states(self, states: dict[str, str]) -> None:
        for name in states:
            if name not in self.breakers:
                self.breakers.append(name)
        self.states.append((self.now(), states))

    def slow_cause(self, sample: Sample) -> str:
        """Why a slow request of this run was slow, from its circuit's state:

        ``no_breaker`` (the run has none), ``before_trip`` (its circuit was
        still closed), ``probe`` (it was the call that moved the circuit to
        half-open: the one request a breaker lets through to test the
        dependency), ``during_probe`` (the circuit was half-open: a probe was
        under way), ``while_open`` (the circuit was open: the breaker should
        have spared it the wait).
        """
        breaker = ROUTE_BREAKER[sample.route]
        if breaker not in self.breakers:
            return "no_breaker"
        state = self.state_at(breaker, sample.start)
        if state == "open":
            for tr in self.transitions:
                if (
                    tr.breaker == breaker
                    and tr.new == "half_open"
                    and sample.start <= tr.at <= sample.start + PROBE_ADMISSION
                ):
                    return "probe"
            return "while_open"
        if state == "half_open":
            return "during_probe"
        return "before_trip"

    def phase_at(self, t: float) -> Phase:
        return self.plan.phase_at(t)

    def state_at(self, breaker: str, t: float) -> str:
        """The breaker's state at ``t``, from its transitions (closed before any)."""
        state = "closed"
        for tr in self.transitions:
            if tr.at > t:
                break
            if tr.breaker == breaker:
                state = tr.new
        return state


def _value(state: Any) -> str:
    return str(getattr(state, "value", state))
