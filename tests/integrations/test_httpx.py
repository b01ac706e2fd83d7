"""ResilientTransport with httpx.MockTransport (a real local server: tests/live)."""

from __future__ import annotations

import email.utils
from collections.abc import Callable

import httpx
import pytest

from resilience import CircuitConfig, CircuitOpenError, CircuitState, ErrorCategory, Registry
from resilience.integrations.httpx import ResilientTransport, origin_of
from resilience.testing import FakeClock

URL = "http://upstream.test/items"


class Upstream:
    """A scripted upstream: answers with ``status`` (or raises ``error``) and counts calls."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = headers or {}
        self.error: Exception | None = None
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return httpx.Response(self.status, headers=self.headers, request=request)


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
def make(isolated_registry: Registry, upstream: Upstream) -> Callable[..., ResilientTransport]:
    def build(**config: object) -> ResilientTransport:
        config.setdefault("failure_threshold", 2)
        config.setdefault("recovery_timeout", 10)
        return ResilientTransport(
            httpx.MockTransport(upstream), registry=isolated_registry, **config
        )

    return build


async def test_responses_are_returned_as_they_are(
    make: Callable[..., ResilientTransport], upstream: Upstream
) -> None:
    """A 200 comes back untouched and counts as a success."""
    transport = make()
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(URL)
    assert response.status_code == 200
    assert transport.breaker_for(URL).metrics()["successful_calls"] == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_client_errors_never_open_the_circuit(
    make: Callable[..., ResilientTransport], upstream: Upstream, status: int
) -> None:
    """4xx other than 429 are the caller's business: counted as successes."""
    upstream.status = status
    transport = make()
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(5):
            assert (await client.get(URL)).status_code == status
    assert transport.breaker_for(URL).state is CircuitState.CLOSED


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
async def test_server_errors_and_429_open_the_circuit(
    make: Callable[..., ResilientTransport], upstream: Upstream, status: int
) -> None:
    """5xx and 429 are failures: two of them open the circuit (threshold 2)."""
    upstream.status = status
    transport = make()
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(2):
            assert (await client.get(URL)).status_code == status
    assert transport.breaker_for(URL).state is CircuitState.OPEN


async def test_an_open_circuit_sends_nothing(
    make: Callable[..., ResilientTransport], upstream: Upstream
) -> None:
    """Once open, requests raise CircuitOpenError without reaching the upstream."""
    upstream.status = 500
    transport = make()
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
        await client.get(URL)
        with pytest.raises(CircuitOpenError) as info:
            await client.get(URL)
    assert upstream.calls == 2
    assert info.value.name == "http://upstream.test:80"


async def test_connect_errors_are_counted_as_connection_failures(
    make: Callable[..., ResilientTransport], upstream: Upstream
) -> None:
    """A refused connection is a CONNECTION_ERROR failure, re-raised unchanged."""
    upstream.error = httpx.ConnectError("refused")
    transport = make()
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(2):
            with pytest.raises(httpx.ConnectError):
                await client.get(URL)
    breaker = transport.breaker_for(URL)
    assert breaker.state is CircuitState.OPEN
    assert breaker.metrics()["failures_by_category"] == {"CONNECTION_ERROR": 2}


async def test_timeouts_are_counted(
    make: Callable[..., ResilientTransport], upstream: Upstream
) -> None:
    """A read timeout is a TIMEOUT_ERROR failure."""
    upstream.error = httpx.ReadTimeout("slow")
    transport = make(failure_threshold=1)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(URL)
    assert transport.breaker_for(URL).status()["last_failure_category"] == "TIMEOUT_ERROR"


async def test_caller_mistakes_in_the_transport_are_ignored(
    make: Callable[..., ResilientTransport], upstream: Upstream
) -> None:
    """An unsupported protocol (the caller's URL) leaves the circuit CLOSED."""
    upstream.error = httpx.UnsupportedProtocol("ftp")
    transport = make(failure_threshold=1)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.UnsupportedProtocol):
            await client.get(URL)
    breaker = transport.breaker_for(URL)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics()["ignored_calls"] == 1


async def test_one_breaker_per_origin(
    make: Callable[..., ResilientTransport], upstream: Upstream
) -> None:
    """A sick origin opens only its own circuit."""
    upstream.status = 503
    transport = make(failure_threshold=1)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("https://a.test/x")
        upstream.status = 200
        assert (await client.get("https://b.test/x")).status_code == 200
        with pytest.raises(CircuitOpenError):
            await client.get("https://a.test/other/path")
    assert sorted(transport.breakers) == ["https://a.test:443", "https://b.test:443"]


async def test_name_shares_one_breaker(isolated_registry: Registry, upstream: Upstream) -> None:
    """With name=, every origin goes through the same breaker."""
    upstream.status = 500
    transport = ResilientTransport(
        httpx.MockTransport(upstream), registry=isolated_registry, name="partners",
        failure_threshold=1,
    )  # fmt: skip
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("https://a.test/")
        with pytest.raises(CircuitOpenError):
            await client.get("https://b.test/")
    assert list(transport.breakers) == ["partners"]
    assert isolated_registry.get("partners") is transport.breaker_for("https://c.test/")


