"""classify() on real aiohttp errors from the local HTTP server of test_httpx_live."""

from __future__ import annotations

import pytest

aiohttp = pytest.importorskip("aiohttp")

from resilience import ErrorCategory, classify  # noqa: E402

from .test_httpx_live import Server, refused_url, server  # noqa: E402, F401

C = ErrorCategory


async def test_raise_for_status_errors_classify_by_status(server: Server) -> None:  # noqa: F811
    """404 a query error, 403 authentication, 503 resource."""
    expected = {404: C.QUERY_ERROR, 403: C.AUTHENTICATION_ERROR, 503: C.RESOURCE_ERROR}
    async with aiohttp.ClientSession() as session:
        for status, category in expected.items():
            async with session.get(f"{server.url}/status/{status}") as response:
                with pytest.raises(aiohttp.ClientResponseError) as info:
                    response.raise_for_status()
            assert classify(info.value) is category


async def test_a_refused_connection_is_a_connection_error() -> None:
    """ClientConnectorError from a real refused port."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await session.get(refused_url())
    assert classify(info.value) is C.CONNECTION_ERROR


async def test_a_read_timeout_is_a_timeout(server: Server) -> None:  # noqa: F811
    """A server that never answers: aiohttp's timeout, classified TIMEOUT."""
    timeout = aiohttp.ClientTimeout(sock_read=0.2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with pytest.raises(aiohttp.ServerTimeoutError) as info:
            await session.get(f"{server.url}/hang")
    assert classify(info.value) is C.TIMEOUT_ERROR
