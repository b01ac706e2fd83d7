"""The demo's numbers and the report it saves: ``report.json`` (read by the
tests), ``report.md``, ``report.html`` and ``timeline.png``."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._plan import RUN_KINDS, RUN_TITLES, Plan
from .recorder import OUTCOMES, ROUTE_BREAKER, RunRecord, Sample, percentile

__all__ = ("SPEED_GOAL", "build_report", "summary_rows", "write_report")

SLOW_CAUSES = ("no_breaker", "before_trip", "probe", "during_probe", "while_open")

SPEED_GOAL = 50.0
"""p99 during the outage, without breakers / with breakers, that the demo aims at."""


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 2)


def _stats(samples: Sequence[Sample], seconds: float) -> dict[str, Any]:
    latencies = sorted(s.latency for s in samples)
    counts = dict.fromkeys(OUTCOMES, 0)
    for s in samples:
        counts[s.outcome] += 1
    statuses: dict[str, int] = {}
    for s in samples:
        key = str(s.status) if s.status else "no answer"
        statuses[key] = statuses.get(key, 0) + 1
    total = len(samples)
    served = counts["fresh"] + counts["fallback"]
    return {
        "requests": total,
        "seconds": round(seconds, 3),
        **counts,
        "served": served,
        "served_share": round(served / total, 4) if total else 0.0,
        "fallback_share": round(counts["fallback"] / total, 4) if total else 0.0,
        "served_per_second": round(served / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": _ms(percentile(latencies, 50)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "max_ms": _ms(latencies[-1] if latencies else None),
        "statuses": dict(sorted(statuses.items())),
    }


def summarize(record: RunRecord) -> dict[str, Any]:
    """The numbers of one run."""
    plan = record.plan
    out_start, out_end = plan.outage
    slow = 0.9 * plan.db_timeout
    outage = [s for s in record.samples if out_start <= s.start < out_end]
    slow_outage = [s for s in outage if s.latency >= slow]
    # A request that waited for a timeout although the circuit guarding its
    # route was OPEN when it was due would mean the breaker did not protect it.
    causes = dict.fromkeys(SLOW_CAUSES, 0)
    for s in slow_outage:
        causes[record.slow_cause(s)] += 1
    slowest = sorted(outage, key=lambda s: s.latency, reverse=True)[:10]
    phases = {}
    for phase in plan.phases:
        inside = [s for s in record.samples if phase.start <= s.start < phase.end]
        phases[phase.name] = {"label": phase.label, **_stats(inside, phase.end - phase.start)}
    timeline = []
    last = max(record.seconds, default=-1)
    for index in range(last + 1):
        second = record.seconds.get(index)
        p50, p99 = second.quantiles() if second else (None, None)
        states = _states_in(record, index, index + 1)
        timeline.append(
            {
                "t": index,
                "phase": plan.phase_at(index + 0.5).name,
                **(second.counts if second else dict.fromkeys(OUTCOMES, 0)),
                "p50_ms": _ms(p50),
                "p99_ms": _ms(p99),
                "states": states,
            }
        )
    return {
        "kind": record.kind,
        "title": RUN_TITLES[record.kind],
        "started_at": datetime.fromtimestamp(record.wall_started_at, UTC).isoformat(),
        "total": _stats(record.samples, plan.run_seconds),
        "outage": {
            **_stats(outage, out_end - out_start),
            "slow_requests": len(slow_outage),
            "slow_threshold_ms": _ms(slow),
            "slow_causes": causes,
            "waited_while_open": causes["while_open"],
            "slowest": [
                {
                    "t": round(s.start, 3),
                    "ms": _ms(s.latency),
                    "route": s.route,
                    "status": s.status,
                    "circuit": ROUTE_BREAKER[s.route],
                    "cause": record.slow_cause(s),
                }
                for s in slowest
            ],
        },
        "phases": phases,
        "abandoned": record.abandoned,
        "breakers": list(record.breakers),
        "transitions": [
            {
                "t": round(t.at, 3),
                "breaker": t.breaker,
                "from": t.old,
                "to": t.new,
                "reason": t.reason,
            }
            for t in record.transitions
        ],
        "timeline": timeline,
    }


def _states_in(record: RunRecord, start: float, end: float) -> dict[str, str]:
    """Each breaker's worst state during ``[start, end)``."""
    rank = {
        "closed": 0,
        "disabled": 0,
        "metrics_only": 0,
        "half_open": 1,
        "open": 2,
        "forced_open": 2,
    }
    worst: dict[str, str] = {}
    for name in record.breakers:
        worst[name] = record.state_at(name, start)
    for tr in record.transitions:
        if start <= tr.at < end and rank.get(tr.new, 0) > rank.get(
            worst.get(tr.breaker, "closed"), 0
        ):
            worst[tr.breaker] = tr.new
    return worst


