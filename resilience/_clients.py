"""What ``classify`` knows about errors: causes, SQLSTATE on any layer, client families.

An error from a data-access client is often a wrapper: SQLAlchemy's
``ProgrammingError`` holds the driver's error in ``.orig`` (and as
``__cause__``), whose SQLSTATE says "syntax error"; an application's own
``UserLookupError`` may be raised ``from`` a connection error. So
:func:`classify_error` walks the error and its causes, each *layer* in turn
(outermost first), and the first layer with a definite answer decides:

1. a type registered with ``register_category`` (integrations register
   their drivers' types);
2. a SQLSTATE on the layer (``exc.sqlstate`` as asyncpg, psycopg 3 and
   SQLAlchemy's adapted errors carry it; ``exc.pgcode`` as psycopg2 does);
3. the layer's client family, recognised by the *names* of the classes in
   its MRO and the top-level package that defines them (``sqlalchemy``,
   ``psycopg``, ``psycopg_pool``, ``psycopg2``, ``redis``, ``valkey``,
   ``httpx``, ``httpcore``, ``aiohttp``), so no client library is ever
   imported here;
4. the builtin rules: ``TimeoutError`` timeout, ``OSError`` connection,
   ``MemoryError`` resource.

Some family rules are only *fallbacks*: the PEP 249 classes
(``OperationalError`` -> connection, ``ProgrammingError`` -> query, ...) of
SQLAlchemy and the PostgreSQL drivers are what a wrapper says when nothing
underneath is more precise (psycopg raises a refused connection as an
``OperationalError`` with no SQLSTATE). They apply, outermost first, only
when no layer gives a definite answer.

The next layer is ``.orig`` (when it is an exception), then ``__cause__``,
then ``__context__`` unless the error was raised ``from None``. The walk
visits each exception once (cycles are possible: ``e.__context__`` may be
set by hand) and at most :data:`MAX_LAYERS` of them.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Final, NamedTuple

from ._states import ErrorCategory

logger = logging.getLogger("resilience")

__all__ = (
    "MAX_LAYERS",
    "category_for_status",
    "chain_sqlstate",
    "classify_error",
    "classify_sqlstate",
    "register_category",
)

MAX_LAYERS: Final = 16
"""Exceptions visited at most per classification (the error and its causes)."""

# -- SQLSTATE and registered types -------------------------------------------

_CATEGORY = ErrorCategory
# SQLSTATE class (first two characters) -> category. Exact codes win over classes.
_SQLSTATE_CODES: Final[Mapping[str, ErrorCategory]] = {
    "57P01": _CATEGORY.CONNECTION_ERROR,  # admin_shutdown
    "57P02": _CATEGORY.CONNECTION_ERROR,  # crash_shutdown
    "57P03": _CATEGORY.CONNECTION_ERROR,  # cannot_connect_now
    "57P04": _CATEGORY.CONNECTION_ERROR,  # database_dropped
    "57P05": _CATEGORY.CONNECTION_ERROR,  # idle_session_timeout
    "57014": _CATEGORY.TIMEOUT_ERROR,  # query_canceled (statement_timeout)
    "25P03": _CATEGORY.TIMEOUT_ERROR,  # idle_in_transaction_session_timeout
    "55P03": _CATEGORY.TIMEOUT_ERROR,  # lock_not_available (lock_timeout)
    "3D000": _CATEGORY.DATABASE_ERROR,  # invalid_catalog_name
    "P0001": _CATEGORY.QUERY_ERROR,  # raise_exception from PL/pgSQL
}
_SQLSTATE_CLASSES: Final[Mapping[str, ErrorCategory]] = {
    "08": _CATEGORY.CONNECTION_ERROR,
    "53": _CATEGORY.RESOURCE_ERROR,
    "28": _CATEGORY.AUTHENTICATION_ERROR,
    # Mistakes in the statement or the data: a bug, not an outage.
    **dict.fromkeys(
        (
            "0A", "21", "22", "23", "24", "25", "26", "27", "2B", "2D", "2F",
            "34", "38", "39", "3B", "3F", "42", "44", "54", "P0",
        ),
        _CATEGORY.QUERY_ERROR,
    ),
    **dict.fromkeys(
        ("40", "55", "57", "58", "72", "F0", "HV", "XX"), _CATEGORY.DATABASE_ERROR
    ),
}  # fmt: skip

_registry_lock = threading.Lock()
_by_type: dict[type[BaseException], ErrorCategory] = {}
_type_cache: dict[type[BaseException], ErrorCategory | None] = {}
# Modules whose exceptions a resilience integration knows how to classify; the
# integration is imported (and registers its types) the first time such an
# exception is classified, so `classify` knows asyncpg errors without an import.
_PROVIDERS: dict[str, str] = {"asyncpg": "resilience.integrations.asyncpg"}
_loaded_providers: set[str] = set()


def register_category(exc_type: type[BaseException], category: ErrorCategory) -> None:
    """Classify ``exc_type`` (and its subclasses) as ``category``.

    Registered types are consulted before SQLSTATE and the builtin rules; the
    most specific registered base class wins.
    """
    if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
        raise TypeError(f"register_category needs an exception type, got {exc_type!r}")
    category = ErrorCategory(category)
    with _registry_lock:
        _by_type[exc_type] = category
        _type_cache.clear()


def _registered(exc_type: type[BaseException]) -> ErrorCategory | None:
    try:
        return _type_cache[exc_type]
    except KeyError:
        pass
    found = None
    for base in exc_type.__mro__:
        found = _by_type.get(base)
        if found is not None:
            break
    _type_cache[exc_type] = found
    return found


def _load_provider(exc_type: type[BaseException]) -> bool:
    root = exc_type.__module__.partition(".")[0]
    module = _PROVIDERS.get(root)
    if module is None or root in _loaded_providers:
        return False
    _loaded_providers.add(root)
    try:
        importlib.import_module(module)
    except ImportError:
        logger.warning("could not load %s to classify %s errors", module, root, exc_info=True)
        return False
    with _registry_lock:
        _type_cache.clear()
    return True


def classify_sqlstate(sqlstate: str) -> ErrorCategory:
    """The category of a five-character SQLSTATE code."""
    code = sqlstate.upper()
    found = _SQLSTATE_CODES.get(code) or _SQLSTATE_CLASSES.get(code[:2])
    return found if found is not None else ErrorCategory.DATABASE_ERROR


# -- layers and families ------------------------------------------------------

_C = ErrorCategory
_Rule = ErrorCategory | Callable[[BaseException], ErrorCategory | None]


def category_for_status(status: int) -> ErrorCategory:
    """The category of an HTTP error status (what ``raise_for_status()`` raises on).

    401, 403 and 407 are authentication; 429 (rate limited) and 503 resource;
    502 connection; 504 timeout; any other 5xx unknown (a failure); any other
    status (the rest of 4xx, a 3xx not followed) a query error: the caller's
    request, not the server's health.
    """
    if status in (401, 403, 407):
        return _C.AUTHENTICATION_ERROR
    if status == 429 or status == 503:
        return _C.RESOURCE_ERROR
    if status == 502:
        return _C.CONNECTION_ERROR
    if status == 504:
        return _C.TIMEOUT_ERROR
    if 500 <= status <= 599:
        return _C.UNKNOWN_ERROR
    return _C.QUERY_ERROR


def _status_of_response(exc: BaseException) -> ErrorCategory | None:
    # httpx.HTTPStatusError: exc.response.status_code
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool):
        return category_for_status(status)
    return None


def _status_attribute(exc: BaseException) -> ErrorCategory | None:
    # aiohttp.ClientResponseError: exc.status
    status = getattr(exc, "status", None)
    if isinstance(status, int) and not isinstance(status, bool):
        return category_for_status(status)
    return None


# -- the families: class name (anywhere in the MRO, most specific first) -> rule

_SQLALCHEMY: Final[Mapping[str, _Rule]] = {
    "TimeoutError": _C.RESOURCE_ERROR,  # the pool: "QueuePool limit ... timed out"
    "DisconnectionError": _C.CONNECTION_ERROR,
    # Mistakes in the program, never the database's health.
    "ArgumentError": _C.QUERY_ERROR,
    "CompileError": _C.QUERY_ERROR,
    "InvalidRequestError": _C.QUERY_ERROR,  # NoResultFound, MissingGreenlet, ...
    "UnsupportedCompilationError": _C.QUERY_ERROR,
}

_PSYCOPG: Final[Mapping[str, _Rule]] = {
    "ConnectionTimeout": _C.TIMEOUT_ERROR,
    "PoolTimeout": _C.RESOURCE_ERROR,  # psycopg_pool
    "TooManyRequests": _C.RESOURCE_ERROR,  # psycopg_pool
    "PoolClosed": _C.QUERY_ERROR,  # psycopg_pool: used after close()
}

_REDIS: Final[Mapping[str, _Rule]] = {
    "AuthenticationError": _C.AUTHENTICATION_ERROR,
    "AuthorizationError": _C.AUTHENTICATION_ERROR,
    "AuthenticationWrongNumberOfArgsError": _C.AUTHENTICATION_ERROR,
    "NoPermissionError": _C.AUTHENTICATION_ERROR,  # NOPERM (ACL)
    # The server's state: loading its dataset, a read-only replica, a cluster
    # without a master. Failures, but not of the network.
    "BusyLoadingError": _C.DATABASE_ERROR,
    "ReadOnlyError": _C.DATABASE_ERROR,
    "MasterDownError": _C.DATABASE_ERROR,
    "ClusterDownError": _C.DATABASE_ERROR,
    "TryAgainError": _C.DATABASE_ERROR,
    "SlotNotCoveredError": _C.DATABASE_ERROR,
    "MovedError": _C.DATABASE_ERROR,
    "AskError": _C.DATABASE_ERROR,
    "ClusterError": _C.DATABASE_ERROR,
    "OutOfMemoryError": _C.RESOURCE_ERROR,
    "MaxConnectionsError": _C.RESOURCE_ERROR,
    "ConnectionError": _C.CONNECTION_ERROR,
    "InvalidResponse": _C.CONNECTION_ERROR,
    "TimeoutError": _C.TIMEOUT_ERROR,
    # The caller's command: a bug or a per-call condition, never an outage.
    "ResponseError": _C.QUERY_ERROR,
    "DataError": _C.QUERY_ERROR,
    "WatchError": _C.QUERY_ERROR,
    "LockError": _C.QUERY_ERROR,
    "PubSubError": _C.QUERY_ERROR,
    "CrossSlotTransactionError": _C.QUERY_ERROR,
}

_HTTP_TRANSPORT: Final[Mapping[str, _Rule]] = {
    "PoolTimeout": _C.RESOURCE_ERROR,  # no connection free in the client's own pool
    "ConnectTimeout": _C.TIMEOUT_ERROR,
    "ReadTimeout": _C.TIMEOUT_ERROR,
    "WriteTimeout": _C.TIMEOUT_ERROR,
    "TimeoutException": _C.TIMEOUT_ERROR,
    "ConnectError": _C.CONNECTION_ERROR,
    "ReadError": _C.CONNECTION_ERROR,
    "WriteError": _C.CONNECTION_ERROR,
    "CloseError": _C.CONNECTION_ERROR,
    "NetworkError": _C.CONNECTION_ERROR,
    "RemoteProtocolError": _C.CONNECTION_ERROR,  # the server hung up or spoke garbage
    "ProxyError": _C.CONNECTION_ERROR,
    # The caller's request.
    "LocalProtocolError": _C.QUERY_ERROR,
    "UnsupportedProtocol": _C.QUERY_ERROR,
}

_HTTPX: Final[Mapping[str, _Rule]] = {
    **_HTTP_TRANSPORT,
    "HTTPStatusError": _status_of_response,
    "TooManyRedirects": _C.QUERY_ERROR,
    "InvalidURL": _C.QUERY_ERROR,
    "CookieConflict": _C.QUERY_ERROR,
    "StreamError": _C.QUERY_ERROR,  # StreamConsumed, ResponseNotRead, ...
}

_AIOHTTP: Final[Mapping[str, _Rule]] = {
    "ContentTypeError": _C.QUERY_ERROR,  # .json() on a non-JSON answer
    "TooManyRedirects": _C.QUERY_ERROR,
    "ClientResponseError": _status_attribute,  # raise_for_status()
    "ServerTimeoutError": _C.TIMEOUT_ERROR,
    "ConnectionTimeoutError": _C.TIMEOUT_ERROR,
    "SocketTimeoutError": _C.TIMEOUT_ERROR,
    "ClientConnectionError": _C.CONNECTION_ERROR,  # connector, disconnected, OS errors
    "ClientPayloadError": _C.CONNECTION_ERROR,  # the body was cut short
    "InvalidURL": _C.QUERY_ERROR,
}

_FAMILIES: Final[Mapping[str, Mapping[str, _Rule]]] = {
    "sqlalchemy": _SQLALCHEMY,
    "psycopg": _PSYCOPG,
    "psycopg_pool": _PSYCOPG,
    "redis": _REDIS,
    "valkey": _REDIS,
    "httpx": _HTTPX,
    "httpcore": _HTTP_TRANSPORT,
    "aiohttp": _AIOHTTP,
}

# PEP 249 classes: what a wrapper says when nothing underneath is precise.
_DBAPI: Final[Mapping[str, ErrorCategory]] = {
    "OperationalError": _C.CONNECTION_ERROR,
    "ProgrammingError": _C.QUERY_ERROR,
    "IntegrityError": _C.QUERY_ERROR,
    "DataError": _C.QUERY_ERROR,
    "NotSupportedError": _C.QUERY_ERROR,
    "InternalError": _C.DATABASE_ERROR,
}
_FALLBACKS: Final[Mapping[str, Mapping[str, ErrorCategory | None]]] = {
    # SQLAlchemy's InterfaceError and DBAPIError say nothing of their own: .orig
    # decides. A StatementError that is not a DBAPIError failed before reaching
    # the database (binding a parameter, say): the program's mistake.
    "sqlalchemy": {
        **_DBAPI,
        "InterfaceError": None,
        "DatabaseError": None,
        "DBAPIError": None,
        "StatementError": _C.QUERY_ERROR,
    },
    "psycopg": {**_DBAPI, "InterfaceError": _C.QUERY_ERROR},  # misuse of the API
    "psycopg2": {**_DBAPI, "InterfaceError": _C.CONNECTION_ERROR},  # "connection already closed"
}


def _lookup(
    exc_type: type[BaseException], tables: Mapping[str, Mapping[str, _Rule | None]]
) -> _Rule | None:
    """The rule of the most specific class in the MRO that a table names (a
    table may name a class to say "no rule here, and none from my bases")."""
    for base in exc_type.__mro__:
        table = tables.get(base.__module__.partition(".")[0])
        if table is not None and base.__name__ in table:
            return table[base.__name__]
    return None


_CACHE_LIMIT: Final = 4096


class _Plan(NamedTuple):
    """What to look at on an error of one type (the tables never change)."""

    rule: _Rule | None  # the family's definite rule
    fallback: _Rule | None  # the family's DB-API fallback
    pgcode: bool  # psycopg2 keeps the SQLSTATE in ``pgcode``


_plans: dict[type[BaseException], _Plan] = {}


def _plan(exc_type: type[BaseException]) -> _Plan:
    try:
        return _plans[exc_type]
    except KeyError:
        pass
    plan = _Plan(
        _lookup(exc_type, _FAMILIES),
        _lookup(exc_type, _FALLBACKS),
        any(base.__module__.partition(".")[0] == "psycopg2" for base in exc_type.__mro__),
    )
    if len(_plans) >= _CACHE_LIMIT:  # classes made on the fly: start over, stay bounded
        _plans.clear()
    _plans[exc_type] = plan
    return plan


def _apply(rule: _Rule | None, exc: BaseException) -> ErrorCategory | None:
    if rule is None or isinstance(rule, ErrorCategory):
        return rule
    return rule(exc)


def _sqlstate(exc: BaseException, plan: _Plan) -> str | None:
    code = getattr(exc, "sqlstate", None)
    if isinstance(code, str) and len(code) == 5:
        return code
    if plan.pgcode:
        code = getattr(exc, "pgcode", None)
        if isinstance(code, str) and len(code) == 5:
            return code
    return None


def _causes(exc: BaseException) -> list[BaseException]:
    """The next layers under ``exc``, in the order they are consulted."""
    found: list[BaseException] = []
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):
        found.append(orig)
    if exc.__cause__ is not None:
        found.append(exc.__cause__)
    if exc.__context__ is not None and not exc.__suppress_context__:
        found.append(exc.__context__)
    return found


def _walk(exc: BaseException, causes: list[BaseException]) -> Iterator[BaseException]:
    """The layers under ``exc`` (its ``causes`` first), depth first
    (``.orig``, cause, context), each once; with ``exc``, at most
    :data:`MAX_LAYERS`."""
    seen = {id(exc)}
    stack = causes[::-1]
    left = MAX_LAYERS - 1
    while stack and left > 0:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        left -= 1
        yield layer
        stack.extend(reversed(_causes(layer)))


def _definite(layer: BaseException) -> ErrorCategory | None:
    layer_type = type(layer)
    found = _registered(layer_type)
    if found is not None:
        return found
    plan = _plan(layer_type)
    code = getattr(layer, "sqlstate", None)
    if isinstance(code, str) and len(code) == 5:
        return classify_sqlstate(code)
    if plan.pgcode:
        code = _sqlstate(layer, plan)
        if code is not None:
            return classify_sqlstate(code)
    rule = plan.rule
    if rule is not None:
        found = rule if isinstance(rule, ErrorCategory) else rule(layer)
        if found is not None:
            return found
    if isinstance(layer, TimeoutError):
        return _C.TIMEOUT_ERROR
    if isinstance(layer, OSError):
        return _C.CONNECTION_ERROR
    if isinstance(layer, MemoryError):
        return _C.RESOURCE_ERROR
    if _load_provider(layer_type):  # an integration registers its driver's types
        return _definite(layer)
    return None


def classify_error(exc: BaseException) -> ErrorCategory:
    """The category of ``exc``, following it to its causes (see the module docs)."""
    found = _definite(exc)
    if found is not None:
        return found
    causes = _causes(exc)
    if not causes:  # a single layer: only its fallback is left
        found = _apply(_plan(type(exc)).fallback, exc)
        return found if found is not None else _C.UNKNOWN_ERROR
    visited = [exc]
    for layer in _walk(exc, causes):  # stops at the first layer with an answer
        found = _definite(layer)
        if found is not None:
            return found
        visited.append(layer)
    for layer in visited:
        found = _apply(_plan(type(layer)).fallback, layer)
        if found is not None:
            return found
    return _C.UNKNOWN_ERROR


def chain_sqlstate(exc: BaseException) -> str | None:
    """The first SQLSTATE on ``exc`` or its causes (``None`` if there is none)."""
    code = _sqlstate(exc, _plan(type(exc)))
    if code is not None:
        return code
    for layer in _walk(exc, _causes(exc)):
        code = _sqlstate(layer, _plan(type(layer)))
        if code is not None:
            return code
    return None
