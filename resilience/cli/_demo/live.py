"""What the demo shows while it runs: a rich live view in a terminal, plain
lines otherwise (CI, pipes, ``--no-live``)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from ._plan import RUN_TITLES, Phase
from .recorder import OUTCOMES, RunRecord

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = ("LiveView", "PlainView", "View", "make_view")

STATE_STYLES = {
    "closed": "green",
    "open": "bold red",
    "half_open": "yellow",
    "forced_open": "bold magenta",
    "disabled": "dim",
    "metrics_only": "cyan",
}
OUTCOME_STYLES = {"fresh": "green", "fallback": "cyan", "rejected": "yellow", "error": "red"}
OUTCOME_TITLES = {"fresh": "fresh", "fallback": "fallback", "rejected": "503", "error": "error"}


class View(Protocol):
    def message(self, text: str) -> None: ...
    def run_started(self, record: RunRecord, number: int, total_seconds: float) -> None: ...
    def phase_started(self, record: RunRecord, phase: Phase) -> None: ...
    def tick(self, record: RunRecord, states: dict[str, str], in_flight: int) -> None: ...
    def run_finished(self, record: RunRecord) -> None: ...
    def close(self) -> None: ...


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    ms = value * 1000.0
    return f"{ms:,.0f} ms" if ms >= 100 else f"{ms:.1f} ms"


def make_view(live: bool | None, out: TextIO | None = None) -> View:
    """The rich live view when ``live`` (default: when stdout is a terminal)."""
    out = sys.stdout if out is None else out
    if live is None:
        live = out.isatty()
    return LiveView(out) if live else PlainView(out)


class PlainView:
    """One line per second of each run, for logs and CI."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._printed = -1

    def _print(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    def message(self, text: str) -> None:
        self._print(text)

    def run_started(self, record: RunRecord, number: int, total_seconds: float) -> None:
        self._printed = -1
        self._print(
            f"== run {number}/2: {RUN_TITLES[record.kind]} ({record.plan.run_seconds:.0f} s)"
        )

    def phase_started(self, record: RunRecord, phase: Phase) -> None:
        self._print(f"-- {record.now():5.1f}s  phase: {phase.label} (primary proxy: {phase.mode})")

    def tick(self, record: RunRecord, states: dict[str, str], in_flight: int) -> None:
        # Print each second once it is over (requests of that second are in).
        done = int(record.now()) - 1
        for index in range(self._printed + 1, done + 1):
            second = record.seconds.get(index)
            counts = second.counts if second else dict.fromkeys(OUTCOMES, 0)
            p50, p99 = second.quantiles() if second else (None, None)
            circuits = " ".join(f"{k}={v}" for k, v in states.items()) or "(no breakers)"
            self._print(
                f"   {index:3d}s  "
                + " ".join(f"{OUTCOME_TITLES[o]}={counts[o]}" for o in OUTCOMES)
                + f"  p50={_ms(p50)} p99={_ms(p99)}  in-flight={in_flight}  {circuits}"
            )
        self._printed = max(self._printed, done)

    def run_finished(self, record: RunRecord) -> None:
        self._print(f"== run finished: {len(record.samples)} requests")

    def close(self) -> None:
        pass


class LiveView:
    """A rich live display: progress, circuits, throughput and latency."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._console = Console(file=out)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeRemainingColumn(),
            console=self._console,
        )
        self._task: Any = None
        self._overall: Any = None
        self._record: RunRecord | None = None
        self._number = 0
        self._phase: Phase | None = None
        self._states: dict[str, str] = {}
        self._in_flight = 0
        self._live = Live(
            self._render(), console=self._console, auto_refresh=False, transient=False
        )
        self._live.start()

    def message(self, text: str) -> None:
        self._console.print(text, highlight=False)

    def run_started(self, record: RunRecord, number: int, total_seconds: float) -> None:
        self._record = record
        self._number = number
        self._states = {}
        if self._overall is None:
            self._overall = self._progress.add_task("both runs", total=2 * total_seconds)
        if self._task is not None:
            self._progress.remove_task(self._task)
        description = f"run {number}/2: {RUN_TITLES[record.kind]}"
        self._task = self._progress.add_task(description, total=record.plan.run_seconds)
        self._refresh()

    def phase_started(self, record: RunRecord, phase: Phase) -> None:
        self._phase = phase
        self._refresh()

    def tick(self, record: RunRecord, states: dict[str, str], in_flight: int) -> None:
        self._states = states
        self._in_flight = in_flight
        done = min(record.now(), record.plan.run_seconds)
        if self._task is not None:
            self._progress.update(self._task, completed=done)
        if self._overall is not None:
            before = (self._number - 1) * record.plan.run_seconds
            self._progress.update(self._overall, completed=before + done)
        self._refresh()

    def run_finished(self, record: RunRecord) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=record.plan.run_seconds)
        served = sum(1 for s in record.samples if s.outcome in ("fresh", "fallback"))
        self._console.print(
            f"run {self._number}/2 ({RUN_TITLES[record.kind]}): "
            f"{served:,} of {len(record.samples):,} requests served",
            highlight=False,
        )
        self._refresh()

    def close(self) -> None:
        self._live.stop()

    def _refresh(self) -> None:
        self._live.update(self._render(), refresh=True)

    def _render(self) -> RenderableType:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        record = self._record
        if record is None:
            return Group(Text("resilience demo: starting...", style="bold"))
        phase = self._phase
        style = "bold red" if phase is not None and phase.is_outage else "bold green"
        header = Text.assemble(
            ("resilience demo  ", "bold"),
            (f"run {self._number}/2: {RUN_TITLES[record.kind]}   ", ""),
            ("phase: ", "dim"),
            (phase.label if phase else "-", style),
            (f"   in flight: {self._in_flight}", "dim"),
        )

        circuits = Table(title="circuits", title_justify="left", expand=False)
        circuits.add_column("breaker")
        circuits.add_column("state")
        if self._states:
            for name, state in self._states.items():
                circuits.add_row(name, Text(state.upper(), style=STATE_STYLES.get(state, "")))
        else:
            circuits.add_row(Text("(none: plain app)", style="dim"), "")

        load = Table(title="requests per second", title_justify="left", expand=False)
        load.add_column("second", justify="right")
        load.add_column("phase")
        for o in OUTCOMES:
            load.add_column(OUTCOME_TITLES[o], justify="right", style=OUTCOME_STYLES[o])
        load.add_column("p50", justify="right")
        load.add_column("p99", justify="right")
        current = int(record.now())
        for index in range(max(0, current - 8), current):
            second = record.seconds.get(index)
            counts = second.counts if second else dict.fromkeys(OUTCOMES, 0)
            p50, p99 = second.quantiles() if second else (None, None)
            at = record.phase_at(index + 0.5)
            load.add_row(
                f"{index}s",
                Text(at.label, style="red" if at.is_outage else ""),
                *(str(counts[o]) for o in OUTCOMES),
                _ms(p50),
                _ms(p99),
            )

        from rich.columns import Columns

        return Group(header, self._progress, Columns([circuits, load], padding=(0, 4)))
