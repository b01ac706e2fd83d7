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


# -- issue 15: literal names, tokens, bounded answers ---------------------------------


class _TokenHandler(BaseHTTPRequestHandler):
    """/guarded needs `Bearer s3cret`; /endless streams forever; /huge is 20 MiB."""

    def do_GET(self) -> None:
        if self.path == "/guarded":
            if self.headers.get("Authorization") != "Bearer s3cret":
                self.send_error(401)
                return
            body = json.dumps([{"name": "svc[/]", "state": "open"}]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path in ("/endless", "/huge"):
            self.send_response(200)
            self.end_headers()
            chunk = b" " * 65536
            for _ in range(320):  # 20 MiB at most, then stop by itself
                try:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                except OSError:
                    return
                if self.path == "/endless":
                    threading.Event().wait(0.05)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def token_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_a_token_protected_endpoint_is_read_with_token(
    token_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--token sends the bearer token; without it, a one-line hint."""
    assert main(["status", f"{token_server}/guarded"]) == 1
    err = capsys.readouterr().err
    assert "401" in err and "--token" in err and len(err.strip().splitlines()) == 1
    assert main(["status", f"{token_server}/guarded", "--token", "s3cret"]) == 0
    assert "svc[/]" in capsys.readouterr().out


def test_the_token_comes_from_the_environment(
    token_server: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """RESILIENCE_STATUS_TOKEN is the default token."""
    monkeypatch.setenv("RESILIENCE_STATUS_TOKEN", "s3cret")
    assert main(["status", f"{token_server}/guarded"]) == 0


@pytest.mark.parametrize("name", ["svc[/]", "[link=https://e.x]y[/]", "[bold]b"])
def test_breaker_names_are_printed_literally(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Names are never rich markup: they print as they are, with no escapes."""
    import io

    monkeypatch.setenv("COLUMNS", "200")  # room for the whole name on one line
    from resilience.cli._status import _rich_table

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    assert _rich_table("http://x", format_rows([{"name": name, "state": "open"}]), out)
    text = out.getvalue()
    assert name in text
    assert "\x1b]8;" not in text  # no hyperlink escape


def test_an_endless_body_is_bounded_in_time(
    token_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--timeout bounds the whole answer, not each read."""
    assert main(["status", f"{token_server}/endless", "--timeout", "0.5"]) == 1
    assert "timed out" in capsys.readouterr().err


def test_a_huge_body_is_bounded_in_size(token_server: str) -> None:
    """An answer larger than max_bytes is refused, not read to the end."""
    from resilience.cli._status import fetch_status

    with pytest.raises(ValueError, match="larger than"):
        fetch_status(f"{token_server}/huge", timeout=10, max_bytes=1_000_000)
