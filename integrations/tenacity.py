"""Predicates for people who use tenacity directly.

``@resilience.retry`` already uses this rule; with tenacity's own API::

    import tenacity
    from resilience.integrations.tenacity import retry_if_transient

    @tenacity.retry(retry=retry_if_transient, stop=tenacity.stop_after_attempt(3),
                    wait=tenacity.wait_random_exponential(multiplier=0.1, max=5.0))
    async def fetch_orders(customer_id: int) -> list[Order]: ...

Transient: connection, timeout and resource errors (as ``resilience.classify``
sees them, through wrappers such as SQLAlchemy's: an ``httpx.ConnectError``,
a redis ``ConnectionError``, a 429/502/503/504 from ``raise_for_status()``)
and per-transaction database errors (SQLSTATE 40001 serialization failure,
40P01 deadlock, bare or under a wrapper). Never transient: ``CircuitOpenError`` and
``BulkheadFullError`` (the library shedding load; a retry defeats it),
authentication and query errors (they fail the same way every time: a 404,
a redis ``ResponseError``), other database and unknown errors, and
cancellation.
"""

from __future__ import annotations

from typing import Final

import tenacity

from resilience import is_transient

__all__ = ("is_transient", "retry_if_transient")


retry_if_transient: Final = tenacity.retry_if_exception(is_transient)
"""A tenacity retry strategy: retry when the attempt raised a transient error."""
