"""``resilience status URL``: the circuits of a running app, as a table.

Needs only the standard library; in a terminal it uses rich for colour when
rich is installed.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

__all__ = ("fetch_status", "format_rows", "run_status")

COLUMNS = (
    "name",
    "state",
    "failures",
    "error rate",
    "calls",
    "opened",
    "retry after",
    "last failure",
)

STATE_STYLES = {
    "closed": "green",
    "open": "bold red",
    "half_open": "yellow",
    "forced_open": "bold magenta",
    "disabled": "dim",
    "metrics_only": "cyan",
}


def fetch_status(url: str, *, timeout: float = 5.0) -> list[dict[str, Any]]:
    """GET ``url`` and return its list of breaker status dicts.

    Accepts a JSON list (what ``registry.snapshot()`` returns) or an object
    holding one under ``"circuits"`` or ``"breakers"``.

    Raises:
        OSError: the endpoint could not be reached or answered an HTTP error.
        ValueError: the answer is not such a list.
    """
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    data = json.loads(body)
    if isinstance(data, Mapping):
        for key in ("circuits", "breakers"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    if not isinstance(data, list) or not all(isinstance(item, Mapping) for item in data):
        raise ValueError("expected a JSON list of breaker status objects")
    return [dict(item) for item in data]


def _number(value: Any, fmt: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return format(value, fmt)


def format_rows(circuits: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    """One row of strings per circuit, in :data:`COLUMNS` order."""
    rows: list[tuple[str, ...]] = []
    for c in circuits:
        retry_after = c.get("retry_after")
        rows.append(
            (
                str(c.get("name", "?")),
                str(c.get("state", "?")),
                _number(c.get("failure_count"), "d"),
                _number(c.get("error_rate"), ".0%"),
                _number(c.get("calls_in_window"), "d"),
                _number(c.get("open_count"), "d"),
                "-" if not retry_after else _number(retry_after, ".1f") + "s",
                str(c.get("last_failure_category") or "-"),
            )
        )
    return rows


def _plain_table(rows: Sequence[tuple[str, ...]], out: TextIO) -> None:
    widths = [len(h) for h in COLUMNS]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in (COLUMNS, tuple("-" * w for w in widths), *rows):
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


def _rich_table(url: str, rows: Sequence[tuple[str, ...]], out: TextIO) -> bool:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return False
    table = Table(title=f"circuits at {url}", title_justify="left")
    for i, header in enumerate(COLUMNS):
        table.add_column(header, justify="right" if 2 <= i <= 6 else "left")
    for row in rows:
        style = STATE_STYLES.get(row[1], "")
        table.add_row(row[0], f"[{style}]{row[1]}[/]" if style else row[1], *row[2:])
    Console(file=out, highlight=False).print(table)
    return True


def run_status(
    url: str, *, timeout: float = 5.0, raw: bool = False, out: TextIO | None = None
) -> int:
    """Print the circuits at ``url``; 0 on success, 1 if it cannot be read."""
    out = sys.stdout if out is None else out
    try:
        circuits = fetch_status(url, timeout=timeout)
    except (OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        print(f"resilience status: cannot read {url}: {reason}", file=sys.stderr)
        return 1
    if raw:
        out.write(json.dumps(circuits, indent=2) + "\n")
        return 0
    if not circuits:
        out.write(f"no circuits at {url}\n")
        return 0
    rows = format_rows(circuits)
    # rich in a terminal (colours, fitted to its width); plain text elsewhere,
    # never truncated, for pipes and scripts.
    if not (out.isatty() and _rich_table(url, rows, out)):
        _plain_table(rows, out)
    return 0
