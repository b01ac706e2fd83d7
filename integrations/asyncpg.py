"""asyncpg integration: a connection pool with a circuit breaker on every
connect and every query, and the classification of asyncpg's errors.

:class:`ResilientPool` (alias :class:`WorkflowConnectionPool`, the name the
Kailash guide uses) wraps an ``asyncpg`` pool. Unlike the guide's system, its
breaker guards the real work: creating the pool, connecting, waiting for a
free connection, the query and handing the connection back are one guarded
call, so a dead server opens the circuit and a live one closes it.

The pool starts lazily: constructing it never connects, and starting it while
the database is down does not crash or hang. Calls fail fast (then are
rejected once the circuit opens) and the pool recovers when the server
returns, with no restart.

Importing this module registers asyncpg's exception types with
:func:`resilience.register_category` (``resilience.classify`` imports it the
first time it meets an asyncpg error). Errors that carry a SQLSTATE are
classified by it, the others by type, never by message text:

- CONNECTION_ERROR (failure): refused or reset connects (``OSError``),
  ``PostgresConnectionError`` and every 08xxx (``ConnectionDoesNotExistError``:
  the connection was lost mid-query), 57P01-57P05 (admin shutdown, crash,
  cannot connect now), ``ProtocolError``, ``TargetServerAttributeNotMatched``.
- TIMEOUT_ERROR (failure): builtin ``TimeoutError`` (connect or command
  timeout), ``QueryCanceledError`` 57014 (statement timeout).
- RESOURCE_ERROR (failure): ``TooManyConnectionsError`` 53300 and the rest of
  class 53, :class:`PoolExhaustedError` (no free connection in time).
- AUTHENTICATION_ERROR (ignored): class 28 (``InvalidPasswordError``, unknown role).
- DATABASE_ERROR (failure): ``InvalidCatalogNameError`` 3D000 (unknown
  database), 58xxx, XX000; but serialization failures and deadlocks
  (40001, 40P01) are ignored.
- QUERY_ERROR (ignored): 42xxx, 22xxx, 23xxx and the other statement classes;
  ``InterfaceError`` and its subclasses (client-side misuse: bad query
  arguments, a released or busy connection, a closed pool, bad
  configuration); ``OutdatedSchemaCacheError`` (a stale cached plan).

No secret ever appears in an error message, a status dict, a log line or a
``repr``: DSNs are shown through :func:`redact_dsn`.
"""

# The query methods keep asyncpg's `timeout=` keyword (a per-call command timeout).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, cast

import asyncpg
import asyncpg.exceptions as pgexc

import resilience
from resilience import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ErrorCategory,
    Registry,
    ResilienceError,
    register_category,
)
from resilience._errors import fresh_copy  # one copy of the rule, shared with the core
from resilience._redact import redact_url  # the one redaction rule, shared with the CLI and stores

__all__ = (
    "PoolExhaustedError",
    "ResilientPool",
    "WorkflowConnectionPool",
    "redact_dsn",
)

logger = logging.getLogger("resilience.integrations.asyncpg")


class PoolExhaustedError(ResilienceError, TimeoutError):
    """No pooled connection became free within ``acquire_timeout`` seconds.

    Every connection of the pool was in use for the whole wait: the
    database is too slow for the load (category ``RESOURCE_ERROR``, a
    breaker failure). It is a builtin :class:`TimeoutError` too.

    Attributes:
        name: the pool's name.
        acquire_timeout: the wait that ran out, in seconds.
        max_size: the pool's size limit (all of them were busy).
    """

    def __init__(self, name: str, acquire_timeout: float, max_size: int) -> None:
        self.name = name
        self.acquire_timeout = acquire_timeout
        self.max_size = max_size
        super().__init__(name, acquire_timeout, max_size)

    def __str__(self) -> str:
        return (
            f"pool {self.name!r}: no connection became free within "
            f"{self.acquire_timeout:g}s (all {self.max_size} in use)"
        )


# -- classification ----------------------------------------------------------

