"""OpenTelemetry metrics (in-memory metric reader) and span events (in-memory exporter)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from resilience import (
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    Registry,
)
from resilience.integrations.asgi import ResilienceMiddleware
from resilience.integrations.otel import Instrumentation, instrument, record_rejection
from resilience.testing import FakeClock


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Iterator[Tracer]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("tests")
    provider.shutdown()


@pytest.fixture
def instrumented(
    isolated_registry: Registry, meter_provider: MeterProvider
) -> Iterator[Instrumentation]:
    instrumentation = instrument(isolated_registry, meter_provider=meter_provider)
    yield instrumentation
    instrumentation.close()


def points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], float]]:
    """(attributes, value) of every data point of the metric called ``name``."""
    data = reader.get_metrics_data()
    found: list[tuple[dict[str, Any], float]] = []
    if data is None:  # nothing observed at all
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        found.append((dict(point.attributes or {}), point.value))  # type: ignore[union-attr]
    return found


def point(reader: InMemoryMetricReader, name: str, **attributes: str) -> float:
    matching = [v for a, v in points(reader, name) if a == attributes]
    assert len(matching) == 1, (name, attributes, points(reader, name))
    return matching[0]


async def test_state_gauge(
    instrumented: Instrumentation,
    reader: InMemoryMetricReader,
    db: CircuitBreaker,
    trip: Any,
) -> None:
    """resilience.circuit.state is 1 for the current state, 0 for the others."""
    await trip(db)
    values = {a["state"]: v for a, v in points(reader, "resilience.circuit.state")}
    assert values == {
        "closed": 0,
        "open": 1,
        "half_open": 0,
        "forced_open": 0,
        "disabled": 0,
        "metrics_only": 0,
    }


async def test_transitions_counter(
    instrumented: Instrumentation,
    reader: InMemoryMetricReader,
    db: CircuitBreaker,
    trip: Any,
) -> None:
    """resilience.circuit.transitions counts transitions by from/to state."""
    await trip(db)
    db.reset()
    name = "resilience.circuit.transitions"
    assert point(reader, name, circuit="users-db", from_state="closed", to_state="open") == 1
    assert point(reader, name, circuit="users-db", from_state="open", to_state="closed") == 1


async def test_calls_and_rejections(
    instrumented: Instrumentation,
    reader: InMemoryMetricReader,
    db: CircuitBreaker,
    trip: Any,
) -> None:
    """resilience.calls splits outcomes; resilience.rejections counts rejected calls."""

    async def ok() -> None:
        return None

    await db.call(ok)
    await trip(db)
    for _ in range(2):
        with pytest.raises(CircuitOpenError):
            await db.call(ok)
    assert point(reader, "resilience.calls", circuit="users-db", outcome="success") == 1
    assert point(reader, "resilience.calls", circuit="users-db", outcome="failure") == 2
    assert point(reader, "resilience.calls", circuit="users-db", outcome="ignored") == 0
    assert point(reader, "resilience.rejections", circuit="users-db") == 2


async def test_latency_gauges(
    instrumented: Instrumentation,
    reader: InMemoryMetricReader,
    db: CircuitBreaker,
    clock: FakeClock,
) -> None:
    """Mean and p99 latency are exported in seconds."""

    async def slow() -> None:
        clock.advance(0.25)

    for _ in range(4):
        await db.call(slow)
    assert point(reader, "resilience.call.duration.mean", circuit="users-db") == pytest.approx(0.25)
    p99 = point(reader, "resilience.call.duration.p99", circuit="users-db")
    assert 0.177 <= p99 <= 0.354  # within the half-octave bucket holding 0.25 s


async def test_other_registries_are_not_observed(
    instrumented: Instrumentation, reader: InMemoryMetricReader, clock: FakeClock
) -> None:
    """Breakers outside the instrumented registry produce no data points."""
    Registry(clock=clock).get_or_create("elsewhere").force_open()
    assert all(a["circuit"] != "elsewhere" for a, _ in points(reader, "resilience.circuit.state"))
    assert points(reader, "resilience.circuit.transitions") == []


async def test_transition_span_event(
    instrumented: Instrumentation,
    exporter: InMemorySpanExporter,
    tracer: Tracer,
    db: CircuitBreaker,
    trip: Any,
) -> None:
    """A transition adds a resilience.circuit.transition event to the current span."""
    with tracer.start_as_current_span("GET /users/{id}"):
        await trip(db)
    (span,) = exporter.get_finished_spans()
    events = [e for e in span.events if e.name == "resilience.circuit.transition"]
    assert len(events) == 1
    attributes = dict(events[0].attributes or {})
    assert attributes["resilience.circuit"] == "users-db"
    assert attributes["resilience.from_state"] == "closed"
    assert attributes["resilience.to_state"] == "open"
    assert attributes["resilience.reason"] == "2 consecutive failures"


def test_record_rejection_span_event(exporter: InMemorySpanExporter, tracer: Tracer) -> None:
    """record_rejection adds a resilience.rejection event with the breaker and the wait."""
    with tracer.start_as_current_span("work"):
        record_rejection(CircuitOpenError("users-db", CircuitState.OPEN, 12.5))
        record_rejection(BulkheadFullError("pdf", 2, 0))
    (span,) = exporter.get_finished_spans()
    assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
        (
            "resilience.rejection",
            {"resilience.circuit": "users-db", "resilience.retry_after": 12.5},
        ),
        ("resilience.rejection", {"resilience.bulkhead": "pdf"}),
    ]


def test_record_rejection_without_span_is_harmless() -> None:
    """With no recording span, record_rejection does nothing."""
    record_rejection(CircuitOpenError("users-db", CircuitState.FORCED_OPEN, None))


async def test_middleware_rejection_span_event(
    instrumented: Instrumentation,
    exporter: InMemorySpanExporter,
    tracer: Tracer,
    isolated_registry: Registry,
    db: CircuitBreaker,
    trip: Any,
    client_for: Any,
) -> None:
    """A rejection the middleware answers with a 503 is an event on the request's span."""

    async def handler(request: Request) -> Response:
        async def ok() -> None:
            return None

        await db.call(ok)
        return Response("ok")

    inner = Starlette(routes=[Route("/", handler)])
    inner.add_middleware(ResilienceMiddleware, registry=isolated_registry)

    async def traced(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        with tracer.start_as_current_span("request"):
            await inner(scope, receive, send)

    await trip(db)
    async with client_for(traced) as client:
        assert (await client.get("/")).status_code == 503
    (span,) = exporter.get_finished_spans()
    assert [e.name for e in span.events] == ["resilience.rejection"]


async def test_close_stops_everything(
    instrumented: Instrumentation,
    reader: InMemoryMetricReader,
    exporter: InMemorySpanExporter,
    tracer: Tracer,
    db: CircuitBreaker,
    trip: Any,
) -> None:
    """After close(), no transitions, span events or observations are recorded."""
    instrumented.close()
    with tracer.start_as_current_span("after"):
        await trip(db)
    assert points(reader, "resilience.circuit.transitions") == []
    assert points(reader, "resilience.circuit.state") == []
    (span,) = exporter.get_finished_spans()
    assert span.events == ()
