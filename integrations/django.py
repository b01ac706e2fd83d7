"""Graceful degradation for Django: a middleware for ``settings.MIDDLEWARE``.

Add it near the top of the list (outside anything that turns exceptions into
responses of its own)::

    MIDDLEWARE = [
        "resilience.integrations.django.ResilienceMiddleware",
        ...
    ]

    RESILIENCE = {                       # all optional
        "REGISTRY": "myproject.breakers.registry",   # a Registry or a dotted path
        "STATUS_PATH": "/_resilience/status",        # default None: no endpoint
        "STATUS_GUARD": "a-long-random-token",       # or a callable(request) -> bool
        "ROUTE_BREAKERS": {"failure_threshold": 10},  # or True; default False
        "NAME_FOR": None,                            # callable(request) -> str | None
        "PROBLEM_TYPE": "https://example.com/problems/unavailable",
    }

It behaves like :class:`resilience.integrations.asgi.ResilienceMiddleware`:
a ``CircuitOpenError`` / ``BulkheadFullError`` raised by a view becomes a 503
``application/problem+json`` answer with ``Retry-After``; other exceptions are
left to Django; responses produced while a fallback served get
``X-Degraded: fallback``; route breakers are named ``"<METHOD> /<route>"``
from the URL pattern (``"GET /users/<int:pk>/"``) and count 5xx answers.

It is sync and async capable (Django's documented pattern): under ASGI with
async views nothing runs in a thread on its account.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings  # type: ignore[import-untyped]
from django.http import HttpRequest, HttpResponse  # type: ignore[import-untyped]
from django.urls import Resolver404, resolve  # type: ignore[import-untyped]
from django.utils.module_loading import import_string  # type: ignore[import-untyped]

import resilience
from resilience import (
    CircuitConfig,
    CircuitOpenError,
    Degradation,
    Permit,
    Registry,
    degradation_scope,
)

from .asgi import (
    Rejection,
    _bearer_ok,
    _bounded_method,
    _check_guard,
    _check_route_breakers,
    _degraded_value,
    _find_rejection,
    _notify_rejection,
    _problem,
    _route_breaker,
    _status_body,
)

__all__ = ("ResilienceMiddleware",)

_KEYS = frozenset(
    {
        "REGISTRY",
        "STATUS_PATH",
        "STATUS_GUARD",
        "ROUTE_BREAKERS",
        "NAME_FOR",
        "PROBLEM_TYPE",
        "EXPOSE_NAMES",
    }
)


# Request attributes the middleware keeps between its hooks.
_REJECTED = "_resilience_rejected"


class ResilienceMiddleware:
    """Django middleware: 503 on rejections, ``X-Degraded``, route breakers,
    status endpoint. Configured by the ``RESILIENCE`` setting (see the module
    docstring); every key is optional:

    - ``REGISTRY``: a :class:`~resilience.Registry` or its dotted path;
      default :data:`resilience.registry`.
    - ``STATUS_PATH``: the request path (``request.path``) of the status
      endpoint; default ``None`` (off).
    - ``STATUS_GUARD``: a token the request must send as
      ``Authorization: Bearer <token>`` (else 401), or a callable
      ``guard(request) -> bool`` (``False`` gives 403); default ``None``.
    - ``ROUTE_BREAKERS``: ``False`` (default), ``True``, or a mapping of
      :class:`~resilience.CircuitConfig` fields.
    - ``NAME_FOR``: ``name_for(request) -> str | None`` replacing the name
      taken from the URL pattern.
    - ``PROBLEM_TYPE``: the ``type`` of problem+json answers; default
      ``"about:blank"``.
    - ``EXPOSE_NAMES``: ``True`` puts the rejecting breaker's (or bulkhead's)
      name in the public 503 body; default ``False`` (names can hold hosts and
      databases; the status endpoint and the DEBUG log keep them).
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
        options: Mapping[str, Any] = getattr(settings, "RESILIENCE", None) or {}
        unknown = sorted(set(options) - _KEYS)
        if unknown:
            raise ValueError(f"unknown RESILIENCE setting(s): {', '.join(unknown)}")
        registry = options.get("REGISTRY")
        if isinstance(registry, str):
            registry = import_string(registry)
        if registry is not None and not isinstance(registry, Registry):
            raise TypeError(f"RESILIENCE['REGISTRY'] must be a Registry, got {registry!r}")
        self.registry: Registry = registry if registry is not None else resilience.registry
        self.status_path: str | None = options.get("STATUS_PATH")
        self.status_guard = _check_guard(options.get("STATUS_GUARD"))
        self.route_config: CircuitConfig | None = _check_route_breakers(
            options.get("ROUTE_BREAKERS", False)
        )
        self.name_for: Callable[[HttpRequest], str | None] | None = options.get("NAME_FOR")
        self.problem_type: str = options.get("PROBLEM_TYPE", "about:blank")
        self.expose_names = options.get("EXPOSE_NAMES", False)
        if not isinstance(self.expose_names, bool):
            raise TypeError(
                f"RESILIENCE['EXPOSE_NAMES'] must be True or False, got {self.expose_names!r}"
            )

    # -- the two drivers ----------------------------------------------------

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        early = self._before(request)
        if isinstance(early, HttpResponse):
            return early
        with degradation_scope() as holder:
            try:
                response = self.get_response(request)
            except BaseException as exc:
                if early is not None:
                    early.failure(exc)
                raise
        return self._after(request, response, holder, early)

    async def __acall__(self, request: HttpRequest) -> Any:
        early = self._before(request)
        if isinstance(early, HttpResponse):
            return early
        with degradation_scope() as holder:
            try:
                response = await self.get_response(request)
            except BaseException as exc:
                if early is not None:
                    early.failure(exc)
                raise
        return self._after(request, response, holder, early)

    # -- hooks ----------------------------------------------------------------

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """Answer a rejection raised by the view with a 503; leave the rest to Django."""
        rejection = _find_rejection(exception)
        if rejection is None:
            return None
        setattr(request, _REJECTED, True)
        _notify_rejection(rejection)
        return self._problem_response(rejection)

    # -- steps shared by both drivers -----------------------------------------

    def _before(self, request: HttpRequest) -> HttpResponse | Permit | None:
        """A response to send at once, the route's permit, or ``None``."""
        if self.status_path is not None and request.path == self.status_path:
            return self._status(request)
        if self.route_config is None:
            return None
        name = self._route_name(request)
        if name is None:
            return None
        breaker = _route_breaker(self.registry, name, self.route_config)
        try:
            return breaker.acquire()
        except CircuitOpenError as rejection:
            _notify_rejection(rejection)
            return self._problem_response(rejection)

    def _after(
        self, request: HttpRequest, response: Any, holder: Degradation, permit: Permit | None
    ) -> Any:
        if holder and not response.has_header("X-Degraded"):
            response["X-Degraded"] = _degraded_value(holder.reasons)
        if permit is not None:
            if getattr(request, _REJECTED, False):
                permit.ignore()
            elif response.status_code >= 500:
                permit.failure()
            else:
                permit.success()
        return response

    def _route_name(self, request: HttpRequest) -> str | None:
        if self.name_for is not None:
            return self.name_for(request)
        try:
            match = resolve(request.path_info, getattr(request, "urlconf", None))
        except Resolver404:
            return None
        route = getattr(match, "route", None)
        if not route:
            return None
        return f"{_bounded_method(request.method or '')} /{route}"

    def _problem_response(self, rejection: Rejection) -> HttpResponse:
        headers, body = _problem(rejection, self.problem_type, self.expose_names)
        response = HttpResponse(body, status=503, content_type="application/problem+json")
        for key, value in headers:
            if key not in ("content-type", "content-length"):
                response[key] = value
        return response

    def _status(self, request: HttpRequest) -> HttpResponse:
        guard = self.status_guard
        if guard is not None:
            if isinstance(guard, str):
                allowed = _bearer_ok(request.headers.get("Authorization"), guard)
            else:
                result = guard(request)
                if inspect.isawaitable(result):
                    if inspect.iscoroutine(result):
                        result.close()
                    raise TypeError("RESILIENCE['STATUS_GUARD'] must be a sync callable")
                allowed = bool(result)
            if not allowed:
                status, title = (
                    (401, "Unauthorized") if isinstance(guard, str) else (403, "Forbidden")
                )
                response = _small_problem(status, title, self.problem_type)
                if status == 401:
                    response["WWW-Authenticate"] = 'Bearer realm="resilience"'
                return response
        if request.method not in ("GET", "HEAD"):
            response = _small_problem(405, "Method Not Allowed", self.problem_type)
            response["Allow"] = "GET, HEAD"
            return response
        response = HttpResponse(_status_body(self.registry), content_type="application/json")
        response["Cache-Control"] = "no-store"
        return response


def _small_problem(status: int, title: str, problem_type: str) -> HttpResponse:
    body = json.dumps({"type": problem_type, "title": title, "status": status})
    response = HttpResponse(body, status=status, content_type="application/problem+json")
    response["Cache-Control"] = "no-store"
    return response