# Errors without a SQLSTATE (the others are classified by it, in the core).
# A registered type wins over SQLSTATE, so only types whose every instance
# belongs to one category are registered.
_TYPE_CATEGORIES: Final[tuple[tuple[type[BaseException], ErrorCategory], ...]] = (
    (PoolExhaustedError, ErrorCategory.RESOURCE_ERROR),
    # 08xxx all the way down: refused, lost mid-query, cannot connect now.
    (pgexc.PostgresConnectionError, ErrorCategory.CONNECTION_ERROR),
    # Client-side misuse: bad query arguments (`_base.DataError`), a released
    # or busy connection, a closed pool, bad configuration, an unsupported
    # feature. A bug in the caller, not an outage: never trips.
    (pgexc.InterfaceError, ErrorCategory.QUERY_ERROR),
    # A garbled stream: the connection is unusable.
    (pgexc.ProtocolError, ErrorCategory.CONNECTION_ERROR),
    # target_session_attrs not met (e.g. only a standby answered).
    (pgexc.TargetServerAttributeNotMatched, ErrorCategory.CONNECTION_ERROR),
    # A cached plan went stale after a schema change: per statement, like a
    # serialization failure; says nothing about the server's health.
    (pgexc.OutdatedSchemaCacheError, ErrorCategory.QUERY_ERROR),
)

for _type, _category in _TYPE_CATEGORIES:
    register_category(_type, _category)


# -- DSN redaction -------------------------------------------------------------

redact_dsn = redact_url
"""``dsn`` with every password replaced by ``***`` (the project's one
redaction function, :func:`resilience._redact.redact_url`)."""


_PORT_SUFFIX = re.compile(r":\d*$")


def _target(
    dsn: str | None,
    host: str | None,
    port: int | str | None,
    database: str | None,
    user: str | None,
    password: str | None,
) -> tuple[str, str]:
    """``(display, default name)``: a redacted DSN of where the pool connects
    (the keywords override the DSN, as in asyncpg) and the server-and-database
    part of it, without user or password."""
    scheme, d_user, secret, hosts, db, query = "postgresql", "", False, "", "", ""
    if dsn:
        s, sep, rest = dsn.partition("://")
        if not sep:  # not a URL: show it redacted, as given
            shown = redact_dsn(dsn)
            return shown, "postgresql"
        scheme = s
        head, qmark, query = rest.partition("?")
        userinfo, at, hostpart = head.rpartition("@")
        if at:
            d_user, colon, _ = userinfo.partition(":")
            secret = bool(colon)
        hosts, _, db = hostpart.partition("/")
        if qmark:
            query = "?" + query  # masked with the rest below
    if host is not None:
        hosts = str(host) if port is None else f"{host}:{port}"
    elif port is not None:
        hosts = f"{_PORT_SUFFIX.sub('', hosts) if ',' not in hosts else hosts}:{port}"
    if user is not None:
        d_user = user
    if password:
        secret = True
    if database is not None:
        db = database
    auth = f"{d_user}:***@" if secret else (f"{d_user}@" if d_user else "")
    where = f"{hosts}/{db}" if db else hosts
    display = redact_url(f"{scheme}://{auth}{where}{query}")
    return display, (f"{scheme}://{where}" if where else scheme)


# -- the pool ------------------------------------------------------------------


class _Unset(enum.Enum):
    UNSET = "UNSET"


_UNSET: Final = _Unset.UNSET

# The seed's constructor keywords and the CircuitConfig fields they set.
_SEED_FIELDS: Final = {
    "circuit_breaker_failure_threshold": "failure_threshold",
    "circuit_breaker_recovery_timeout": "recovery_timeout",
    "circuit_breaker_error_rate": "error_rate",
    "circuit_breaker_success_threshold": "success_threshold",
}

# Keywords of asyncpg.create_pool that ResilientPool sets itself.
_OWN_POOL_KEYWORDS: Final = frozenset(
    {
        "dsn", "host", "port", "database", "user", "password", "min_size", "max_size",
        "timeout", "command_timeout", "max_inactive_connection_lifetime", "loop",
    }
)  # fmt: skip

# What may fail inside an `acquire()` block because of the database (judged by
# the breaker); anything else the block raises is the caller's own business.
_DATABASE_ERRORS: Final = (
    pgexc.PostgresError,
    pgexc.InterfaceError,
    pgexc.InternalClientError,
    OSError,
    TimeoutError,
)

_REJECTING: Final = (CircuitState.OPEN, CircuitState.FORCED_OPEN)

_FETCH_MODES: Final = ("all", "one", "val", "none")
_QUERY_KEYS: Final = frozenset({"query", "parameters", "fetch_mode", "timeout"})


