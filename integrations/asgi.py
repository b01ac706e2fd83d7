"""Graceful degradation at the HTTP edge: a pure ASGI middleware.

:class:`ResilienceMiddleware` wraps any ASGI application (Starlette, FastAPI,
Django's ``ASGIHandler``, or a bare ASGI callable) and:

- turns a :class:`~resilience.CircuitOpenError` or
  :class:`~resilience.BulkheadFullError` escaping the application, before the
  response has started, into a ``503`` ``application/problem+json`` answer
  (RFC 9457) with ``Retry-After`` in whole seconds, rounded up;
- leaves every other exception to the framework and the server, never sends a
  second ``http.response.start`` and never drops a response;
- adds ``X-Degraded: fallback`` to responses produced while a fallback served
  (:func:`resilience.is_degraded`), streaming responses included;
- optionally guards each route with its own breaker (``route_breakers=``);
- optionally serves a JSON snapshot of the registry (``status_path=``).

Lifespan and websocket scopes pass through untouched. The module imports no
web framework: the route lookup for Starlette and FastAPI applications only
duck-types their public routing interface.
"""

from __future__ import annotations

import hmac
import inspect
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any, Final, TypeAlias

import resilience
from resilience import (
    BulkheadFullError,
    CircuitBreaker,
    CircuitConfig,
    CircuitOpenError,
    Registry,
    degradation_scope,
)

__all__ = (
    "ASGIApp",
    "Message",
    "Receive",
    "Rejection",
    "ResilienceMiddleware",
    "Scope",
    "Send",
    "StatusGuard",
    "add_rejection_observer",
)

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

Rejection: TypeAlias = CircuitOpenError | BulkheadFullError
"""The library's own rejections: what the middleware turns into a 503."""

StatusGuard: TypeAlias = Callable[[Scope], bool | Awaitable[bool]] | str
"""Protects the status endpoint: a callable ``guard(scope) -> bool`` (sync or
async), or a token that the request must present as ``Authorization: Bearer <token>``."""

logger = logging.getLogger("resilience")

# Seconds suggested to a caller rejected by a full bulkhead: it frees up as
# soon as one call finishes, so a short wait is the honest estimate.
BULKHEAD_RETRY_AFTER: Final = 1

_TOKEN_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

# -- rejection observers -------------------------------------------------------

_rejection_observers: list[Callable[[Rejection], None]] = []


def add_rejection_observer(fn: Callable[[Rejection], None]) -> Callable[[], None]:
    """Call ``fn(exc)`` each time a middleware answers a rejection with a 503.

    ``fn`` runs in the request's context (so an OpenTelemetry span current for
    the request is current for ``fn``); its exceptions are swallowed. Used by
    :func:`resilience.integrations.otel.instrument` to add span events.
    Returns the function that removes the observer.
    """
    _rejection_observers.append(fn)

    def remove() -> None:
        try:
            _rejection_observers.remove(fn)
        except ValueError:
            pass

    return remove


def _notify_rejection(exc: Rejection) -> None:
    for fn in tuple(_rejection_observers):
        try:
            fn(exc)
        except Exception:
            logger.exception("a rejection observer failed")


# -- shared by the ASGI and Django middlewares ---------------------------------


