"""``resilience demo``: the whole scenario against a real PostgreSQL, and its parts."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from resilience._redact import redact_url as redact
from resilience.cli._demo import missing_packages
from resilience.cli._demo._dsn import dsn_host_port, dsn_with_host_port, plain_tcp
from resilience.cli._demo._plan import make_plan

pytestmark = pytest.mark.integration


def _demo(*args: str) -> list[str]:
    return [sys.executable, "-W", "error", "-m", "resilience.cli", "demo", "--no-live", *args]


def _env() -> dict[str, str]:
    # Warnings are errors in the child too (pytest's filterwarnings does not reach it).
    return {**os.environ, "PYTHONWARNINGS": "error"}


def _closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _schema_exists(dsn: str, schema: str) -> bool:
    import asyncio

    import asyncpg

    async def check() -> bool:
        conn = await asyncpg.connect(dsn)
        try:
            found = await conn.fetchval(
                "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", schema
            )
        finally:
            await conn.close()
        return bool(found)

    return asyncio.run(check())


@pytest.fixture(scope="module")
def demo_report(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One short demo run against the test PostgreSQL; its report.json."""
    out = tmp_path_factory.mktemp("demo-report")
    started = time.monotonic()
    done = subprocess.run(
        # 28 s at 200 requests/s: about 650 requests in the outage, so the one
        # half-open probe per breaker (which does wait) stays under 1% of them.
        _demo("--duration", "28", "--rate", "200", "--dsn", pg_dsn, "--out", str(out)),
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert done.stderr == "", done.stderr
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    report["_elapsed"] = elapsed
    report["_out"] = str(out)
    report["_stdout"] = done.stdout
    return report


def test_demo_finishes_within_its_duration(demo_report: dict[str, Any]) -> None:
    """A 28 s demo exits 0 within its bound (plus the interpreter's start and exit,
    which a loaded CI machine under coverage can stretch past a second)."""
    assert demo_report["complete"] is True
    assert demo_report["_elapsed"] < 28 + 3


def test_demo_writes_every_report_file(demo_report: dict[str, Any]) -> None:
    """report.md, report.html, timeline.png and report.json are written."""
    out = Path(demo_report["_out"])
    for name in ("report.md", "report.html", "report.json"):
        assert (out / name).stat().st_size > 0
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![timeline" in (out / "report.md").read_text()


def test_breakers_keep_serving_during_the_outage(demo_report: dict[str, Any]) -> None:
    """With breakers, fallbacks serve during the outage; without, nothing does."""
    with_ = demo_report["runs"]["breakers"]["outage"]
    without = demo_report["runs"]["no_breakers"]["outage"]
    assert with_["fallback_share"] > 0.3
    assert with_["served_share"] > 0.7
    assert without["fallback"] == 0
    assert with_["served_share"] > without["served_share"]


def test_breakers_cut_outage_p99_latency(demo_report: dict[str, Any]) -> None:
    """p99 during the outage is at least 10x lower with breakers."""
    comparison = demo_report["comparison"]
    ratio = comparison["outage_p99_ratio"]
    print(f"outage p99: {comparison['outage_p99_ms']} ms, ratio {ratio}x")
    assert ratio is not None
    assert ratio >= 10, comparison


def test_no_request_waits_while_its_circuit_is_open(demo_report: dict[str, Any]) -> None:
    """No request of the breaker run waited for a timeout with its circuit open."""
    assert demo_report["runs"]["breakers"]["outage"]["waited_while_open"] == 0


def test_breakers_open_and_close_again(demo_report: dict[str, Any]) -> None:
    """Each primary-side breaker opens in the outage and is closed at the end."""
    run = demo_report["runs"]["breakers"]
    for name in ("users-db", "pg-primary"):
        moves = [t for t in run["transitions"] if t["breaker"] == name]
        assert any(t["to"] == "open" for t in moves), moves
        assert moves[-1]["to"] == "closed", moves
    assert not any(t["breaker"] == "pg-replica" for t in run["transitions"])


def test_demo_stops_what_it_started(demo_report: dict[str, Any], pg_dsn: str) -> None:
    """The app's port and both proxies' ports are closed; the schema is dropped."""
    settings = demo_report["settings"]
    for port in settings["ports"].values():
        assert _closed(port), port
    assert not _schema_exists(pg_dsn, settings["schema"])


def test_demo_prints_the_summary(demo_report: dict[str, Any]) -> None:
    """The plain output ends with the summary table and the report's path."""
    stdout = demo_report["_stdout"]
    assert "p99 latency during the outage" in stdout
    assert "report.json" in stdout
    assert "== run 1/2: with breakers" in stdout
    assert "== run 2/2: without breakers" in stdout


def test_ctrl_c_stops_everything(pg_dsn: str, tmp_path: Path) -> None:
    """SIGINT mid-run exits 130 and leaves no port open and no schema behind."""
    proc = subprocess.Popen(
        _demo("--duration", "60", "--dsn", pg_dsn, "--out", str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    lines = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("== run 1/2") or not line:
                break
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        rest, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(lines) + rest
    assert proc.returncode == 130, f"{text}\n{stderr}"
    assert "interrupted" in stderr
    app_line = next(line for line in text.splitlines() if line.startswith("app at "))
    ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", app_line)]
    assert len(ports) == 4, app_line  # app (twice: its URL and status URL), two proxies
    for port in ports:
        assert _closed(port), port
    schema = re.search(r"seeded schema (\w+)", text)
    assert schema is not None, text
    assert not _schema_exists(pg_dsn, schema.group(1))
    assert not (tmp_path / "report.json").exists()


# -- the parts ---------------------------------------------------------------


def test_demo_extra_is_installed() -> None:
    """The test environment has every package of the demo extra."""
    assert missing_packages() == []


def test_missing_extra_is_reported(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """Without the demo extra, the demo says what to install and exits 2."""
    import importlib.util

    from resilience.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "rich" else real(name, *a)
    )
    assert main(["demo", "--duration", "20"]) == 2
    assert "resilience-patterns[demo]" in capsys.readouterr().err


def test_too_short_a_duration_is_refused(capsys: Any) -> None:
    """--duration below the minimum is a usage error."""
    from resilience.cli import main

    assert main(["demo", "--duration", "5"]) == 2
    assert "--duration" in capsys.readouterr().err


@pytest.mark.parametrize("run_seconds", [6.0, 8.0, 13.7, 28.0, 120.0])
def test_plan_phases_cover_the_run(run_seconds: float) -> None:
    """Phases are contiguous: healthy, refused, black hole, recovery."""
    plan = make_plan(run_seconds)
    assert [p.name for p in plan.phases] == ["steady", "refuse", "blackhole", "recovery"]
    assert plan.phases[0].start == 0
    for before, after in zip(plan.phases, plan.phases[1:], strict=False):
        assert before.end == after.start
    assert plan.phases[-1].end == pytest.approx(plan.run_seconds)


@pytest.mark.parametrize("run_seconds", [6.0, 28.0, 120.0])
def test_recovery_leaves_time_to_close(run_seconds: float) -> None:
    """The recovery outlasts the longest open period plus a hung probe."""
    plan = make_plan(run_seconds)
    recovery = plan.phases[-1]
    longest_open = plan.breaker["max_recovery_timeout"]
    assert recovery.end - recovery.start > longest_open + plan.db_timeout


def test_dsn_helpers() -> None:
    """DSNs are re-pointed at a proxy with credentials kept, and redacted for print."""
    url = "postgresql://app:s3cret@db.local:6543/shop?application_name=x"
    assert dsn_host_port(url) == ("db.local", 6543)
    moved = dsn_with_host_port(url, "127.0.0.1", 5000)
    assert moved == "postgresql://app:s3cret@127.0.0.1:5000/shop?application_name=x"
    assert plain_tcp(moved).endswith("&sslmode=disable")
    assert plain_tcp(moved + "&sslmode=require") == moved + "&sslmode=require"
    assert "s3cret" not in redact(url)
    kv = "host=127.0.0.1 port=5433 user=app password='p w' dbname=shop"
    assert dsn_host_port(kv) == ("127.0.0.1", 5433)
    assert dsn_with_host_port(kv, "127.0.0.1", 7000) == "postgresql://app:p%20w@127.0.0.1:7000/shop"
    assert "p w" not in redact(kv)
    with pytest.raises(ValueError, match="Unix socket"):
        dsn_host_port("postgresql:///shop?host=/var/run/postgresql")


# -- options checked before anything starts (issue 15) ---------------------------


def _demo_error(capsys: Any, *argv: str) -> tuple[int, str]:
    from resilience.cli import main

    try:
        code = main(["demo", "--no-live", *argv])
    except SystemExit as usage:  # argparse's own checks
        code = int(usage.code or 0)
    err = capsys.readouterr().err
    return code, err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_a_dsn_password_in_the_query_is_never_printed(capsys: Any, tmp_path: Path) -> None:
    """`--dsn ...?password=...` is shown redacted (here the DSN is refused up front)."""
    code, err = _demo_error(
        capsys, "--dsn", "postgresql://u@/db?host=/tmp/sock&password=hunter2", "--out",
        str(tmp_path),
    )  # fmt: skip
    assert code == 2
    line = _one_line(err)
    assert "hunter2" not in line and "--dsn" in line


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--duration", "inf"), ("--duration", "1e9"), ("--rate", "inf"), ("--rate", "1e12"),
     ("--duration", "nan"), ("--concurrency", "100000000")],
)  # fmt: skip
def test_unbounded_durations_and_rates_are_refused(
    capsys: Any, tmp_path: Path, flag: str, value: str
) -> None:
    """Infinite or huge --duration/--rate/--concurrency are refused in one line, exit 2."""
    code, err = _demo_error(capsys, flag, value, "--out", str(tmp_path))
    assert code == 2
    assert flag in _one_line(err)


def test_an_unwritable_out_is_refused_before_the_run(capsys: Any, tmp_path: Path) -> None:
    """--out that cannot be written is found before anything starts."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = _demo_error(capsys, "--out", str(blocker / "report"))
    assert code == 2
    assert "--out" in _one_line(err)


@pytest.mark.parametrize(
    "url", ["not a url", "http://127.0.0.1:6379", "redis://127.0.0.1:6379/zero", "redis://"]
)
def test_a_malformed_redis_url_is_refused(capsys: Any, tmp_path: Path, url: str) -> None:
    """A malformed --redis-url is one line naming it."""
    code, err = _demo_error(capsys, "--redis-url", url, "--out", str(tmp_path))
    assert code == 2
    assert "--redis-url" in _one_line(err)


def test_an_unreachable_redis_url_is_refused_up_front(capsys: Any, tmp_path: Path) -> None:
    """A --redis-url where nothing listens is refused before the run, password redacted."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    code, err = _demo_error(
        capsys, "--redis-url", f"redis://:topsecret@127.0.0.1:{port}/0", "--out", str(tmp_path)
    )
    assert code == 2
    line = _one_line(err)
    assert "--redis-url" in line and "topsecret" not in line


def test_a_reachable_redis_url_passes_the_check(redis_url: str) -> None:
    """The machine's Redis answers PING: the check passes."""
    from resilience.cli._demo._preflight import check_redis

    check_redis(redis_url)


def test_the_dsn_password_never_reaches_the_terminal(tmp_path: Path) -> None:
    """A run against a DSN with ?password= and sslpassword= prints neither (it fails to connect)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dsn = f"postgresql://u@127.0.0.1:{port}/db?password=hunter2&sslpassword=opensesame"
    done = subprocess.run(
        [sys.executable, "-m", "resilience.cli", "demo", "--no-live", "--duration", "12",
         "--out", str(tmp_path), "--dsn", dsn],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    printed = done.stdout + done.stderr
    assert done.returncode == 1
    assert "using PostgreSQL at" in printed
    assert "hunter2" not in printed and "opensesame" not in printed
    assert "Traceback" not in printed
