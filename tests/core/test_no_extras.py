"""The core, the testing helpers and the CLI's help need no optional extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap

EXTRAS = (
    "asyncpg", "aiocache", "redis", "starlette", "fastapi", "django", "prometheus_client",
    "opentelemetry", "rich", "matplotlib", "httpx", "uvicorn", "pgserver",
    "sqlalchemy", "psycopg", "psycopg2", "aiohttp", "httpcore", "valkey",
)  # fmt: skip

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys

    BLOCKED = set(sys.argv[1:])

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ImportError(f"extra {name!r} is not installed (blocked)")
            return None

    sys.meta_path.insert(0, Blocker())
    try:
        import asyncpg
    except ImportError:
        pass
    else:
        raise AssertionError("the blocker does not block")

    import resilience
    from resilience import CircuitBreaker, CircuitOpenError, fallback, retry, circuit
    from resilience.testing import FakeClock, FaultProxy, ThrowawayPostgres, capture_events
    from resilience.cli import main

    clock = FakeClock()
    breaker = CircuitBreaker("core-only", clock=clock, failure_threshold=1)

    @fallback(default="stale")
    @breaker
    async def get() -> str:
        raise ConnectionError("down")

    assert asyncio.run(get()) == "stale"
    assert breaker.state == "open"
    try:
        main(["--help"])
    except SystemExit as done:
        assert done.code == 0
    loaded = sorted(m for m in BLOCKED if m in sys.modules)
    assert not loaded, loaded
    print("core-only ok")
    """
)


def test_core_testing_helpers_and_cli_help_import_without_extras() -> None:
    """With every extra's import blocked, the core still works."""
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", SCRIPT, *EXTRAS],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "core-only ok" in done.stdout