def _find_rejection(exc: BaseException) -> Rejection | None:
    """The rejection ``exc`` stands for, or ``None``.

    An exception group (``ChainExhaustedError``, an anyio task group) counts as
    a rejection only when every leaf is one: then the one that allows the
    earliest retry is reported.
    """
    if isinstance(exc, CircuitOpenError | BulkheadFullError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found: list[Rejection] = []
        for inner in exc.exceptions:
            rejection = _find_rejection(inner)
            if rejection is None:
                return None
            found.append(rejection)
        if not found:
            return None
        return min(found, key=_retry_sort_key)
    return None


def _retry_after(exc: Rejection) -> int | None:
    """Whole seconds to wait, rounded up and never 0; ``None`` if unknown."""
    if isinstance(exc, BulkheadFullError):
        return BULKHEAD_RETRY_AFTER
    if exc.retry_after is None or not math.isfinite(exc.retry_after):
        return None
    return max(1, math.ceil(exc.retry_after))


def _retry_sort_key(exc: Rejection) -> float:
    seconds = _retry_after(exc)
    return math.inf if seconds is None else seconds


def _problem(
    exc: Rejection, problem_type: str, expose_names: bool = False
) -> tuple[list[tuple[str, str]], bytes]:
    """Headers and body of the 503 ``application/problem+json`` answer.

    The body says what kind of trouble it is and how long to wait, nothing
    else: no exception text, no state, no failure category, and no breaker
    or bulkhead name (names can hold hosts and databases) unless
    ``expose_names``. The log line (DEBUG, logger ``resilience``) names it.
    """
    retry_after = _retry_after(exc)
    body: dict[str, Any] = {
        "type": problem_type,
        "title": "Service Unavailable",
        "status": 503,
    }
    if isinstance(exc, BulkheadFullError):
        body["detail"] = "The service is at capacity; try again shortly."
        if expose_names:
            body["bulkhead"] = exc.name
    else:
        body["detail"] = "A dependency is temporarily unavailable; try again later."
        if expose_names:
            body["circuit"] = exc.name
    logger.debug(
        "503: %s %r rejected the request (retry after %s s)",
        "bulkhead" if isinstance(exc, BulkheadFullError) else "circuit",
        exc.name,
        retry_after,
    )
    body["retry_after"] = retry_after
    payload = json.dumps(body, separators=(",", ":")).encode()
    headers = [
        ("content-type", "application/problem+json"),
        ("content-length", str(len(payload))),
        ("cache-control", "no-store"),
    ]
    if retry_after is not None:
        headers.append(("retry-after", str(retry_after)))
    return headers, payload


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _status_body(registry: Registry) -> bytes:
    """The status endpoint's JSON: ``{"circuits": [status(), ...]}``."""
    snapshot = _json_safe({"circuits": registry.snapshot()})
    return json.dumps(snapshot, separators=(",", ":"), default=str).encode()


def _bearer_ok(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>``."""
    if not header:
        return False
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode(), token.encode())


def _degraded_value(reasons: Iterable[str]) -> str:
    """The ``X-Degraded`` value: the distinct reasons that are valid header
    tokens (``fallback`` by default)."""
    safe = [r for r in dict.fromkeys(reasons) if _TOKEN_RE.fullmatch(r)]
    return ", ".join(safe) if safe else "fallback"


def _check_guard(guard: StatusGuard | None) -> StatusGuard | None:
    if guard is None or callable(guard):
        return guard
    if isinstance(guard, str):
        if not guard.strip() or guard != guard.strip():
            raise ValueError("status_guard token must be non-empty, without surrounding spaces")
        return guard
    raise TypeError(f"status_guard must be a callable or a token string, got {guard!r}")


def _check_route_breakers(value: bool | Mapping[str, Any]) -> CircuitConfig | None:
    if value is False or value is None:
        return None
    if value is True:
        return CircuitConfig()
    if isinstance(value, Mapping):
        return CircuitConfig(**value)
    raise TypeError(
        f"route_breakers must be a bool or a mapping of CircuitConfig fields, got {value!r}"
    )


_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _bounded_method(method: str) -> str:
    """The method as it goes into a breaker name: one of a fixed set, else
    ``OTHER``, so clients inventing methods cannot create breakers (and metric
    label values) without limit."""
    return method if method in _METHODS else "OTHER"


def _route_breaker(registry: Registry, name: str, config: CircuitConfig) -> CircuitBreaker:
    """The breaker called ``name``; an existing one (say, configured by hand
    for this route) is used as it is."""
    breaker = registry.get(name)
    if breaker is not None:
        return breaker
    try:
        return registry.get_or_create(name, config)
    except ValueError:  # created concurrently with other settings: use it
        return registry[name]


# -- route templates ------------------------------------------------------------


def _route_path(scope: Scope) -> str:
    """The path relative to ``root_path``, as Starlette's router sees it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path


def _is_full(match: Any) -> bool:
    return getattr(match, "name", None) == "FULL"


def _method_allowed(methods: Any, method: str) -> bool:
    if not methods:
        return True
    return method in methods or (method == "HEAD" and "GET" in methods)


def _match_contexts(contexts: Iterable[Any], scope: Scope) -> str | None:
    """First matching leaf of an opaque branch that lists its effective routes
    (FastAPI's ``include_router``): each has ``path_regex``, ``path_format``
    and ``methods`` like a Starlette ``Route``."""
    path = _route_path(scope)
    for ctx in contexts:
        regex = getattr(ctx, "path_regex", None)
        template = getattr(ctx, "path_format", None)
        if regex is None or not isinstance(template, str) or not template:
            continue
        if regex.match(path) and _method_allowed(getattr(ctx, "methods", None), scope["method"]):
            return template
    return None


def _resolve_template(routes: Sequence[Any], scope: Scope, depth: int = 0) -> str | None:
    """The template of the route the router will pick (first full match),
    including the templates of the mounts on the way; ``None`` when unknown."""
    if depth > 16:
        return None
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if callable(contexts):
            found = _match_contexts(contexts(), scope)
            if found is not None:
                return found
            continue
        matches = getattr(route, "matches", None)
        if not callable(matches):
            continue
        try:
            match, child = matches(scope)
        except Exception:
            continue
        if not _is_full(match):
            continue
        template = getattr(route, "path_format", None)
        sub = getattr(route, "routes", None)
        if sub is None:  # a leaf (Route, APIRoute)
            return template if isinstance(template, str) and template else None
        # A Mount (path_format ends in "/{path}") or a Host (no path_format).
        prefix = template.removesuffix("/{path}") if isinstance(template, str) else ""
        if not sub:
            # A mounted app without routes (static files, another framework):
            # one breaker for the whole mount.
            return template if isinstance(template, str) and template else None
        inner = _resolve_template(sub, {**scope, **child}, depth + 1)
        return prefix + inner if inner is not None else None
    return None


def _routes_of(app: Any) -> Sequence[Any] | None:
    routes = getattr(app, "routes", None)
    return routes if isinstance(routes, Sequence) else None


# -- the middleware ---------------------------------------------------------------


def _refuse_framework_app(app: Any) -> None:
    """A Starlette (or FastAPI) application answers its own errors with 500
    in its outermost middleware: wrapping it from outside could never turn a
    rejection into a 503. Say so at construction, with the fix."""
    for cls in type(app).__mro__:
        if cls.__module__ == "starlette.applications" and cls.__name__ == "Starlette":
            raise TypeError(
                f"ResilienceMiddleware({type(app).__name__} app) would answer 500, not 503: "
                f"the app's own error middleware answers first. Use "
                f"app.add_middleware(ResilienceMiddleware, ...) instead"
            )


class _Exchange:
    """What the middleware saw of one response."""

    __slots__ = ("send_failed", "started", "status")

    def __init__(self) -> None:
        self.started = False
        self.send_failed = False
        self.status = 0


class ResilienceMiddleware:
    """Pure ASGI middleware for graceful degradation at the HTTP edge.

    Works with ``app.add_middleware(ResilienceMiddleware, ...)`` in Starlette
    and FastAPI, or wraps any ASGI application:
    ``app = ResilienceMiddleware(django_asgi_app)``.

    Args:
        app: the ASGI application to wrap.
        registry: where route breakers are created and what the status
            endpoint reports; default :data:`resilience.registry`.
        status_path: the full request path (e.g. ``"/_resilience/status"``)
            that answers ``GET``/``HEAD`` with ``{"circuits": [...]}``, the
            ``status()`` of every breaker. Default ``None``: no endpoint.
        status_guard: protects the status endpoint. A token string (the request
            must send ``Authorization: Bearer <token>``; otherwise 401), or a
            callable ``guard(scope) -> bool`` (sync or async; ``False`` gives
            403). Default ``None``: anyone who can reach the path may read it
            (it holds breaker names, states and settings, never secrets).
        route_breakers: ``False`` (default) for none; ``True`` for one breaker
            per route with the default :class:`~resilience.CircuitConfig`; or
            a mapping of ``CircuitConfig`` fields for them. A route breaker is
            named ``"<METHOD> <route template>"`` (``"GET /users/{user_id}"``),
            counts 5xx answers and exceptions as failures, and while open
            answers 503 at once without calling the route. A breaker already
            in the registry under that name is used as it is (configure single
            routes that way). Requests whose route template is unknown get no
            breaker: names never come from raw URLs.
        name_for: with route breakers, replaces the template lookup:
            ``name_for(scope) -> str | None`` is called before the application
            with the raw scope; ``None`` means no breaker for this request.
            Keep the names it returns bounded (templates, not raw paths).
        problem_type: the ``type`` member of problem+json answers: a URI
            documenting the error, default ``"about:blank"``.
        expose_names: ``True`` puts the rejecting breaker's (or bulkhead's)
            name in the public 503 body (``"circuit"``/``"bulkhead"``). Default
            ``False``: names can hold hosts and databases
            (``postgresql://10.0.0.5:5432/payments``), so the public body
            carries none; the DEBUG log line and the status endpoint do.

    Wrap an application with ``add_middleware`` in Starlette and FastAPI:
    their own error middleware sits outside anything added later and answers
    500 before an outer wrapper could answer 503, so
    ``ResilienceMiddleware(starlette_app)`` is refused with a ``TypeError``
    saying so. Any other ASGI application (Django's, a bare ASGI callable)
    can be wrapped directly.

    Route templates are found before the application runs, from the routes of
    the wrapped app (or of ``scope["app"]``, which Starlette sets): Starlette
    ``Route``/``Mount``/``Host``, FastAPI routes and included routers.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        registry: Registry | None = None,
        status_path: str | None = None,
        status_guard: StatusGuard | None = None,
        route_breakers: bool | Mapping[str, Any] = False,
        name_for: Callable[[Scope], str | None] | None = None,
        problem_type: str = "about:blank",
        expose_names: bool = False,
    ) -> None:
        _refuse_framework_app(app)
        if not isinstance(expose_names, bool):
            raise TypeError(f"expose_names must be True or False, got {expose_names!r}")
        if status_path is not None and not status_path.startswith("/"):
            raise ValueError(f"status_path must start with '/', got {status_path!r}")
        if name_for is not None and not callable(name_for):
            raise TypeError(f"name_for must be callable, got {name_for!r}")
        if not isinstance(problem_type, str) or not problem_type:
            raise ValueError("problem_type must be a non-empty URI string")
        self.app = app
        self.registry = registry if registry is not None else resilience.registry
        self.status_path = status_path
        self.status_guard = _check_guard(status_guard)
        self.route_config = _check_route_breakers(route_breakers)
        self.name_for = name_for
        self.problem_type = problem_type
        self.expose_names = expose_names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.status_path is not None and scope["path"] == self.status_path:
            await self._status(scope, send)
            return

        permit = None
        if self.route_config is not None:
            name = self._route_name(scope)
            if name is not None:
                breaker = _route_breaker(self.registry, name, self.route_config)
                try:
                    permit = breaker.acquire()
                except CircuitOpenError as refused:
                    await self._reject(refused, send)
                    return

        exchange = _Exchange()
        with degradation_scope() as holder:

            async def send_wrapper(message: Message) -> None:
                if message["type"] == "http.response.start":
                    # Marked before the await: whatever happens next, the
                    # start has been handed to the server.
                    exchange.started = True
                    exchange.status = int(message["status"])
                    if holder:
                        headers = list(message.get("headers", ()))
                        if not any(k.lower() == b"x-degraded" for k, _ in headers):
                            value = _degraded_value(holder.reasons).encode("latin-1")
                            headers.append((b"x-degraded", value))
                            message = {**message, "headers": headers}
                try:
                    await send(message)
                except BaseException:
                    exchange.send_failed = True
                    raise

            try:
                await self.app(scope, receive, send_wrapper)
            except BaseException as exc:
                rejection = _find_rejection(exc)
                if permit is not None:
                    if rejection is not None or exchange.send_failed:
                        # Not the route's fault: an inner breaker or bulkhead
                        # said no, or the client went away.
                        permit.ignore()
                    else:
                        permit.failure(exc)
                if rejection is None or exchange.started:
                    # A real failure (the framework or server answers 500), or
                    # too late for a 503: the response has started.
                    raise
                await self._reject(rejection, send)
                return

        if permit is not None:
            if exchange.started and exchange.status < 500:
                permit.success()
            else:
                permit.failure()

    def _route_name(self, scope: Scope) -> str | None:
        if self.name_for is not None:
            return self.name_for(scope)
        routes = _routes_of(self.app)
        if routes is None:
            routes = _routes_of(scope.get("app"))
        if routes is None:
            return None
        template = _resolve_template(routes, dict(scope))
        if template is None:
            return None
        return f"{_bounded_method(scope['method'])} {template}"

    async def _reject(self, exc: Rejection, send: Send) -> None:
        _notify_rejection(exc)
        headers, body = _problem(exc, self.problem_type, self.expose_names)
        await _respond(send, 503, headers, body)

    async def _status(self, scope: Scope, send: Send) -> None:
        guard = self.status_guard
        if guard is not None and not await _guard_allows(guard, scope):
            if isinstance(guard, str):
                await _respond_problem(
                    send,
                    401,
                    "Unauthorized",
                    self.problem_type,
                    [("www-authenticate", 'Bearer realm="resilience"')],
                )
            else:
                await _respond_problem(send, 403, "Forbidden", self.problem_type, [])
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _respond_problem(
                send, 405, "Method Not Allowed", self.problem_type, [("allow", "GET, HEAD")]
            )
            return
        body = _status_body(self.registry)
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("cache-control", "no-store"),
        ]
        await _respond(send, 200, headers, b"" if scope["method"] == "HEAD" else body)


async def _guard_allows(guard: StatusGuard, scope: Scope) -> bool:
    if isinstance(guard, str):
        header = None
        for key, value in scope.get("headers", ()):
            if key.lower() == b"authorization":
                header = value.decode("latin-1")
                break
        return _bearer_ok(header, guard)
    result = guard(scope)
    if inspect.isawaitable(result):
        result = await result
    return bool(result)


async def _respond(send: Send, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _respond_problem(
    send: Send, status: int, title: str, problem_type: str, extra: list[tuple[str, str]]
) -> None:
    body = json.dumps(
        {"type": problem_type, "title": title, "status": status}, separators=(",", ":")
    ).encode()
    headers = [
        ("content-type", "application/problem+json"),
        ("content-length", str(len(body))),
        ("cache-control", "no-store"),
        *extra,
    ]
    await _respond(send, status, headers, body)
