"""The Prometheus collector, read back with prometheus_client's own parser."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest, make_asgi_app
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from starlette.applications import Starlette
from starlette.routing import Mount

from resilience import CircuitBreaker, CircuitOpenError, Registry
from resilience.integrations.prometheus import ResilienceCollector, register
from resilience.testing import FakeClock


@pytest.fixture
def collector_registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def collector(
    isolated_registry: Registry, collector_registry: CollectorRegistry
) -> Iterator[ResilienceCollector]:
    collector = register(isolated_registry, collector_registry=collector_registry)
    yield collector
    collector.close()


def scrape(collector_registry: CollectorRegistry) -> dict[str, list[Sample]]:
    """Samples by family name, parsed from the text exposition."""
    text = generate_latest(collector_registry).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


async def call_ok(breaker: CircuitBreaker, clock: FakeClock, seconds: float = 0.003) -> None:
    async def work() -> None:
        clock.advance(seconds)

    await breaker.call(work)


async def test_state_gauge_has_one_current_state(
    collector: ResilienceCollector,
    collector_registry: CollectorRegistry,
    db: CircuitBreaker,
    trip: Any,
) -> None:
    """resilience_circuit_state is 1 for the current state and 0 for the five others."""
    await trip(db)
    samples = scrape(collector_registry)["resilience_circuit_state"]
    by_state = {s.labels["state"]: s.value for s in samples if s.labels["circuit"] == "users-db"}
    assert by_state == {
        "closed": 0.0,
        "open": 1.0,
        "half_open": 0.0,
        "forced_open": 0.0,
        "disabled": 0.0,
        "metrics_only": 0.0,
    }


async def test_state_gauge_applies_due_half_open(
    collector: ResilienceCollector,
    collector_registry: CollectorRegistry,
    db: CircuitBreaker,
    trip: Any,
    clock: FakeClock,
) -> None:
    """A scrape after the open period reports half_open, not a stale open."""
    await trip(db)
    clock.advance(30)
    samples = scrape(collector_registry)["resilience_circuit_state"]
    assert value(samples, "resilience_circuit_state", circuit="users-db", state="half_open") == 1


async def test_transitions_are_counted(
    collector: ResilienceCollector,
    collector_registry: CollectorRegistry,
    db: CircuitBreaker,
    trip: Any,
    clock: FakeClock,
) -> None:
    """resilience_circuit_transitions_total counts each transition by from/to state."""
    await trip(db)
    clock.advance(30)
    await call_ok(db, clock)  # half-open probe closes it (success_threshold=1)
    samples = scrape(collector_registry)["resilience_circuit_transitions"]
    name = "resilience_circuit_transitions_total"
    assert value(samples, name, circuit="users-db", from_state="closed", to_state="open") == 1
    assert value(samples, name, circuit="users-db", from_state="open", to_state="half_open") == 1
    assert value(samples, name, circuit="users-db", from_state="half_open", to_state="closed") == 1


async def test_calls_by_outcome_and_rejections(
    collector: ResilienceCollector,
    collector_registry: CollectorRegistry,
    db: CircuitBreaker,
    trip: Any,
    clock: FakeClock,
) -> None:
    """resilience_calls_total splits outcomes; resilience_rejections_total counts rejections."""
    await call_ok(db, clock)

    async def cancelled() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await db.call(cancelled)
    await trip(db)
    for _ in range(3):
        with pytest.raises(CircuitOpenError):
            await call_ok(db, clock)
    families = scrape(collector_registry)
    calls = families["resilience_calls"]
    assert value(calls, "resilience_calls_total", circuit="users-db", outcome="success") == 1
    assert value(calls, "resilience_calls_total", circuit="users-db", outcome="failure") == 2
    assert value(calls, "resilience_calls_total", circuit="users-db", outcome="ignored") == 1
    rejections = families["resilience_rejections"]
    assert value(rejections, "resilience_rejections_total", circuit="users-db") == 3


async def test_latency_histogram_is_cumulative(
    collector: ResilienceCollector,
    collector_registry: CollectorRegistry,
    db: CircuitBreaker,
    clock: FakeClock,
) -> None:
    """The latency histogram has cumulative buckets, +Inf equal to _count, and a _sum."""
    for seconds in (0.003, 0.003, 0.2, 3.0):
        await call_ok(db, clock, seconds)
    samples = scrape(collector_registry)["resilience_call_duration_seconds"]
    buckets = [
        (float(s.labels["le"]), s.value)
        for s in samples
        if s.name.endswith("_bucket") and s.labels["circuit"] == "users-db"
    ]
    counts = [c for _, c in buckets]
    assert counts == sorted(counts)
    assert dict(buckets)[2.0**-8] == 2  # 3.9 ms
    assert dict(buckets)[0.25] == 3
    assert dict(buckets)[4.0] == 4
    assert buckets[-1] == (float("inf"), 4.0)
    name = "resilience_call_duration_seconds"
    assert value(samples, name + "_count", circuit="users-db") == 4
    assert value(samples, name + "_sum", circuit="users-db") == pytest.approx(3.206)


async def test_latency_buckets_never_go_down(
    collector: ResilienceCollector,
    collector_registry: CollectorRegistry,
    db: CircuitBreaker,
    clock: FakeClock,
) -> None:
    """Past the sampling threshold the breaker's estimates can dip; the export never does."""
    for i in range(6000):
        await call_ok(db, clock, 0.001 if i % 3 else 0.1)
    previous: list[float] = []
    for i in range(64):  # scrape around sampled calls, where raw estimates dip
        await call_ok(db, clock, 0.001 if i % 3 else 0.1)
        samples = scrape(collector_registry)["resilience_call_duration_seconds"]
        counts = [s.value for s in samples if s.name.endswith("_bucket")]
        if previous:
            assert all(now >= before for now, before in zip(counts, previous, strict=True))
        previous = counts


