"""Prometheus metrics for every circuit breaker, scraped from ``/metrics``.

``register()`` adds one collector to prometheus_client's registry; it reads the
breakers at scrape time, so the call path pays nothing. Mount
``prometheus_client.make_asgi_app()`` wherever your app serves metrics.

Run it: ``python cookbook/prometheus_metrics.py`` makes some traffic, trips a
breaker, scrapes ``/metrics`` and prints the ``resilience_*`` series.

Alerting ideas (PromQL):

- a circuit is not closed: ``resilience_circuit_state{state!="closed"} == 1``
- a circuit opened in the last 5 minutes (even briefly, between scrapes):
  ``increase(resilience_circuit_transitions_total{to_state="open"}[5m]) > 0``
- calls shed: ``rate(resilience_rejections_total[1m])``
- p99 latency: ``histogram_quantile(0.99, rate(resilience_call_duration_seconds_bucket[5m]))``
"""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client import CollectorRegistry, make_asgi_app
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Mount

from resilience import CircuitOpenError, Registry, circuit
from resilience.integrations.prometheus import register

# In a service: `register()` (resilience.registry into prometheus_client.REGISTRY)
# and `make_asgi_app()`. Private registries keep this recipe self-contained.
breakers = Registry()
metrics_registry = CollectorRegistry()
register(breakers, collector_registry=metrics_registry)

app = Starlette(routes=[Mount("/metrics", app=make_asgi_app(registry=metrics_registry))])

PAYMENTS = {"up": True}


@circuit("payments-api", registry=breakers, failure_threshold=3, recovery_timeout=30)
async def charge(amount: int) -> str:
    await asyncio.sleep(0.002)
    if not PAYMENTS["up"]:
        raise ConnectionRefusedError("payments-api is down")
    return f"charged {amount}"


@circuit("users-db", registry=breakers)
async def load_user(user_id: int) -> dict[str, int]:
    return {"id": user_id}


async def traffic() -> None:
    for i in range(20):
        await load_user(i)
        await charge(i)
    PAYMENTS["up"] = False
    for i in range(6):
        try:
            await charge(i)
        except (ConnectionRefusedError, CircuitOpenError):
            pass


async def main() -> None:
    await traffic()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        response = await client.get("/metrics/")
    response.raise_for_status()
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name, family in families.items():
        if not name.startswith("resilience_"):
            continue
        print(f"# {family.type} {name}")
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels["le"] not in ("0.0078125", "+Inf"):
                continue  # keep the printout short: one bucket and +Inf
            if name == "resilience_circuit_state" and sample.value == 0:
                continue  # only the current state of each circuit
            labels = ",".join(f'{k}="{v}"' for k, v in sample.labels.items())
            print(f"{sample.name}{{{labels}}} {sample.value:g}")

    state = {
        s.labels["circuit"]: s.labels["state"]
        for s in families["resilience_circuit_state"].samples
        if s.value == 1
    }
    assert state == {"payments-api": "open", "users-db": "closed"}


if __name__ == "__main__":
    asyncio.run(main())
