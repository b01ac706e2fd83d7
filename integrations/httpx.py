"""A circuit breaker per upstream for httpx (``pip install "resilience-patterns[httpx]"``).

::

    import httpx
    from resilience.integrations.httpx import ResilientTransport

    transport = ResilientTransport(failure_threshold=5, recovery_timeout=30)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get("https://api.example.com/orders")

Every request goes through the breaker of its origin (``scheme://host:port``),
or of one shared breaker when ``name=`` is given:

- an open circuit raises :class:`resilience.CircuitOpenError` at once, before
  anything is sent (no connection is opened);
- a response is returned as it is; its status is counted: 5xx and 429 are
  failures (judged like the ``httpx.HTTPStatusError`` that
  ``raise_for_status()`` would raise, so ``classifier=`` and
  ``category_policy=`` apply), any other status is a success (the upstream
  answered; a 404 is the caller's business);
- a transport error is counted as ``resilience.classify`` sees it: connect
  errors, timeouts and dropped connections are failures; a bad URL or an
  unsupported scheme is ignored (the caller's mistake); a cancelled request
  is not counted;
- a 503 or 429 carrying ``Retry-After`` (seconds or an HTTP date) keeps an
  OPEN circuit open at least that long, within ``max_recovery_timeout``
  (:meth:`resilience.CircuitBreaker.extend_open`): the upstream said when to
  come back, so nothing probes it earlier.

Only the status line is seen: an error while the body is streamed later
(``response.aread()``) is not counted.
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import math
from typing import Any

import httpx

from resilience import CircuitBreaker, CircuitConfig, Registry, registry

__all__ = ("ResilientTransport", "origin_of")

logger = logging.getLogger("resilience")

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def origin_of(url: httpx.URL) -> str:
    """``scheme://host:port`` of ``url``, the port always written (no user
    info, path or query, so no secret ends up in a breaker's name)."""
    scheme = url.scheme
    port = url.port if url.port is not None else _DEFAULT_PORTS.get(scheme, 0)
    host = url.host
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def _retry_after(value: str | None, now_wall: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delay-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            logger.debug("ignoring an unreadable Retry-After header: %.40r", value)
            return None
        seconds = when.timestamp() - now_wall
    if not math.isfinite(seconds) and seconds != math.inf:
        return None
    return max(seconds, 0.0)


class ResilientTransport(httpx.AsyncBaseTransport, httpx.BaseTransport):
    """An httpx transport that puts a circuit breaker in front of each upstream.

    Works with ``httpx.AsyncClient`` and ``httpx.Client`` alike (pass it as
    ``transport=``); it wraps another transport, which sends the requests.

    Args:
        transport: the transport that sends requests. Default ``None``: an
            ``httpx.AsyncHTTPTransport()`` for async clients and an
            ``httpx.HTTPTransport()`` for sync ones, made on first use. Any
            object with ``handle_async_request`` and/or ``handle_request``
            (``httpx.MockTransport`` included).
        registry: where the breakers live; default ``resilience.registry``.
            An origin's breaker is shared by every transport of the same
            registry (the name is the identity).
        name: one breaker of this name for every request. Default ``None``:
            one breaker per origin, named ``scheme://host:port``.
        **breaker_config: :class:`resilience.CircuitConfig` settings (and
            ``config=`` / ``classifier=``) for the breakers created.

    Raises:
        TypeError: ``transport`` is not a transport, ``name`` not a string, or
            an unknown setting.
        ValueError: an empty ``name`` or an invalid setting.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | httpx.BaseTransport | None = None,
        *,
        registry: Registry | None = None,
        name: str | None = None,
        **breaker_config: Any,
    ) -> None:
        if transport is not None and not (
            callable(getattr(transport, "handle_async_request", None))
            or callable(getattr(transport, "handle_request", None))
        ):
            raise TypeError(
                "ResilientTransport: transport must be an httpx transport "
                f"(handle_request or handle_async_request), got {transport!r}"
            )
        if name is not None and not isinstance(name, str):
            raise TypeError(f"ResilientTransport: name must be a string, got {name!r}")
        if name == "":
            raise ValueError("ResilientTransport: name must not be empty")
        fields = dict(breaker_config)
        config = fields.pop("config", None)
        fields.pop("classifier", None)
        # Bad settings fail here, not at the first request.
        if config is None:
            CircuitConfig(**fields)
        elif isinstance(config, CircuitConfig):
            dataclasses.replace(config, **fields)
        else:
            raise TypeError(f"ResilientTransport: config must be a CircuitConfig, got {config!r}")
        self._transport = transport
        self._own_async: httpx.AsyncBaseTransport | None = None
        self._own_sync: httpx.BaseTransport | None = None
        self._registry = registry
        self._settings = breaker_config
        self._name = name
        self._breakers: dict[str, CircuitBreaker] = {}
        if name is not None:
            self._breakers[name] = self._make(name)

    def _make(self, name: str) -> CircuitBreaker:
        where = self._registry if self._registry is not None else registry
        return where.get_or_create(name, **self._settings)

    def breaker_for(self, url: httpx.URL | str) -> CircuitBreaker:
        """The breaker that guards requests to ``url`` (created on first use).

        Raises:
            ValueError: ``url`` is relative (no scheme or host) and there is
                one breaker per origin.
        """
        if self._name is not None:
            key = self._name
        else:
            parsed = httpx.URL(url)
            if not (parsed.scheme and parsed.host):
                raise ValueError(
                    f"ResilientTransport: {str(parsed)[:80]!r} has no origin (scheme://host)"
                )
            key = origin_of(parsed)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = self._make(key)
        return breaker

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """The breakers used so far, by name (a copy)."""
        return dict(self._breakers)

    # -- sending -------------------------------------------------------------

    def _async_transport(self) -> Any:
        inner = self._transport
        if inner is None:
            if self._own_async is None:
                self._own_async = httpx.AsyncHTTPTransport()
            return self._own_async
        if not callable(getattr(inner, "handle_async_request", None)):
            raise TypeError(
                f"ResilientTransport: {inner!r} is a sync transport; use it with httpx.Client"
            )
        return inner

    def _sync_transport(self) -> Any:
        inner = self._transport
        if inner is None:
            if self._own_sync is None:
                self._own_sync = httpx.HTTPTransport()
            return self._own_sync
        if not callable(getattr(inner, "handle_request", None)):
            raise TypeError(
                f"ResilientTransport: {inner!r} is an async transport; "
                "use it with httpx.AsyncClient"
            )
        return inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through its origin's breaker (async clients)."""
        inner = self._async_transport()
        breaker = self.breaker_for(request.url)
        permit = breaker.acquire()  # CircuitOpenError: nothing is sent
        try:
            response: httpx.Response = await inner.handle_async_request(request)
        except BaseException as exc:
            permit.failure(exc)
            raise
        self._count(breaker, permit, request, response)
        return response

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through its origin's breaker (sync clients)."""
        inner = self._sync_transport()
        breaker = self.breaker_for(request.url)
        permit = breaker.acquire()
        try:
            response: httpx.Response = inner.handle_request(request)
        except BaseException as exc:
            permit.failure(exc)
            raise
        self._count(breaker, permit, request, response)
        return response

    @staticmethod
    def _count(
        breaker: CircuitBreaker, permit: Any, request: httpx.Request, response: httpx.Response
    ) -> None:
        status = response.status_code
        if status < 500 and status != 429:
            permit.success()
            return
        error = httpx.HTTPStatusError(
            f"{status} from {origin_of(request.url)}", request=request, response=response
        )
        permit.failure(error)
        if status == 503 or status == 429:
            seconds = _retry_after(response.headers.get("retry-after"), breaker.clock.time())
            if seconds:
                breaker.extend_open(seconds)

    # -- closing ---------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the wrapped transport (and the default one made for async use)."""
        own, self._own_async = self._own_async, None  # a later request makes a new one
        if own is not None:
            await own.aclose()
        inner = self._transport
        if inner is not None and callable(getattr(inner, "aclose", None)):
            await inner.aclose()  # type: ignore[union-attr]

    def close(self) -> None:
        """Close the wrapped transport (and the default one made for sync use)."""
        own, self._own_sync = self._own_sync, None
        if own is not None:
            own.close()
        inner = self._transport
        if inner is not None and callable(getattr(inner, "close", None)):
            inner.close()  # type: ignore[union-attr]

    def __repr__(self) -> str:
        target = repr(self._name) if self._name else "per origin"
        return f"<ResilientTransport {target}, {len(self._breakers)} breakers>"
