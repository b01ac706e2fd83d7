"""Open-loop HTTP load on 127.0.0.1.

Requests are due on a Poisson schedule at ``rate`` per second whatever the
app does (open loop: a slow app does not slow the load down, as real users
would not). A request's latency runs from when it was due, not from when it
was sent, so time spent waiting for a free slot counts (no coordinated
omission). At most ``concurrency`` requests are in flight; a request that
has not been answered ``client_timeout`` seconds after it was due is an error.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

from .database import N_USERS
from .recorder import RunRecord, Sample

if TYPE_CHECKING:
    from .http import HttpClient

__all__ = ("LoadGenerator",)

HOT_USERS = 100
HOT_SHARE = 0.8

_ROUTES = ("users", "orders", "products")
_WEIGHTS = (0.5, 0.3, 0.2)


class LoadGenerator:
    """Sends requests to the app through ``client``, recording them in ``record``."""

    def __init__(
        self,
        client: HttpClient,
        record: RunRecord,
        *,
        rate: float,
        concurrency: int,
        client_timeout: float,
        seed: int,
    ) -> None:
        self._client = client
        self._record = record
        self._rate = rate
        self._slots = asyncio.Semaphore(concurrency)
        self._timeout = client_timeout
        self._rng = random.Random(seed)
        self._tasks: set[asyncio.Task[None]] = set()
        self.in_flight = 0

    def _pick(self) -> tuple[str, str]:
        rng = self._rng
        route = rng.choices(_ROUTES, _WEIGHTS)[0]
        if route == "users":
            # 80% of the traffic from the 100 active users, the rest from
            # anyone (whom the cache may not hold when the database goes).
            # No single id is hot: @fallback shares one call among identical
            # concurrent calls while the database is down, so a hot id would
            # make its callers wait on the breaker's probe together.
            if rng.random() < HOT_SHARE:
                return route, f"/users/{rng.randint(1, HOT_USERS)}"
            return route, f"/users/{rng.randint(1, N_USERS)}"
        if route == "orders":
            return route, f"/orders/{rng.randint(1, N_USERS)}"
        return route, "/products"

    async def run(self, until: float, drain: float) -> None:
        """Send requests until ``until`` (seconds since the run started), then
        give those in flight ``drain`` seconds before abandoning them."""
        record = self._record
        t0 = record.started_at
        due = record.now()
        try:
            while True:
                due += self._rng.expovariate(self._rate)
                if due >= until:
                    break
                delay = t0 + due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                route, path = self._pick()
                task = asyncio.create_task(self._one(due, route, path))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            delay = t0 + until - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=drain)
        finally:
            await self.cancel()

    async def cancel(self) -> None:
        """Abandon the requests still in flight."""
        pending = set(self._tasks)
        if not pending:
            return
        self._record.abandoned += sum(1 for t in pending if not t.done())
        for task in pending:
            task.cancel()
        await asyncio.wait(pending)

    async def _one(self, due: float, route: str, path: str) -> None:
        from .http import HttpError

        record = self._record
        t0 = record.started_at
        status = 0
        outcome = "error"
        remaining = t0 + due + self._timeout - time.monotonic()
        self.in_flight += 1
        try:
            if remaining > 0:
                async with asyncio.timeout(remaining), self._slots:
                    response = await self._client.get(path)
                status = response.status
                if status == 200:
                    outcome = "fallback" if "x-degraded" in response.headers else "fresh"
                elif status == 503:
                    outcome = "rejected"
        except (TimeoutError, HttpError):
            pass
        finally:
            self.in_flight -= 1
        record.add(Sample(due, time.monotonic() - t0, route, outcome, status))
