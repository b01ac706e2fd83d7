"""Fixtures for tests that talk to a real PostgreSQL and Redis.

Each server is taken from an environment variable, with the local default
below; when nothing answers there, a throwaway server is started for the
session (and stopped after it), so these tests never skip silently. Tests
never stop or reconfigure the servers they are given: to rehearse an outage,
put a ``FaultProxy`` in front.

    RESILIENCE_TEST_PG_DSN     default postgresql://postgres@127.0.0.1:5432/test
    RESILIENCE_TEST_REDIS_URL  default redis://127.0.0.1:6379/0

Tests under ``tests/live`` are marked ``integration`` by that
directory's own conftest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from hypothesis import settings

from resilience.testing._servers import ensure_postgres, ensure_redis

# Property tests draw the same examples on every run (a fixed seed per test),
# so a CI run cannot pass or fail by the luck of the draw. To search afresh:
# RESILIENCE_HYPOTHESIS=explore pytest ...
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("RESILIENCE_HYPOTHESIS", "deterministic"))

PG_DSN_ENV = "RESILIENCE_TEST_PG_DSN"
PG_DSN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL_ENV = "RESILIENCE_TEST_REDIS_URL"
REDIS_URL_DEFAULT = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A DSN for a PostgreSQL that answers: the configured one, else a throwaway one."""
    with ensure_postgres(os.environ.get(PG_DSN_ENV, PG_DSN_DEFAULT)) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def pg_host_port(pg_dsn: str) -> tuple[str, int]:
    """``(host, port)`` of :func:`pg_dsn`, e.g. to put a FaultProxy in front of it."""
    parts = urlsplit(pg_dsn)
    return parts.hostname or "127.0.0.1", parts.port or 5432


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A URL for a Redis that answers: the configured one, else a throwaway one."""
    with ensure_redis(os.environ.get(REDIS_URL_ENV, REDIS_URL_DEFAULT)) as url:
        yield url


@pytest.fixture(scope="session")
def redis_host_port(redis_url: str) -> tuple[str, int]:
    """``(host, port)`` of :func:`redis_url`, e.g. to put a FaultProxy in front of it."""
    parts = urlsplit(redis_url)
    return parts.hostname or "127.0.0.1", parts.port or 6379
