"""OpenTelemetry metrics and span events for every breaker of a registry.

::

    from resilience.integrations.otel import instrument

    instrument()          # the global MeterProvider, resilience.registry

Instruments (attribute ``circuit`` is the breaker's name; attributes are
bounded by the number of breakers, never by requests):

==================================  ==================  ==========================
name                                kind                attributes
==================================  ==================  ==========================
``resilience.circuit.state``        observable gauge    ``circuit``, ``state``
                                                        (1 current, 0 otherwise)
``resilience.circuit.transitions``  counter             ``circuit``,
                                                        ``from_state``, ``to_state``
``resilience.calls``                observable counter  ``circuit``, ``outcome``
``resilience.rejections``           observable counter  ``circuit``
``resilience.call.duration.mean``   observable gauge    ``circuit`` (seconds)
``resilience.call.duration.p99``    observable gauge    ``circuit`` (seconds)
==================================  ==================  ==========================

OpenTelemetry has no asynchronous histogram, and recording each call into a
synchronous one would put work on every call; the latency is therefore
exported as its mean and 99th percentile (the Prometheus collector exports the
full histogram).

Span events, on the span current where they happen: ``resilience.circuit.transition``
(attributes ``resilience.circuit``, ``resilience.from_state``,
``resilience.to_state``, ``resilience.reason``) on every transition, and
``resilience.rejection`` (``resilience.circuit`` or ``resilience.bulkhead``,
``resilience.retry_after``) each time the ASGI or Django middleware answers a
rejection with a 503, or when you call :func:`record_rejection`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

import resilience
from resilience import (
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    Registry,
    Transition,
    add_global_observer,
)

from .asgi import add_rejection_observer

__all__ = ("Instrumentation", "instrument", "record_rejection", "record_transition")

_STATES = tuple(s.value for s in CircuitState)


def record_transition(breaker: CircuitBreaker, transition: Transition) -> None:
    """Add a ``resilience.circuit.transition`` event to the current span (if recording)."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.add_event(
        "resilience.circuit.transition",
        {
            "resilience.circuit": breaker.name,
            "resilience.from_state": transition.old.value,
            "resilience.to_state": transition.new.value,
            "resilience.reason": transition.reason,
        },
    )


def record_rejection(exc: CircuitOpenError | BulkheadFullError) -> None:
    """Add a ``resilience.rejection`` event to the current span (if recording).

    The middlewares call it when :func:`instrument` ran with span events on;
    call it yourself where you catch a rejection and answer it another way.
    """
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes: dict[str, str | float] = {}
    if isinstance(exc, BulkheadFullError):
        attributes["resilience.bulkhead"] = exc.name
    else:
        attributes["resilience.circuit"] = exc.name
        if exc.retry_after is not None:
            attributes["resilience.retry_after"] = float(exc.retry_after)
    span.add_event("resilience.rejection", attributes)


class Instrumentation:
    """What :func:`instrument` set up; :meth:`close` stops it.

    Observable instruments cannot be removed from a meter, so after ``close``
    their callbacks report nothing.
    """

    def __init__(
        self, registry: Registry, meter_provider: MeterProvider | None, span_events: bool
    ) -> None:
        self.registry = registry
        self._closed = False
        self._lock = threading.Lock()
        meter = metrics.get_meter(
            "resilience", resilience.__version__, meter_provider=meter_provider
        )
        meter.create_observable_gauge(
            "resilience.circuit.state",
            callbacks=[self._observe_state],
            unit="1",
            description="Circuit breaker state: 1 for the current state, 0 for the others.",
        )
        self._transitions = meter.create_counter(
            "resilience.circuit.transitions",
            unit="{transition}",
            description="State transitions of the circuit breaker.",
        )
        meter.create_observable_counter(
            "resilience.calls",
            callbacks=[self._observe_calls],
            unit="{call}",
            description="Calls admitted by the circuit breaker, by outcome.",
        )
        meter.create_observable_counter(
            "resilience.rejections",
            callbacks=[self._observe_rejections],
            unit="{call}",
            description="Calls rejected by the circuit breaker without running.",
        )
        meter.create_observable_gauge(
            "resilience.call.duration.mean",
            callbacks=[self._observe_mean],
            unit="s",
            description="Mean duration of finished (non-ignored) calls.",
        )
        meter.create_observable_gauge(
            "resilience.call.duration.p99",
            callbacks=[self._observe_p99],
            unit="s",
            description="99th percentile duration of finished (non-ignored) calls.",
        )
        self._removers: list[Callable[[], None]] = [add_global_observer(self._on_transition)]
        self._span_events = span_events
        if span_events:
            self._removers.append(add_rejection_observer(record_rejection))

    def close(self) -> None:
        """Stop observing: no more transitions, events or observations."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            removers, self._removers = self._removers, []
        for remove in removers:
            remove()

    def _breakers(self) -> list[CircuitBreaker]:
        return [] if self._closed else self.registry.all()

    def _on_transition(self, breaker: CircuitBreaker, transition: Transition) -> None:
        if self._closed or self.registry.get(breaker.name) is not breaker:
            return
        self._transitions.add(
            1,
            {
                "circuit": breaker.name,
                "from_state": transition.old.value,
                "to_state": transition.new.value,
            },
        )
        if self._span_events:
            record_transition(breaker, transition)

    def _observe_state(self, options: CallbackOptions) -> Iterable[Observation]:
        for breaker in self._breakers():
            current = breaker.state.value
            for value in _STATES:
                yield Observation(
                    1 if value == current else 0, {"circuit": breaker.name, "state": value}
                )

    def _observe_calls(self, options: CallbackOptions) -> Iterable[Observation]:
        for breaker in self._breakers():
            m = breaker.metrics()
            name = breaker.name
            yield Observation(m["successful_calls"], {"circuit": name, "outcome": "success"})
            yield Observation(m["failed_calls"], {"circuit": name, "outcome": "failure"})
            yield Observation(m["ignored_calls"], {"circuit": name, "outcome": "ignored"})

    def _observe_rejections(self, options: CallbackOptions) -> Iterable[Observation]:
        for breaker in self._breakers():
            yield Observation(breaker.metrics()["rejected_calls"], {"circuit": breaker.name})

    def _observe_mean(self, options: CallbackOptions) -> Iterable[Observation]:
        for breaker in self._breakers():
            yield Observation(
                breaker.metrics()["avg_latency_ms"] / 1000.0, {"circuit": breaker.name}
            )

    def _observe_p99(self, options: CallbackOptions) -> Iterable[Observation]:
        for breaker in self._breakers():
            yield Observation(
                breaker.metrics()["p99_latency_ms"] / 1000.0, {"circuit": breaker.name}
            )


def instrument(
    registry: Registry | None = None,
    *,
    meter_provider: MeterProvider | None = None,
    span_events: bool = True,
) -> Instrumentation:
    """Export ``registry``'s breakers as OpenTelemetry metrics.

    Args:
        registry: the breakers to export; default :data:`resilience.registry`.
        meter_provider: default the global one (``metrics.set_meter_provider``).
        span_events: also add span events on transitions and on rejections
            answered by the middlewares (default ``True``).

    Call it once per registry and provider; transitions are counted from then on.
    """
    return Instrumentation(
        registry if registry is not None else resilience.registry, meter_provider, span_events
    )
