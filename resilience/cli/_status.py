"""``resilience status URL``: the circuits of a running app, as a table.

Needs only the standard library; in a terminal it uses rich for colour when
rich is installed.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from .._redact import redact_url

__all__ = ("MAX_BODY", "TOKEN_ENV", "fetch_status", "format_rows", "run_status")

MAX_BODY = 8 * 1024 * 1024
"""The largest status answer read (bytes): a registry's snapshot is far smaller."""
TOKEN_ENV = "RESILIENCE_STATUS_TOKEN"
"""The environment variable ``--token`` defaults to."""

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


def fetch_status(
    url: str, *, timeout: float = 5.0, token: str | None = None, max_bytes: int = MAX_BODY
) -> list[dict[str, Any]]:
    """GET ``url`` and return its list of breaker status dicts.

    Accepts a JSON list (what ``registry.snapshot()`` returns) or an object
    holding one under ``"circuits"`` or ``"breakers"``. ``token`` is sent as
    ``Authorization: Bearer <token>`` (the middleware's ``status_guard``).
    ``timeout`` bounds the whole exchange, body included, and at most
    ``max_bytes`` are read.

    Raises:
        OSError: the endpoint could not be reached, answered an HTTP error,
            or took longer than ``timeout`` (``TimeoutError``).
        ValueError: the answer is not such a list, or is larger than ``max_bytes``.
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError("expected an http:// or https:// URL")
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    with urllib.request.urlopen(request, timeout=timeout) as response:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete answer within {timeout:g} s")
            _set_timeout(response, left)
            chunk = response.read1(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise ValueError(f"the answer is larger than {max_bytes:,} bytes")
            chunks.append(chunk)
    data = json.loads(b"".join(chunks))
    if isinstance(data, Mapping):
        for key in ("circuits", "breakers"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    if not isinstance(data, list) or not all(isinstance(item, Mapping) for item in data):
        raise ValueError("expected a JSON list of breaker status objects")
    return [dict(item) for item in data]


def _set_timeout(response: Any, seconds: float) -> None:
    """Bound the next socket read of ``response`` (the time left overall)."""
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    if isinstance(sock, socket.socket):
        sock.settimeout(max(seconds, 0.001))


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
        from rich.text import Text
    except ImportError:
        return False
    table = Table(title=Text(f"circuits at {url}"), title_justify="left")
    for i, header in enumerate(COLUMNS):
        table.add_column(header, justify="right" if 2 <= i <= 6 else "left")
    for row in rows:
        # Text, never markup: a breaker name like "svc[/]" or "[link=...]" is
        # printed as it is.
        cells = [Text(cell) for cell in row]
        cells[1].stylize(STATE_STYLES.get(row[1], ""))
        table.add_row(*cells)
    Console(file=out, highlight=False).print(table)
    return True


def run_status(
    url: str,
    *,
    timeout: float = 5.0,
    raw: bool = False,
    out: TextIO | None = None,
    token: str | None = None,
) -> int:
    """Print the circuits at ``url``; 0 on success, 1 if it cannot be read.
    ``token`` defaults to the ``RESILIENCE_STATUS_TOKEN`` environment variable."""
    out = sys.stdout if out is None else out
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    shown = redact_url(url)
    try:
        circuits = fetch_status(url, timeout=timeout, token=token)
    except urllib.error.HTTPError as exc:
        hint = " (send a token: --token or RESILIENCE_STATUS_TOKEN)" if exc.code == 401 else ""
        print(f"resilience status: cannot read {shown}: HTTP {exc.code}{hint}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        print(f"resilience status: cannot read {shown}: {reason}", file=sys.stderr)
        return 1
    if raw:
        out.write(json.dumps(circuits, indent=2) + "\n")
        return 0
    if not circuits:
        out.write(f"no circuits at {shown}\n")
        return 0
    rows = format_rows(circuits)
    # rich in a terminal (colours, fitted to its width); plain text elsewhere,
    # never truncated, for pipes and scripts.
    if not (out.isatty() and _rich_table(shown, rows, out)):
        _plain_table(rows, out)
    return 0
