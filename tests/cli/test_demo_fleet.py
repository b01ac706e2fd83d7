"""``resilience demo --workers N``: the fleet act, against the test PostgreSQL and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def fleet_report(
    pg_dsn: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    """One short fleet act (3 workers); its fleet-report.json."""
    out = tmp_path_factory.mktemp("fleet-report")
    done = subprocess.run(
        [sys.executable, "-m", "resilience.cli", "demo", "--no-live", "--workers", "3",
         "--duration", "30", "--dsn", pg_dsn, "--redis-url", redis_url, "--out", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "probes per recovery period" in done.stdout
    assert (out / "fleet-report.md").read_text().startswith("# resilience demo: the fleet act")
    report: dict[str, object] = json.loads((out / "fleet-report.json").read_text())
    return report


def test_sharing_cuts_the_calls_that_reach_the_dead_database(
    fleet_report: dict[str, object],
) -> None:
    """With the store, the fleet sends the dead database fewer calls than each process alone."""
    results = fleet_report["results"]
    assert isinstance(results, dict)
    assert results["fleet"]["failed"] < results["local"]["failed"]


def test_sharing_sends_one_probe_per_recovery_period(fleet_report: dict[str, object]) -> None:
    """With the store about one probe per period for the fleet; alone, one per process."""
    results = fleet_report["results"]
    assert isinstance(results, dict)
    assert results["fleet"]["probes_per_period"] <= 1.5
    assert results["local"]["probes_per_period"] >= 2


def test_the_fleet_act_refuses_too_many_workers(tmp_path: Path) -> None:
    """--workers beyond the bound is one line, exit 2."""
    done = subprocess.run(
        [sys.executable, "-m", "resilience.cli", "demo", "--workers", "99", "--out",
         str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--workers" in done.stderr and len(done.stderr.strip().splitlines()) == 1