async def test_retry_after_seconds_lengthens_the_open_period(
    make: Callable[..., ResilientTransport], upstream: Upstream, fake_clock: FakeClock
) -> None:
    """A 503 saying Retry-After: 120 keeps the circuit open 120 s, not 10 s."""
    upstream.status = 503
    upstream.headers = {"Retry-After": "120"}
    transport = make(failure_threshold=1)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
        breaker = transport.breaker_for(URL)
        fake_clock.advance(119)
        assert breaker.state is CircuitState.OPEN
        fake_clock.advance(1)
        assert breaker.state is CircuitState.HALF_OPEN


async def test_retry_after_is_capped_by_max_recovery_timeout(
    make: Callable[..., ResilientTransport], upstream: Upstream, fake_clock: FakeClock
) -> None:
    """A day's Retry-After is held to max_recovery_timeout."""
    upstream.status = 429
    upstream.headers = {"Retry-After": "86400"}
    transport = make(failure_threshold=1, max_recovery_timeout=60)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
    assert transport.breaker_for(URL).status()["retry_after"] == pytest.approx(60)


async def test_retry_after_as_an_http_date(
    make: Callable[..., ResilientTransport], upstream: Upstream, fake_clock: FakeClock
) -> None:
    """An HTTP-date Retry-After is read against the breaker's wall clock."""
    upstream.status = 503
    upstream.headers = {"Retry-After": email.utils.formatdate(fake_clock.time() + 90, usegmt=True)}
    transport = make(failure_threshold=1)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
    assert transport.breaker_for(URL).status()["retry_after"] == pytest.approx(90, abs=1)


async def test_an_unreadable_retry_after_is_ignored(
    make: Callable[..., ResilientTransport], upstream: Upstream
) -> None:
    """Garbage in Retry-After leaves the configured period."""
    upstream.status = 503
    upstream.headers = {"Retry-After": "soon-ish"}
    transport = make(failure_threshold=1)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
    assert transport.breaker_for(URL).status()["retry_after"] == pytest.approx(10)


async def test_retry_after_on_a_500_is_not_honoured(
    make: Callable[..., ResilientTransport], upstream: Upstream
) -> None:
    """Only 503 and 429 carry a meaningful Retry-After."""
    upstream.status = 500
    upstream.headers = {"Retry-After": "120"}
    transport = make(failure_threshold=1)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
    assert transport.breaker_for(URL).status()["retry_after"] == pytest.approx(10)


def test_sync_clients_are_guarded_too(
    make: Callable[..., ResilientTransport], upstream: Upstream
) -> None:
    """httpx.Client with the same transport: counted, and rejected when open."""
    upstream.status = 502
    transport = make()
    with httpx.Client(transport=transport) as client:
        client.get(URL)
        client.get(URL)
        with pytest.raises(CircuitOpenError):
            client.get(URL)
    assert upstream.calls == 2


async def test_a_category_policy_applies_to_statuses(
    make: Callable[..., ResilientTransport], upstream: Upstream
) -> None:
    """A 500 is judged like raise_for_status()'s error: policy can ignore it."""
    from resilience import Outcome

    upstream.status = 500
    transport = make(
        failure_threshold=1, category_policy={ErrorCategory.UNKNOWN_ERROR: Outcome.IGNORED}
    )
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(URL)
    assert transport.breaker_for(URL).state is CircuitState.CLOSED


def test_origin_names_carry_no_credentials() -> None:
    """User info, path and query never reach a breaker's name."""
    url = httpx.URL("https://user:secret@api.test:8443/p?token=abc")
    assert origin_of(url) == "https://api.test:8443"
    assert origin_of(httpx.URL("http://[::1]/")) == "http://[::1]:80"


def test_bad_settings_fail_at_construction() -> None:
    """An unknown or invalid breaker setting is an error before any request."""
    with pytest.raises(TypeError):
        ResilientTransport(failure_treshold=3)
    with pytest.raises(ValueError):
        ResilientTransport(failure_threshold=0)
    with pytest.raises(TypeError, match="transport"):
        ResilientTransport(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        ResilientTransport(name="")


def test_a_config_object_is_accepted() -> None:
    """config= with extra fields layered on it."""
    transport = ResilientTransport(
        config=CircuitConfig(failure_threshold=7), recovery_timeout=5, registry=Registry()
    )
    breaker = transport.breaker_for(URL)
    assert (breaker.config.failure_threshold, breaker.config.recovery_timeout) == (7, 5)


async def test_a_sync_only_transport_refuses_async_clients(isolated_registry: Registry) -> None:
    """Using a sync transport from AsyncClient says so."""
    transport = ResilientTransport(httpx.HTTPTransport(), registry=isolated_registry)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(TypeError, match="sync transport"):
            await client.get(URL)
    transport.close()


async def test_cancellation_is_not_counted(
    make: Callable[..., ResilientTransport], upstream: Upstream
) -> None:
    """A cancelled request returns its permit and counts nothing."""
    import asyncio

    upstream.error = asyncio.CancelledError()  # type: ignore[assignment]
    transport = make(failure_threshold=1)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(asyncio.CancelledError):
            await client.get(URL)
    breaker = transport.breaker_for(URL)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics()["failed_calls"] == 0


def test_a_relative_url_has_no_breaker(isolated_registry: Registry) -> None:
    """breaker_for("/items") is an error naming the URL, not a breaker for '://:0'."""
    transport = ResilientTransport(registry=isolated_registry)
    with pytest.raises(ValueError, match="/items"):
        transport.breaker_for("/items")
    assert len(isolated_registry) == 0
