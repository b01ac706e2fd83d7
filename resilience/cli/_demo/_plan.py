"""What the demo will do: its options and the timed plan of one run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ("PHASE_LABELS", "RUN_KINDS", "DemoOptions", "Phase", "Plan", "make_plan")

MIN_DURATION = 12.0
"""Below this the phases get too short to show a trip and a recovery."""

RUN_KINDS = ("breakers", "no_breakers")
RUN_TITLES = {
    "breakers": "with breakers",
    "no_breakers": "without breakers",
}

PHASE_LABELS = {
    "steady": "healthy",
    "refuse": "outage: connections refused",
    "blackhole": "outage: black hole",
    "recovery": "recovery",
}
OUTAGE_PHASES = ("refuse", "blackhole")


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoOptions:
    """The command-line options of ``resilience demo``."""

    duration: float = 60.0
    dsn: str | None = None
    redis_url: str | None = None
    out: Path = Path("demo-report")
    rate: float = 200.0
    concurrency: int = 256
    seed: int = 1
    live: bool = False
    workers: int = 1


@dataclass(frozen=True, slots=True)
class Phase:
    """One step of a run: the primary database's proxy is in ``mode`` from
    ``start`` to ``end`` (seconds since the run started)."""

    name: str
    mode: str
    start: float
    end: float

    @property
    def label(self) -> str:
        return PHASE_LABELS[self.name]

    @property
    def is_outage(self) -> bool:
        return self.name in OUTAGE_PHASES

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "proxy_mode": self.mode,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """The timing of one run (both runs follow the same plan)."""

    run_seconds: float
    phases: tuple[Phase, ...]
    db_timeout: float
    """connect and command timeout of every pool, seconds."""
    client_timeout: float
    """the load generator gives up on a request after this many seconds."""
    drain_seconds: float
    """after a run, in-flight requests get this long to finish."""
    breaker: dict[str, Any]
    """CircuitConfig fields of the demo's breakers."""

    @property
    def outage(self) -> tuple[float, float]:
        outage = [p for p in self.phases if p.is_outage]
        return outage[0].start, outage[-1].end

    def phase_at(self, t: float) -> Phase:
        for phase in self.phases:
            if t < phase.end:
                return phase
        return self.phases[-1]

    def as_dict(self) -> dict[str, Any]:
        data = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("phases", "breaker")
        }
        data["phases"] = [p.as_dict() for p in self.phases]
        data["breaker"] = dict(self.breaker)
        return data


def make_plan(run_seconds: float) -> Plan:
    """The phases and settings of one run lasting ``run_seconds``.

    healthy -> connections refused -> black hole -> recovery. The recovery
    phase is long enough for an open breaker to reach its deadline, probe and
    close; the rest is shared out in proportion.
    """
    db_timeout = 2.0 if run_seconds >= 16 else 1.0
    recovery_timeout = min(3.0, max(0.5, run_seconds * 0.05))
    max_recovery = 2.0 * recovery_timeout
    recovery = max(0.25 * run_seconds, max_recovery + db_timeout + 1.0)
    steady = max(1.5, 0.25 * run_seconds)
    outage = max(1.0, run_seconds - steady - recovery)
    refuse = 0.3 * outage
    bounds = [0.0, steady, steady + refuse, steady + outage, steady + outage + recovery]
    names = ("steady", "refuse", "blackhole", "recovery")
    modes = ("pass", "refuse", "blackhole", "pass")
    phases = tuple(
        Phase(name, mode, bounds[i], bounds[i + 1])
        for i, (name, mode) in enumerate(zip(names, modes, strict=True))
    )
    return Plan(
        run_seconds=bounds[-1],
        phases=phases,
        db_timeout=db_timeout,
        client_timeout=2.5 * db_timeout,
        drain_seconds=1.0,
        breaker={
            "failure_threshold": 5,
            "recovery_timeout": round(recovery_timeout, 3),
            "recovery_backoff": 2.0,
            "max_recovery_timeout": round(max_recovery, 3),
            "success_threshold": 2,
            "half_open_max_calls": 1,
        },
    )