def _ratio(without: float | None, with_: float | None) -> float | None:
    if without is None or not with_:
        return None
    return round(without / with_, 1)


def build_report(
    records: Sequence[RunRecord],
    *,
    plan: Plan,
    settings: dict[str, Any],
    interrupted: bool = False,
) -> dict[str, Any]:
    """The whole report as JSON-friendly data."""
    runs = {r.kind: summarize(r) for r in records}
    report: dict[str, Any] = {
        "version": 1,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "complete": not interrupted and all(k in runs for k in RUN_KINDS),
        "settings": {**settings, "plan": plan.as_dict()},
        "runs": runs,
    }
    if "breakers" in runs and "no_breakers" in runs:
        w, wo = runs["breakers"], runs["no_breakers"]
        p99 = _ratio(wo["outage"]["p99_ms"], w["outage"]["p99_ms"])
        report["comparison"] = {
            "outage_p99_ms": {
                "breakers": w["outage"]["p99_ms"],
                "no_breakers": wo["outage"]["p99_ms"],
            },
            "outage_p50_ms": {
                "breakers": w["outage"]["p50_ms"],
                "no_breakers": wo["outage"]["p50_ms"],
            },
            "outage_p99_ratio": p99,
            "speed_goal_ratio": SPEED_GOAL,
            "speed_goal_met": p99 is not None and p99 >= SPEED_GOAL,
            "outage_served": {
                "breakers": w["outage"]["served"],
                "no_breakers": wo["outage"]["served"],
            },
            "outage_fallback_share": w["outage"]["fallback_share"],
            "served": {"breakers": w["total"]["served"], "no_breakers": wo["total"]["served"]},
            "rejected": {
                "breakers": w["total"]["rejected"],
                "no_breakers": wo["total"]["rejected"],
            },
            "errors": {"breakers": w["total"]["error"], "no_breakers": wo["total"]["error"]},
            "waited_while_open": w["outage"]["waited_while_open"],
        }
    return report


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"