# Defaults a production service wants: a dead or black-holed server must never
# hold a caller for long (docs/asyncpg.md, "Defaults").
DEFAULT_CONNECT_TIMEOUT: Final = 2.0
DEFAULT_COMMAND_TIMEOUT: Final = 5.0
DEFAULT_ACQUIRE_TIMEOUT: Final = 5.0


def _positive(name: str, value: float | None, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
    return float(value)


class ResilientPool:
    """An asyncpg connection pool whose every connect and query goes through
    a circuit breaker.

    Args:
        dsn: a ``postgresql://`` URL; the keyword parts below override it.
        name: the breaker's name (its identity in the registry; also the
            pool's name in errors). Default: the server and database, e.g.
            ``"postgresql://db.internal:5432/app"``.
        database_type: the seed's keyword; only ``"postgresql"`` (or
            ``"postgres"``) is supported, anything else is a ``ValueError``.
        host: the server's host (the seed's keyword), passed to asyncpg.
        port: the server's port (the seed's keyword).
        database: the database name (the seed's keyword).
        user: the role to connect as (the seed's keyword).
        password: the role's password (the seed's keyword); never shown in
            errors, logs, ``repr`` or status.
        min_size: connections kept open when idle, >= 0. Default 0: nothing
            connects until the first call, and an idle pool holds nothing
            that an outage could break.
        max_size: most connections at once, >= 1 and >= ``min_size``.
            Default 10.
        connect_timeout: seconds, > 0, allowed to open one connection
            (TCP, TLS and authentication). Default 2.0.
        command_timeout: seconds, > 0, allowed to each query unless the call
            passes its own ``timeout``; ``None`` means no limit. Default 5.0:
            a web request's queries take milliseconds, and a server that
            stops answering must not hold callers for long (give the few
            long queries their own ``timeout=``).
        acquire_timeout: seconds, > 0, a call may wait for a free
            connection when all ``max_size`` are busy, before failing with
            :class:`PoolExhaustedError`; ``None`` means no limit. Connecting
            is bounded by ``connect_timeout`` separately. Default 5.0.
        max_inactive_connection_lifetime: seconds after which an idle
            connection above ``min_size`` is closed; 0 disables. Default 300.0.
        circuit_breaker_enabled: ``False`` gives this pool a breaker of its
            own, not registered, in the sticky DISABLED state: every call
            passes and nothing is recorded. The registry's breaker for the same
            name (shared by other pools of the same server and database) is
            not touched. Default ``True``.
        circuit_breaker_failure_threshold: the breaker's
            ``failure_threshold`` (consecutive failures that open it).
        circuit_breaker_recovery_timeout: the breaker's ``recovery_timeout``
            (seconds open before a probe).
        circuit_breaker_error_rate: the breaker's ``error_rate`` (``None``
            turns the rate rule off).
        circuit_breaker_success_threshold: the breaker's
            ``success_threshold`` (probes that close it).
        breaker: use this breaker instead of one from the registry (then
            the ``circuit_breaker_*`` settings may not be given).
        registry: where the breaker is found or created by name. Default
            ``resilience.registry``, so status endpoints and metrics see it.
        pool_kwargs: more keywords for ``asyncpg.create_pool`` (``ssl``,
            ``server_settings``, ``init``, ``setup``, ``connect``,
            ``statement_cache_size``...); not the ones set above.

    The ``circuit_breaker_*`` settings left out take :class:`CircuitConfig`'s
    defaults (5 failures, 60 s, 0.5, 3). Calls rejected by the open circuit
    raise :class:`resilience.CircuitOpenError` without touching the network;
    calls already waiting for a free connection when the circuit opens are
    rejected at once too.

    Raises:
        TypeError: an unknown keyword.
        ValueError: an unsupported ``database_type`` or an invalid setting.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        name: str | None = None,
        database_type: str = "postgresql",
        host: str | None = None,
        port: int | None = None,
        database: str | None = None,
        user: str | None = None,
        password: str | None = None,
        min_size: int = 0,
        max_size: int = 10,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        command_timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        acquire_timeout: float | None = DEFAULT_ACQUIRE_TIMEOUT,
        max_inactive_connection_lifetime: float = 300.0,
        circuit_breaker_enabled: bool = True,
        circuit_breaker_failure_threshold: int | _Unset = _UNSET,
        circuit_breaker_recovery_timeout: float | _Unset = _UNSET,
        circuit_breaker_error_rate: float | _Unset | None = _UNSET,
        circuit_breaker_success_threshold: int | _Unset = _UNSET,
        breaker: CircuitBreaker | None = None,
        registry: Registry | None = None,
        pool_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(database_type, str) or database_type.lower() not in (
            "postgresql",
            "postgres",
        ):
            raise ValueError(
                f"ResilientPool speaks PostgreSQL only (through asyncpg); "
                f"database_type={database_type!r} is not supported"
            )
        if dsn is not None and not isinstance(dsn, str):
            raise TypeError(f"dsn must be a string, got {type(dsn).__name__}")
        for label, size, least in (("min_size", min_size, 0), ("max_size", max_size, 1)):
            if isinstance(size, bool) or not isinstance(size, int) or size < least:
                raise ValueError(f"{label} must be an integer >= {least}, got {size!r}")
        if min_size > max_size:
            raise ValueError(f"min_size ({min_size}) must be <= max_size ({max_size})")
        connect_timeout_s = cast(float, _positive("connect_timeout", connect_timeout))
        command_timeout_s = _positive("command_timeout", command_timeout, allow_none=True)
        acquire_timeout_s = _positive("acquire_timeout", acquire_timeout, allow_none=True)
        if (
            isinstance(max_inactive_connection_lifetime, bool)
            or not isinstance(max_inactive_connection_lifetime, int | float)
            or max_inactive_connection_lifetime < 0
        ):
            raise ValueError(
                "max_inactive_connection_lifetime must be a number of seconds >= 0, "
                f"got {max_inactive_connection_lifetime!r}"
            )
        extra = dict(pool_kwargs or {})
        clash = sorted(set(extra) & _OWN_POOL_KEYWORDS)
        if clash:
            raise TypeError(
                f"pool_kwargs may not set {', '.join(clash)}: pass them as ResilientPool "
                "keywords (connect_timeout is asyncpg's timeout)"
            )

        self._display, default_name = _target(dsn, host, port, database, user, password)
        fields: dict[str, Any] = {}
        given = {
            "circuit_breaker_failure_threshold": circuit_breaker_failure_threshold,
            "circuit_breaker_recovery_timeout": circuit_breaker_recovery_timeout,
            "circuit_breaker_error_rate": circuit_breaker_error_rate,
            "circuit_breaker_success_threshold": circuit_breaker_success_threshold,
        }
        for keyword, value in given.items():
            if value is not _UNSET:
                fields[_SEED_FIELDS[keyword]] = value
        if breaker is not None:
            if not isinstance(breaker, CircuitBreaker):
                raise TypeError(f"breaker must be a CircuitBreaker, got {type(breaker).__name__}")
            if fields:
                raise TypeError(
                    "pass either breaker= or circuit_breaker_* settings, not both "
                    f"(got {', '.join(k for k, v in given.items() if v is not _UNSET)})"
                )
            if registry is not None:
                raise TypeError("pass either breaker= or registry=, not both")
            if name is None:
                name = breaker.name
            if not circuit_breaker_enabled:
                raise TypeError(
                    "circuit_breaker_enabled=False with breaker=: the breaker is shared; "
                    "call breaker.disable() if that is what you mean"
                )
        else:
            if name is None:
                name = default_name
            if circuit_breaker_enabled:
                chosen = registry if registry is not None else resilience.registry
                breaker = chosen.get_or_create(name, **fields)
            else:
                # This pool's choice only: a private breaker of its own, never
                # registered, in DISABLED (every call passes, nothing is
                # recorded). The shared breaker of the same server and
                # database, which other pools use, is left as it is.
                breaker = CircuitBreaker(name, **fields)
                breaker.disable("circuit_breaker_enabled=False")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")

        self._name = name
        self._breaker = breaker
        self._min_size = min_size
        self._max_size = max_size
        self._connect_timeout = connect_timeout_s
        self._command_timeout = command_timeout_s
        self._acquire_timeout = acquire_timeout_s
        self._create_kwargs: dict[str, Any] = {
            **extra,
            "dsn": dsn,
            "host": host,
            "port": port,
            "database": database,
            "user": user,
            "password": password,
            "min_size": min_size,
            "max_size": max_size,
            "timeout": connect_timeout_s,
            "command_timeout": command_timeout_s,
            "max_inactive_connection_lifetime": float(max_inactive_connection_lifetime),
        }
        self._pool: asyncpg.Pool | None = None
        self._starting: asyncio.Task[asyncpg.Pool] | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        # Slots mirror the pool's connections, so a call never queues inside
        # asyncpg: its waiters can be timed (PoolExhaustedError) and rejected
        # the moment the circuit opens.
        self._free = max_size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._releasing: set[asyncio.Task[None]] = set()

    # -- identity and reporting ------------------------------------------------

    @property
    def name(self) -> str:
        """The pool's name (the breaker's name unless one was passed)."""
        return self._name

    @property
    def dsn(self) -> str:
        """Where the pool connects, as a DSN with any password redacted."""
        return self._display

    @property
    def circuit_breaker(self) -> CircuitBreaker:
        """The breaker guarding every connect and query."""
        return self._breaker

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("started" if self._pool is not None else "idle")
        return f"<ResilientPool {self._name!r} {self._display} {state}>"

    def pool_status(self) -> dict[str, Any]:
        """The pool's side of the status: size, idle connections, limits, DSN
        (redacted). JSON-friendly."""
        pool = self._pool
        return {
            "dsn": self._display,
            "started": pool is not None,
            "closed": self._closed,
            "size": pool.get_size() if pool is not None else 0,
            "idle": pool.get_idle_size() if pool is not None else 0,
            "in_use": self._max_size - self._free,
            "waiting": sum(1 for w in self._waiters if not w.done()),
            "min_size": self._min_size,
            "max_size": self._max_size,
            "connect_timeout": self._connect_timeout,
            "command_timeout": self._command_timeout,
            "acquire_timeout": self._acquire_timeout,
        }

    async def get_circuit_breaker_status(self) -> dict[str, Any]:
        """The breaker's ``status()`` plus ``"pool"``: :meth:`pool_status`."""
        status = self._breaker.status()
        status["pool"] = self.pool_status()
        return status

    def get_circuit_breaker_metrics(self) -> dict[str, Any]:
        """The breaker's ``metrics()`` (lifetime counters)."""
        return self._breaker.metrics()

    # -- starting and stopping -------------------------------------------------

    async def _start(self) -> asyncpg.Pool:
        """The asyncpg pool, created on first use; one creation at a time."""
        if self._closed:
            raise pgexc.InterfaceError(f"ResilientPool {self._name!r} is closed")
        task = self._starting
        creator = task is None
        if task is None:
            loop = asyncio.get_running_loop()
            task = self._starting = loop.create_task(self._create())
            task.add_done_callback(self._created)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and self.closed and current and not current.cancelling():
                raise pgexc.InterfaceError(f"ResilientPool {self._name!r} is closed") from None
            raise
        except Exception as exc:
            if creator:
                raise
            # Every caller that waited on the same attempt fails with an error
            # of its own: one shared object would collect everyone's traceback.
            raise fresh_copy(exc) from None

    async def _create(self) -> asyncpg.Pool:
        logger.debug("pool %r: creating the asyncpg pool for %s", self._name, self._display)
        pool = await asyncpg.create_pool(**self._create_kwargs)
        if self._closed:  # close() came while connecting
            pool.terminate()
            raise pgexc.InterfaceError(f"ResilientPool {self._name!r} is closed")
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = self._breaker.add_listener(self._on_transition)
        return pool

    def _created(self, task: asyncio.Task[Any]) -> None:
        if self._starting is task:
            self._starting = None
        if not task.cancelled():
            task.exception()  # retrieved here: waiters may all have gone

    async def close(self, *, timeout: float = 10.0) -> None:
        """Close the pool: wait up to ``timeout`` seconds for connections in
        use to be released, then terminate what is left. Idempotent; calls
        after it raise ``asyncpg.InterfaceError``."""
        if self._closed:
            return
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        task = self._starting
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), timeout)
        except TimeoutError:
            logger.warning(
                "pool %r: connections still busy after %gs; terminating them", self._name, timeout
            )
            pool.terminate()
        if self._releasing:  # background releases end with their connections
            await asyncio.gather(*self._releasing, return_exceptions=True)

    def terminate(self) -> None:
        """Close every connection at once, without waiting."""
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._starting is not None:
            self._starting.cancel()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()

    async def __aenter__(self) -> ResilientPool:
        """Nothing connects here: the pool starts on first use."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- connection slots ------------------------------------------------------

    async def _wait_for_slot(self) -> None:
        """Wait for one of the ``max_size`` connections to be free."""
        if self._rejecting():
            raise self._open_error()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        timer = None
        if self._acquire_timeout is not None:
            timer = loop.call_later(self._acquire_timeout, self._expire, waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release_slot()  # handed a slot just as we were cancelled
            raise
        finally:
            if timer is not None:
                timer.cancel()
        # The slot may come from a call that just failed and opened the circuit.
        if self._rejecting():
            self._release_slot()
            raise self._open_error()

    def _rejecting(self) -> bool:
        return self._breaker.state in _REJECTING

    def _expire(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            assert self._acquire_timeout is not None
            waiter.set_exception(
                PoolExhaustedError(self._name, self._acquire_timeout, self._max_size)
            )

    def _release_slot(self) -> None:
        waiters = self._waiters
        if not waiters:
            self._free += 1
            return
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the waiter
                return
        self._free += 1

    def _on_transition(self, old: CircuitState, new: CircuitState, reason: str) -> None:
        if new not in _REJECTING or not self._waiters:
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._reject_waiters()
        else:
            loop.call_soon_threadsafe(self._reject_waiters)

    def _reject_waiters(self) -> None:
        """The circuit opened: callers still waiting for a connection fail now."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_exception(self._open_error())

    def _open_error(self) -> CircuitOpenError:
        error = self._breaker.rejection()
        if error is None:  # it moved on since it opened: report the opening anyway
            error = CircuitOpenError(self._breaker.name, CircuitState.OPEN, 0.0)
        return error

    # -- guarded work ----------------------------------------------------------

    async def _slot(self) -> asyncpg.Pool:
        """Start the pool if needed and take a connection slot (waiting for one)."""
        pool = self._pool
        if pool is None:
            pool = await self._start()
        if self._free > 0 and not self._waiters:
            self._free -= 1
        else:
            await self._wait_for_slot()
        return pool

    async def _run(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``con.<method>(*args, **kwargs)`` on a pooled connection (the guarded call)."""
        pool = self._pool
        if pool is not None and self._free > 0 and not self._waiters:
            self._free -= 1  # the common case: started, a connection free
        else:
            pool = await self._slot()
        try:
            con = await pool.acquire()
        except BaseException:
            self._release_slot()
            raise
        try:
            result = await getattr(con, method)(*args, **kwargs)
        except (TimeoutError, asyncio.CancelledError):
            self._release_soon(pool, con)
            raise
        except BaseException:
            await self._release(pool, con)
            raise
        try:
            await pool.release(con)
        finally:
            if self._waiters:
                self._release_slot()
            else:
                self._free += 1
        return result

    async def _release(self, pool: asyncpg.Pool, con: Any) -> None:
        try:
            await pool.release(con)
        finally:
            self._release_slot()

    def _release_soon(self, pool: asyncpg.Pool, con: Any) -> None:
        """Release in the background. After a timeout or a cancellation asyncpg
        cancels the query on the server over a new connection first; the caller
        need not wait for that (a server that stopped answering would make it
        wait ``connect_timeout`` more). The slot is held until it is done."""
        task = asyncio.ensure_future(self._release(pool, con))
        self._releasing.add(task)
        task.add_done_callback(self._released)

    def _released(self, task: asyncio.Task[None]) -> None:
        self._releasing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.debug("pool %r: a background release failed", self._name)

    async def fetch(
        self,
        query: str,
        *args: Any,
        timeout: float | None = None,
        record_class: Any = None,
    ) -> list[asyncpg.Record]:
        """Run ``query`` and return every row (``asyncpg.Record`` objects).

        Raises:
            CircuitOpenError: the circuit is open; nothing was sent.
            PoolExhaustedError: no connection became free in time.
        """
        return await self._breaker.call(
            self._run, "fetch", (query, *args), {"timeout": timeout, "record_class": record_class}
        )

    async def fetchrow(
        self,
        query: str,
        *args: Any,
        timeout: float | None = None,
        record_class: Any = None,
    ) -> asyncpg.Record | None:
        """Run ``query`` and return its first row, or ``None``."""
        return await self._breaker.call(
            self._run,
            "fetchrow",
            (query, *args),
            {"timeout": timeout, "record_class": record_class},
        )

    async def fetchval(
        self,
        query: str,
        *args: Any,
        column: int | str = 0,
        timeout: float | None = None,
    ) -> Any:
        """Run ``query`` and return one value of its first row (``None`` if no row)."""
        return await self._breaker.call(
            self._run, "fetchval", (query, *args), {"column": column, "timeout": timeout}
        )

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        """Run a command (or several, without arguments); returns the status
        of the last one, e.g. ``"INSERT 0 1"``."""
        return await self._breaker.call(self._run, "execute", (query, *args), {"timeout": timeout})

    async def executemany(
        self,
        command: str,
        args: Iterable[Sequence[Any]],
        *,
        timeout: float | None = None,
    ) -> None:
        """Run ``command`` once per argument sequence, in one transaction."""
        return await self._breaker.call(
            self._run, "executemany", (command, args), {"timeout": timeout}
        )

    def acquire(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """A guarded connection: ``async with pool.acquire() as con: ...``.

        Getting the connection and the whole block are one breaker call:
        database errors raised in the block (asyncpg errors, ``OSError``,
        ``TimeoutError``) are judged by the breaker; any other exception of
        the block counts as a success (the database did its part) and
        propagates unchanged. Keep the block to database work.
        """
        return _AcquireContext(self)

    async def execute_query(self, request: Mapping[str, Any]) -> Any:
        """The seed's query call: ``{"query": ..., "parameters": [...],
        "fetch_mode": ..., "timeout": ...}``.

        ``fetch_mode`` ``"all"`` (default) returns a list of dicts, ``"one"``
        a dict or ``None``, ``"val"`` the first column of the first row,
        ``"none"`` the command's status string. ``parameters`` defaults to none.

        Raises:
            ValueError: a malformed request (no query, unknown key or mode).
        """
        if not isinstance(request, Mapping):
            raise TypeError(f"execute_query needs a mapping, got {type(request).__name__}")
        unknown = sorted(set(request) - _QUERY_KEYS)
        if unknown:
            raise ValueError(
                f"execute_query: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"expected {', '.join(sorted(_QUERY_KEYS))}"
            )
        query = request.get("query")
        if not isinstance(query, str) or not query:
            raise ValueError("execute_query: 'query' must be a non-empty SQL string")
        parameters = request.get("parameters") or ()
        if isinstance(parameters, str | bytes) or not isinstance(parameters, Sequence):
            raise ValueError("execute_query: 'parameters' must be a list or tuple")
        mode = request.get("fetch_mode", "all")
        if mode not in _FETCH_MODES:
            raise ValueError(
                f"execute_query: fetch_mode must be one of {', '.join(_FETCH_MODES)}, got {mode!r}"
            )
        timeout = request.get("timeout")
        if mode == "all":
            rows = await self.fetch(query, *parameters, timeout=timeout)
            return [dict(row) for row in rows]
        if mode == "one":
            row = await self.fetchrow(query, *parameters, timeout=timeout)
            return dict(row) if row is not None else None
        if mode == "val":
            return await self.fetchval(query, *parameters, timeout=timeout)
        return await self.execute(query, *parameters, timeout=timeout)


WorkflowConnectionPool = ResilientPool
"""Alias of :class:`ResilientPool`, the name the Kailash guide uses."""


class _AcquireContext(contextlib.AbstractAsyncContextManager[Any]):
    """``async with pool.acquire() as con``: one breaker permit for getting
    the connection and running the block."""

    __slots__ = ("_con", "_owner", "_permit", "_pool")

    def __init__(self, owner: ResilientPool) -> None:
        self._owner = owner
        self._permit: Any = None
        self._pool: Any = None
        self._con: Any = None

    async def __aenter__(self) -> Any:
        if self._permit is not None:
            raise RuntimeError("this acquire() context is already in use")
        owner = self._owner
        permit = owner._breaker.acquire()
        try:
            pool = await owner._slot()
            try:
                self._con = await pool.acquire()
            except BaseException:
                owner._release_slot()
                raise
        except BaseException as exc:
            permit.failure(exc)  # judged: CancelledError and rejections are ignored
            raise
        self._pool = pool
        self._permit = permit
        return self._con

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        permit, self._permit = self._permit, None
        pool, con = self._pool, self._con
        self._pool = self._con = None
        judged = exc
        try:
            if isinstance(exc, TimeoutError | asyncio.CancelledError):
                self._owner._release_soon(pool, con)
            else:
                await self._owner._release(pool, con)
        except BaseException as release_error:
            if exc is None:
                judged = release_error
                raise
            # Otherwise the block's error is the one the caller sees; a failed
            # release only confirms the connection is gone.
        finally:
            if judged is None or (
                isinstance(judged, Exception) and not isinstance(judged, _DATABASE_ERRORS)
            ):
                permit.success()
            else:
                permit.failure(judged)
