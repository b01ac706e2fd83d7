"""``resilience status URL`` against a real HTTP server serving a snapshot."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from resilience import Registry
from resilience.cli import main
from resilience.cli._status import format_rows


def _snapshot() -> list[dict[str, Any]]:
    registry = Registry()
    registry.get_or_create("users-db")
    orders = registry.get_or_create("orders-db", failure_threshold=2, recovery_timeout=30)
    registry.get_or_create("search").disable()
    for _ in range(2):
        permit = orders.try_acquire()
        assert permit is not None
        permit.failure(ConnectionError("refused"))
    return registry.snapshot()


class _Handler(BaseHTTPRequestHandler):
    bodies: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.bodies.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A local HTTP server: /list (a snapshot), /wrapped ({"circuits": ...}), /bad."""
    snapshot = _snapshot()
    _Handler.bodies = {
        "/list": json.dumps(snapshot).encode(),
        "/wrapped": json.dumps({"circuits": snapshot}).encode(),
        "/empty": b"[]",
        "/bad": b'{"hello": "world"}',
    }
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_prints_a_table_of_the_circuits(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each circuit is a row with its state, failures and retry-after."""
    assert main(["status", f"{server}/list"]) == 0
    out = capsys.readouterr().out
    for text in ("users-db", "orders-db", "search", "closed", "open", "disabled"):
        assert text in out
    assert "CONNECTION_ERROR" in out


def test_reads_the_middleware_status_format(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``{"circuits": [...]}`` (ResilienceMiddleware's status endpoint) works too."""
    assert main(["status", f"{server}/wrapped"]) == 0
    assert "orders-db" in capsys.readouterr().out


def test_json_prints_the_list(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints the circuits as JSON."""
    assert main(["status", "--json", f"{server}/wrapped"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in data] == ["users-db", "orders-db", "search"]


def test_no_circuits(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty list says so."""
    assert main(["status", f"{server}/empty"]) == 0
    assert "no circuits" in capsys.readouterr().out


@pytest.mark.parametrize("path", ["/bad", "/missing"])
def test_unreadable_answer_fails(
    server: str, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A non-list answer or an HTTP error exits 1 with a message."""
    assert main(["status", f"{server}{path}"]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_unreachable_server_fails(capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listening exits 1 with a message."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert main(["status", "--timeout", "2", f"http://127.0.0.1:{port}/"]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_rows_format_numbers() -> None:
    """Rows show rates as percentages and seconds with a unit."""
    rows = {row[0]: row for row in format_rows(_snapshot())}
    _, state, failures, rate, calls, opened, retry, category = rows["orders-db"]
    assert (state, failures, rate, calls, opened) == ("open", "2", "100%", "2", "1")
    assert retry.endswith("s")
    assert category == "CONNECTION_ERROR"
    assert rows["users-db"][6] == "-"


def test_help_needs_no_extra() -> None:
    """``resilience --help`` imports none of the demo's packages."""
    code = (
        "import sys; from resilience.cli import build_parser; build_parser(); "
        "import resilience.cli._status; "
        "print([m for m in ('rich', 'starlette', 'uvicorn', 'asyncpg', 'aiocache', "
        "'matplotlib', 'httpx') if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert done.stdout.strip() == "[]"


def test_python_m_resilience_cli() -> None:
    """``python -m resilience.cli --help`` lists both commands."""
    done = subprocess.run(
        [sys.executable, "-m", "resilience.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert "demo" in done.stdout and "status" in done.stdout


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a command, the usage goes to stderr and the exit status is 2."""
    assert main([]) == 2
    assert "usage: resilience" in capsys.readouterr().err