def _served_outage(run: dict[str, Any]) -> str:
    o = run["outage"]
    return f"{o['served']:,} of {o['requests']:,} ({o['served_share']:.0%})"


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(metric, with breakers, without) rows of the summary table."""
    runs = report["runs"]
    w, wo = runs.get("breakers"), runs.get("no_breakers")

    def cell(run: dict[str, Any] | None, fn: Any) -> str:
        return "-" if run is None else str(fn(run))

    ratio = report.get("comparison", {}).get("outage_p99_ratio")
    slow_s = report["settings"]["plan"]["db_timeout"] * 0.9
    rows = [
        (
            "p99 latency during the outage",
            cell(w, lambda r: _fmt_ms(r["outage"]["p99_ms"])),
            cell(wo, lambda r: _fmt_ms(r["outage"]["p99_ms"]))
            + (f" ({ratio:,.0f}x)" if ratio else ""),
        ),
        (
            "p50 latency during the outage",
            cell(w, lambda r: _fmt_ms(r["outage"]["p50_ms"])),
            cell(wo, lambda r: _fmt_ms(r["outage"]["p50_ms"])),
        ),
        ("served during the outage", cell(w, _served_outage), cell(wo, _served_outage)),
        (
            "  of which fallback (cache or replica)",
            cell(w, lambda r: f"{r['outage']['fallback']:,}"),
            cell(wo, lambda r: f"{r['outage']['fallback']:,}"),
        ),
        (
            f"requests waiting >= {slow_s:g} s in the outage",
            cell(w, lambda r: f"{r['outage']['slow_requests']:,}"),
            cell(wo, lambda r: f"{r['outage']['slow_requests']:,}"),
        ),
        (
            "  of which probes / during a probe",
            cell(
                w,
                lambda r: (
                    f"{r['outage']['slow_causes']['probe']:,} / "
                    f"{r['outage']['slow_causes']['during_probe']:,}"
                ),
            ),
            "-",
        ),
        (
            "  of which while their circuit was open",
            cell(w, lambda r: f"{r['outage']['waited_while_open']:,}"),
            "-",
        ),
        (
            "requests served (whole run)",
            cell(w, lambda r: f"{r['total']['served']:,} of {r['total']['requests']:,}"),
            cell(wo, lambda r: f"{r['total']['served']:,} of {r['total']['requests']:,}"),
        ),
        (
            "503 (circuit open, nothing cached)",
            cell(w, lambda r: f"{r['total']['rejected']:,}"),
            cell(wo, lambda r: f"{r['total']['rejected']:,}"),
        ),
        (
            "errors (5xx, client timeouts)",
            cell(w, lambda r: f"{r['total']['error']:,}"),
            cell(wo, lambda r: f"{r['total']['error']:,}"),
        ),
    ]
    return rows


def write_report(report: dict[str, Any], records: Sequence[RunRecord], out: Path) -> list[Path]:
    """Write the report files into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    chart = out / "timeline.png"
    if records:
        draw_timeline(records, chart)
        written.append(chart)
    md = out / "report.md"
    md.write_text(render_markdown(report, chart.name if records else None), encoding="utf-8")
    page = out / "report.html"
    page.write_text(render_html(report, chart.name if records else None), encoding="utf-8")
    data = out / "report.json"
    data.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return [md, page, *written, data]


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _intro(report: dict[str, Any]) -> list[str]:
    s = report["settings"]
    plan = s["plan"]
    comparison = report.get("comparison", {})
    lines = [
        f"Created {report['created_at']}. Two runs of {plan['run_seconds']:.1f} s each at "
        f"{s['rate']:g} requests/s (open loop, at most {s['concurrency']} in flight), "
        f"PostgreSQL {'started by the demo' if s['throwaway_postgres'] else 'given by --dsn'}, "
        f"fallback cache: {s['cache']}.",
    ]
    ratio = comparison.get("outage_p99_ratio")
    if ratio:
        met = "met" if comparison.get("speed_goal_met") else "not met"
        lines.append(
            f"During the outage, p99 latency with breakers was {ratio:,.0f}x lower than without "
            f"(goal: {SPEED_GOAL:.0f}x, {met})."
        )
    if not report["complete"]:
        lines.append("**The demo was interrupted: this report is partial.**")
    return lines


def _phase_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for phase in report["settings"]["plan"]["phases"]:
        row = [phase["label"], f"{phase['start']:.1f}-{phase['end']:.1f} s", phase["proxy_mode"]]
        for kind in RUN_KINDS:
            run = report["runs"].get(kind)
            if run is None:
                row += ["-", "-"]
                continue
            p = run["phases"][phase["name"]]
            detail = f"{p['fallback']:,} fallback, {p['rejected']:,} 503, {p['error']:,} err"
            row += [
                f"{p['served_share']:.0%} ({detail})",
                f"{_fmt_ms(p['p50_ms'])} / {_fmt_ms(p['p99_ms'])}",
            ]
        rows.append(row)
    return rows


_PHASE_HEADER = (
    "phase",
    "time",
    "primary proxy",
    "served, with breakers",
    "p50 / p99, with",
    "served, without",
    "p50 / p99, without",
)


def render_markdown(report: dict[str, Any], chart: str | None) -> str:
    """``report.md``."""
    parts = ["# resilience demo report", "", *_intro(report), ""]
    parts += [
        "## Summary",
        "",
        _md_table(("", "with breakers", "without breakers"), summary_rows(report)),
        "",
    ]
    if chart:
        parts += [f"![timeline: breaker states, throughput by outcome, latency]({chart})", ""]
    parts += ["## Phases", "", _md_table(_PHASE_HEADER, _phase_rows(report)), ""]
    parts += _scenario_text(report)
    breakers = report["runs"].get("breakers")
    if breakers and breakers["transitions"]:
        parts += ["## Breaker transitions (run with breakers)", ""]
        parts.append(
            _md_table(
                ("t", "breaker", "from", "to", "reason"),
                (
                    (f"{t['t']:.2f} s", t["breaker"], t["from"], t["to"], t["reason"])
                    for t in breakers["transitions"]
                ),
            )
        )
        parts.append("")
    parts += ["## Settings", "", "```json", json.dumps(report["settings"], indent=2), "```", ""]
    return "\n".join(parts)


