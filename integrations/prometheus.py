"""Prometheus metrics for every breaker of a registry, read at scrape time.

::

    from prometheus_client import make_asgi_app
    from resilience.integrations.prometheus import register

    register()                      # the default registries on both sides
    app.mount("/metrics", make_asgi_app())

Exported families (label ``circuit`` is the breaker's name; labels are bounded
by the number of breakers, never by requests):

========================================  =========  =============================
name                                      type       labels
========================================  =========  =============================
``resilience_circuit_state``              gauge      ``circuit``, ``state`` (1 for
                                                     the current state, else 0)
``resilience_circuit_transitions_total``  counter    ``circuit``, ``from_state``,
                                                     ``to_state``
``resilience_calls_total``                counter    ``circuit``, ``outcome``
                                                     (``success``, ``failure``,
                                                     ``ignored``)
``resilience_rejections_total``           counter    ``circuit``
``resilience_call_duration_seconds``      histogram  ``circuit``
========================================  =========  =============================

The collector adds nothing to the call path: states, counters and latencies
are read from ``breaker.status()``, ``metrics()`` and ``latency_histogram()``
when Prometheus scrapes. Transitions are counted as they happen (a scraped
gauge can miss a short opening), from the moment the collector exists.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

import resilience
from resilience import CircuitBreaker, CircuitState, Registry, Transition, add_global_observer

__all__ = ("DEFAULT_BUCKET_EXPONENTS", "ResilienceCollector", "register")

DEFAULT_BUCKET_EXPONENTS: tuple[int, ...] = tuple(range(-13, 7))
"""Histogram bucket bounds as powers of two: 2**-13 s (122 us) to 2**6 s (64 s),
one per octave, plus ``+Inf``. The breakers keep two buckets per octave, so
these bounds are exact, not interpolated."""

_STATES = tuple(s.value for s in CircuitState)


class _HistogramMemory:
    """Last exported cumulative buckets, count and sum of one breaker. The
    breaker's histogram and mean latency are estimated from a sample past
    1,024 calls, so an estimate can dip between scrapes; Prometheus would read
    a dip as a counter reset."""

    __slots__ = ("buckets", "count", "finished", "total")

    def __init__(self) -> None:
        self.finished = 0
        self.count = 0
        self.total = 0.0
        self.buckets: list[int] = []


class ResilienceCollector:
    """A ``prometheus_client`` collector over the breakers of a registry.

    Args:
        registry: the breakers to export; default :data:`resilience.registry`.
        bucket_exponents: latency bucket bounds as powers of two (seconds),
            increasing, each in [-20, 10]; default
            :data:`DEFAULT_BUCKET_EXPONENTS`.

    Register it with :func:`register` (or ``collector_registry.register``),
    and call :meth:`close` after unregistering it to stop counting transitions.
    """

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        bucket_exponents: Sequence[int] = DEFAULT_BUCKET_EXPONENTS,
    ) -> None:
        exps = tuple(bucket_exponents)
        if not exps or list(exps) != sorted(set(exps)) or not all(-20 <= e <= 10 for e in exps):
            raise ValueError("bucket_exponents must be increasing integers in [-20, 10]")
        self._registry = registry if registry is not None else resilience.registry
        self._bounds = tuple(math.ldexp(1.0, e) for e in exps)
        self._lock = threading.Lock()
        self._transitions: dict[tuple[str, str, str], int] = {}
        self._histograms: dict[str, _HistogramMemory] = {}
        self._remove_observer = add_global_observer(self._on_transition)

    @property
    def registry(self) -> Registry:
        """The registry whose breakers are exported."""
        return self._registry

    def close(self) -> None:
        """Stop counting transitions (after unregistering the collector)."""
        self._remove_observer()

    def _on_transition(self, breaker: CircuitBreaker, transition: Transition) -> None:
        if self._registry.get(breaker.name) is not breaker:
            return  # another registry's breaker, or an unregistered one
        key = (breaker.name, transition.old.value, transition.new.value)
        with self._lock:
            self._transitions[key] = self._transitions.get(key, 0) + 1

    def describe(self) -> Iterable[Metric]:
        """The families this collector exports (lets a registry detect clashes)."""
        return self._families()

    def _families(
        self,
    ) -> tuple[
        GaugeMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        HistogramMetricFamily,
    ]:
        return (
            GaugeMetricFamily(
                "resilience_circuit_state",
                "Circuit breaker state: 1 for the current state, 0 for the others.",
                labels=["circuit", "state"],
            ),
            CounterMetricFamily(
                "resilience_circuit_transitions",
                "State transitions of the circuit breaker.",
                labels=["circuit", "from_state", "to_state"],
            ),
            CounterMetricFamily(
                "resilience_calls",
                "Calls admitted by the circuit breaker, by outcome.",
                labels=["circuit", "outcome"],
            ),
            CounterMetricFamily(
                "resilience_rejections",
                "Calls rejected by the circuit breaker without running.",
                labels=["circuit"],
            ),
            HistogramMetricFamily(
                "resilience_call_duration_seconds",
                "Duration of finished (non-ignored) calls through the circuit breaker.",
                labels=["circuit"],
            ),
        )

    def collect(self) -> Iterable[Metric]:
        """Read every breaker of the registry now."""
        state, transitions, calls, rejections, latency = self._families()
        breakers = self._registry.all()
        names: set[str] = set()
        for breaker in breakers:
            name = breaker.name
            names.add(name)
            current = breaker.state.value  # applies a due OPEN -> HALF_OPEN first
            for value in _STATES:
                state.add_metric([name, value], 1.0 if value == current else 0.0)
            m = breaker.metrics()
            calls.add_metric([name, "success"], m["successful_calls"])
            calls.add_metric([name, "failure"], m["failed_calls"])
            calls.add_metric([name, "ignored"], m["ignored_calls"])
            rejections.add_metric([name], m["rejected_calls"])
            finished = m["successful_calls"] + m["failed_calls"]
            total_seconds = m["avg_latency_ms"] * finished / 1000.0
            buckets, count, total_seconds = self._buckets(
                name, breaker.latency_histogram(), finished, total_seconds
            )
            pairs = [(_le(b), float(c)) for b, c in zip(self._bounds, buckets, strict=True)]
            pairs.append(("+Inf", float(count)))
            latency.add_metric([name], pairs, sum_value=total_seconds)
        with self._lock:
            counted = sorted(self._transitions.items())
            for stale in set(self._histograms) - names:
                del self._histograms[stale]
        for (name, old, new), n in counted:
            transitions.add_metric([name, old, new], n)
        return (state, transitions, calls, rejections, latency)

    def _buckets(
        self, name: str, histogram: list[tuple[float, int]], finished: int, total: float
    ) -> tuple[list[int], int, float]:
        """Cumulative counts at the chosen bounds, the count and the sum, never
        below what was last exported for this breaker (unless it was reset)."""
        cumulative: list[int] = []
        running = 0
        i = 0
        for bound in self._bounds:
            while i < len(histogram) and histogram[i][0] <= bound * (1.0 + 1e-9):
                running += histogram[i][1]
                i += 1
            cumulative.append(running)
        count = running + sum(n for _, n in histogram[i:])
        with self._lock:
            memory = self._histograms.get(name)
            if memory is None or finished < memory.finished:  # new, or reset()
                memory = self._histograms[name] = _HistogramMemory()
            if memory.buckets:
                cumulative = [max(a, b) for a, b in zip(cumulative, memory.buckets, strict=True)]
            count = max(count, memory.count, cumulative[-1] if cumulative else 0)
            total = max(total, memory.total)
            memory.finished = finished
            memory.buckets = cumulative
            memory.count = count
            memory.total = total
        return cumulative, count, total


def _le(bound: float) -> str:
    return repr(bound)


def register(
    registry: Registry | None = None,
    *,
    collector_registry: CollectorRegistry | None = None,
    bucket_exponents: Sequence[int] = DEFAULT_BUCKET_EXPONENTS,
) -> ResilienceCollector:
    """Export ``registry`` (default :data:`resilience.registry`) to
    ``collector_registry`` (default ``prometheus_client.REGISTRY``, the one
    ``make_asgi_app()`` and ``generate_latest()`` read). Returns the collector.

    Raises:
        ValueError: the collector registry already exports these names
            (register once per collector registry).
    """
    collector = ResilienceCollector(registry, bucket_exponents=bucket_exponents)
    target = collector_registry if collector_registry is not None else REGISTRY
    try:
        target.register(collector)
    except ValueError:
        collector.close()
        raise
    return collector
