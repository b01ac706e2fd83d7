"""Checked by mypy --strict (``.ci/typecheck``): the httpx transport, the test
switch and ``extend_open`` are typed as documented.

Imported by pytest too (it holds no tests).
"""

from __future__ import annotations

from typing import assert_type

import httpx

from resilience import CircuitBreaker, ErrorCategory, classify, retry
from resilience.integrations.httpx import ResilientTransport, origin_of
from resilience.testing import TestingSwitch, is_testing, set_testing


def _transport() -> None:
    transport = ResilientTransport(httpx.MockTransport(lambda r: httpx.Response(200)), name="x")
    assert_type(transport.breaker_for("https://a.test/"), CircuitBreaker)
    assert_type(transport.breakers, dict[str, CircuitBreaker])
    assert_type(origin_of(httpx.URL("https://a.test/")), str)
    httpx.AsyncClient(transport=transport)
    httpx.Client(transport=transport)


def _switch() -> None:
    with set_testing(attempts=1) as switch:
        assert_type(switch, TestingSwitch)
    assert_type(is_testing(), bool)


def _breaker(breaker: CircuitBreaker) -> None:
    assert_type(breaker.extend_open(30.0), float | None)
    assert_type(classify(ValueError()), ErrorCategory)


@retry(attempts=3, wait=0.1, on=(httpx.ConnectError, httpx.ConnectTimeout))
async def fetch(client: httpx.AsyncClient, url: str) -> httpx.Response:
    return await client.get(url)


async def _call(client: httpx.AsyncClient) -> None:
    assert_type(await fetch(client, "https://a.test/"), httpx.Response)