def _scenario_text(report: dict[str, Any]) -> list[str]:
    plan = report["settings"]["plan"]
    text = _SCENARIO.format(db_timeout=plan["db_timeout"], client_timeout=plan["client_timeout"])
    return [*text.splitlines(), ""]


_SCENARIO = """\
## What ran

A Starlette app (served by uvicorn on 127.0.0.1) with three routes over PostgreSQL:

- `GET /users/{{id}}`: `@fallback(cache)` over `@circuit("users-db")` over a `ResilientPool`;
- `GET /orders/{{customer_id}}`: `@chain(primary, replica)`, each a `ResilientPool` with its
  own breaker (`pg-primary`, `pg-replica`); the replica reaches the same server through a
  second proxy that stays up;
- `GET /products`: a read-through `@fallback(cache, fresh_ttl=30)` over the primary pool.

`ResilienceMiddleware` turns an open circuit into a 503 with `Retry-After`. The run
without breakers uses the same queries on the same pools with the breakers disabled and
no fallback or failover.

The primary's `FaultProxy` refuses connections, then black-holes them (connections hang
until the pools' {db_timeout:g} s connect/command timeout), then passes traffic again.
Requests are sent on a Poisson schedule; a request's latency counts from when it was due,
and the client gives up after {client_timeout:g} s (an error).
"""


def render_html(report: dict[str, Any], chart: str | None) -> str:
    """``report.html``: the same content as the Markdown, as one page."""

    def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
            for row in rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    intro = "".join(f"<p>{html.escape(line).replace('**', '')}</p>" for line in _intro(report))
    sections = [
        "<h1>resilience demo report</h1>",
        intro,
        "<h2>Summary</h2>",
        table(("", "with breakers", "without breakers"), summary_rows(report)),
    ]
    if chart:
        sections.append(
            f'<p><img src="{html.escape(chart)}" alt="timeline" style="max-width:100%"></p>'
        )
    sections += ["<h2>Phases</h2>", table(_PHASE_HEADER, _phase_rows(report))]
    breakers = report["runs"].get("breakers")
    if breakers and breakers["transitions"]:
        sections += [
            "<h2>Breaker transitions (run with breakers)</h2>",
            table(
                ("t", "breaker", "from", "to", "reason"),
                (
                    (f"{t['t']:.2f} s", t["breaker"], t["from"], t["to"], t["reason"])
                    for t in breakers["transitions"]
                ),
            ),
        ]
    sections += [
        "<h2>Settings</h2>",
        f"<pre>{html.escape(json.dumps(report['settings'], indent=2))}</pre>",
    ]
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:left}th{background:#f4f4f4}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>resilience demo report</title>"
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>\n"
    )


_STATE_COLORS = {
    "closed": "#4caf50",
    "open": "#e53935",
    "half_open": "#fbc02d",
    "forced_open": "#8e24aa",
    "disabled": "#bdbdbd",
    "metrics_only": "#00acc1",
}
_OUTCOME_COLORS = {
    "fresh": "#4caf50",
    "fallback": "#29b6f6",
    "rejected": "#ffb300",
    "error": "#e53935",
}
_OUTCOME_LABELS = {"fresh": "fresh", "fallback": "fallback", "rejected": "503", "error": "error"}