async def test_latency_sum_never_goes_down(
    collector: ResilienceCollector,
    collector_registry: CollectorRegistry,
    db: CircuitBreaker,
    clock: FakeClock,
) -> None:
    """With sampled timing the mean is an estimate; the exported _sum still never dips."""
    latency = 0.001

    @db
    async def work() -> None:
        clock.advance(latency)

    for _ in range(1100):
        await work()
    previous = 0.0
    for i in range(400):
        latency = 0.1 if i % 3 == 0 else 0.001
        await work()
        samples = scrape(collector_registry)["resilience_call_duration_seconds"]
        total = value(samples, "resilience_call_duration_seconds_sum", circuit="users-db")
        assert total >= previous
        previous = total


async def test_reset_restarts_the_histogram(
    collector: ResilienceCollector,
    collector_registry: CollectorRegistry,
    db: CircuitBreaker,
    clock: FakeClock,
) -> None:
    """breaker.reset() zeroes its counters: the export restarts from zero too."""
    await call_ok(db, clock)
    scrape(collector_registry)
    db.reset()
    samples = scrape(collector_registry)["resilience_call_duration_seconds"]
    assert value(samples, "resilience_call_duration_seconds_count", circuit="users-db") == 0


async def test_labels_are_bounded_to_breaker_names(
    collector: ResilienceCollector,
    collector_registry: CollectorRegistry,
    isolated_registry: Registry,
    db: CircuitBreaker,
    trip: Any,
) -> None:
    """The only label values besides state/outcome/le are the breakers' names."""
    isolated_registry.get_or_create("payments-api")
    await trip(db)
    circuits = {
        s.labels["circuit"] for samples in scrape(collector_registry).values() for s in samples
    }
    assert circuits == {"users-db", "payments-api"}
    labels = {
        k for samples in scrape(collector_registry).values() for s in samples for k in s.labels
    }
    assert labels <= {"circuit", "state", "outcome", "from_state", "to_state", "le"}


async def test_other_registries_are_not_exported(
    collector: ResilienceCollector, collector_registry: CollectorRegistry, clock: FakeClock
) -> None:
    """Breakers of another registry (and their transitions) stay out of the export."""
    other = Registry(clock=clock).get_or_create("elsewhere", failure_threshold=1)

    async def fail() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        await other.call(fail)
    assert other.state.value == "open"
    text = generate_latest(collector_registry).decode()
    assert "elsewhere" not in text


def test_registering_twice_is_refused(
    collector: ResilienceCollector,
    collector_registry: CollectorRegistry,
    isolated_registry: Registry,
) -> None:
    """A second collector on the same collector registry is a ValueError (describe())."""
    with pytest.raises(ValueError, match="resilience_"):
        register(isolated_registry, collector_registry=collector_registry)


async def test_close_stops_counting_transitions(
    collector: ResilienceCollector,
    collector_registry: CollectorRegistry,
    db: CircuitBreaker,
    trip: Any,
) -> None:
    """After close() the collector counts no further transitions."""
    collector.close()
    await trip(db)
    assert (
        "resilience_circuit_transitions_total{" not in generate_latest(collector_registry).decode()
    )


async def test_served_by_make_asgi_app(
    collector: ResilienceCollector,
    collector_registry: CollectorRegistry,
    db: CircuitBreaker,
    trip: Any,
    client_for: Any,
) -> None:
    """prometheus_client.make_asgi_app() serves the collector's metrics."""
    await trip(db)
    app = Starlette(routes=[Mount("/metrics", app=make_asgi_app(registry=collector_registry))])
    async with client_for(app) as client:
        response = await client.get("/metrics/")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert families["resilience_circuit_state"].type == "gauge"
    assert families["resilience_circuit_transitions"].type == "counter"
    assert families["resilience_calls"].type == "counter"
    assert families["resilience_rejections"].type == "counter"
    assert families["resilience_call_duration_seconds"].type == "histogram"


def test_bucket_exponents_are_validated(isolated_registry: Registry) -> None:
    """Bucket bounds must be increasing powers of two within the breaker's range."""
    with pytest.raises(ValueError, match="bucket_exponents"):
        ResilienceCollector(isolated_registry, bucket_exponents=[3, 1])