def draw_timeline(records: Sequence[RunRecord], path: Path) -> None:
    """``timeline.png``: per run, breaker states, throughput by outcome and
    latency (p50, p99) over time, with the outage phases shaded."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(
        3,
        len(records),
        figsize=(7.5 * len(records), 9),
        sharex="col",
        squeeze=False,
        gridspec_kw={"height_ratios": [1, 2.2, 2.2]},
    )
    bucket = max(0.25, records[0].plan.run_seconds / 60.0)
    series = [_series(record, bucket) for record in records]
    max_rps = max(
        (sum(counts.values()) / bucket for rows in series for _, counts, _, _ in rows), default=1.0
    )
    for col, record in enumerate(records):
        plan = record.plan
        rows = series[col]
        states_ax, rps_ax, lat_ax = axes[0][col], axes[1][col], axes[2][col]
        for ax in (states_ax, rps_ax, lat_ax):
            for phase in plan.phases:
                if phase.is_outage:
                    ax.axvspan(
                        phase.start,
                        phase.end,
                        color="#ffcdd2" if phase.name == "refuse" else "#ef9a9a",
                        alpha=0.35,
                        lw=0,
                    )
            ax.set_xlim(0, plan.run_seconds)
            ax.grid(True, alpha=0.3)
        states_ax.set_title(RUN_TITLES[record.kind], fontsize=12, fontweight="bold")
        names = list(record.breakers)
        if names:
            for row, name in enumerate(names):
                for state, (start, end) in _state_segments(record, name):
                    states_ax.broken_barh(
                        [(start, end - start)],
                        (row - 0.4, 0.8),
                        color=_STATE_COLORS.get(state, "#999"),
                    )
            states_ax.set_yticks(range(len(names)), names)
            states_ax.set_ylim(-0.6, len(names) - 0.4)
            states_ax.invert_yaxis()
        else:
            states_ax.set_yticks([])
            states_ax.text(
                plan.run_seconds / 2, 0.5, "no breakers", ha="center", va="center", color="#777"
            )
            states_ax.set_ylim(0, 1)
        states_ax.grid(False)

        lefts = [t for t, _, _, _ in rows]
        bottom = [0.0] * len(rows)
        for outcome in OUTCOMES:
            heights = [counts[outcome] / bucket for _, counts, _, _ in rows]
            rps_ax.bar(
                lefts,
                heights,
                width=bucket,
                bottom=bottom,
                align="edge",
                color=_OUTCOME_COLORS[outcome],
                label=_OUTCOME_LABELS[outcome],
                linewidth=0,
            )
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        rps_ax.set_ylim(0, max_rps * 1.2)
        rps_ax.set_ylabel("responses / s")
        rps_ax.legend(loc="upper right", fontsize=8, ncol=4)

        # NaN where nothing finished: the line breaks instead of bridging the gap.
        mids = [t + bucket / 2 for t, _, _, _ in rows]
        p50s = [math.nan if p50 is None else max(p50 * 1000, 0.1) for _, _, p50, _ in rows]
        p99s = [math.nan if p99 is None else max(p99 * 1000, 0.1) for _, _, _, p99 in rows]
        lat_ax.plot(mids, p99s, color="#d81b60", marker=".", label="p99")
        lat_ax.plot(mids, p50s, color="#3949ab", marker=".", label="p50")
        lat_ax.axhline(plan.db_timeout * 1000, color="#555", ls="--", lw=1, label="db timeout")
        lat_ax.set_yscale("log")
        lat_ax.set_ylim(0.5, plan.client_timeout * 1000 * 8)  # room for the legend
        lat_ax.set_ylabel("latency (ms, log)")
        lat_ax.set_xlabel("seconds since the run started (by completion time)")
        lat_ax.legend(loc="upper right", fontsize=8, ncol=3)
    legend = [
        Patch(color=c, label=s)
        for s, c in _STATE_COLORS.items()
        if s in ("closed", "open", "half_open")
    ]
    legend += [
        Patch(color="#ffcdd2", label="outage: refused"),
        Patch(color="#ef9a9a", label="outage: black hole"),
    ]
    fig.legend(handles=legend, loc="upper center", ncol=len(legend), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _series(
    record: RunRecord, bucket: float
) -> list[tuple[float, dict[str, int], float | None, float | None]]:
    """Per ``bucket`` seconds of completion time: counts by outcome, p50, p99."""
    n = int(record.plan.run_seconds / bucket) + 1
    counts = [dict.fromkeys(OUTCOMES, 0) for _ in range(n)]
    latencies: list[list[float]] = [[] for _ in range(n)]
    for s in record.samples:
        i = int(s.end / bucket)
        if 0 <= i < n:
            counts[i][s.outcome] += 1
            latencies[i].append(s.latency)
    rows = []
    for i in range(n):
        values = sorted(latencies[i])
        rows.append((i * bucket, counts[i], percentile(values, 50), percentile(values, 99)))
    return rows


def _state_segments(record: RunRecord, name: str) -> list[tuple[str, tuple[float, float]]]:
    end = record.plan.run_seconds
    segments = []
    state, since = "closed", 0.0
    for tr in record.transitions:
        if tr.breaker != name:
            continue
        at = min(tr.at, end)
        if at > since:
            segments.append((state, (since, at)))
        state, since = tr.new, at
    if end > since:
        segments.append((state, (since, end)))
    return segments
