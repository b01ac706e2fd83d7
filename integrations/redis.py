"""Breaker state shared across processes and hosts through Redis.

``RedisStore`` is a :class:`resilience.StateStore`. Every process counts its
own calls; *transitions* are shared:

- a trip in one process opens the breaker everywhere (pub/sub, and a
  reconciliation read every ``refresh_interval``, jittered, and on reconnect);
- when the open period ends, one process of the fleet claims a probe lease
  and probes; the others stay OPEN until they hear the result;
- nothing a caller does waits for Redis or sends it anything: the store owns
  a background thread (it works the same for asyncio apps and for threaded
  or WSGI code), and breakers publish to it by putting a message on a
  bounded queue.

One hash per breaker, ``{prefix}:{<name>}`` (the braces make it one Redis
Cluster slot), changed only by atomic Lua compare-and-set scripts on its
``epoch``. Times come from Redis ``TIME`` inside the scripts, and deadlines
travel as *remaining* milliseconds, applied to each process's monotonic
clock: no wall clock crosses processes, so clock skew does not matter. Keys
expire. A message or row applies only if its epoch is newer than the one the
process knows; a process that loses a race adopts the winner's row.

Redis down, slow, black-holed or emptied: breakers keep working on local
state (local trips still happen, each process probes for itself), the store
logs once, and when Redis answers again it re-reads every row and
re-proposes the open states it knows. A missing key never closes anything.
The store's own calls go through a breaker of its own with short timeouts
and no retries.
"""

from __future__ import annotations

import collections
import json
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from resilience import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    RemoteState,
    SharedBreaker,
    Transition,
)
from resilience._redact import redact_url

__all__ = ("RedisStore",)

logger = logging.getLogger("resilience.redis")

_OPEN: Final = CircuitState.OPEN
_CLOSED: Final = CircuitState.CLOSED
_HALF_OPEN: Final = CircuitState.HALF_OPEN

# KEYS[1]: the row. ARGV: expected epoch, state, remaining ms, reason, key TTL
# ms, lease token ("" for none), channel, breaker name.
_PROPOSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local row = redis.call('HMGET', KEYS[1], 'epoch', 'state', 'until', 'lease', 'lease_until')
local epoch = tonumber(row[1]) or 0
local function current()
  return {0, epoch, row[2] or '', (tonumber(row[3]) or now) - now,
          (tonumber(row[5]) or now) - now, row[4] or ''}
end
if epoch ~= tonumber(ARGV[1]) then return current() end
if ARGV[2] == 'closed' and row[2] == 'open' and row[4] ~= ARGV[6] then
  return current()
end
epoch = epoch + 1
local remaining = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'epoch', epoch, 'state', ARGV[2], 'until', now + remaining,
           'reason', ARGV[4])
redis.call('HDEL', KEYS[1], 'lease', 'lease_until')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]) + remaining)
redis.call('PUBLISH', ARGV[7], cjson.encode({name = ARGV[8], epoch = epoch, state = ARGV[2],
           remaining = remaining, reason = ARGV[4]}))
return {1, epoch, ARGV[2], remaining, 0, ''}
"""

# KEYS[1]: the row. ARGV: epoch, token, lease ms, channel, breaker name.
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local row = redis.call('HMGET', KEYS[1], 'epoch', 'state', 'until', 'lease', 'lease_until')
local epoch = tonumber(row[1]) or 0
local untilms = tonumber(row[3]) or now
local lease_until = tonumber(row[5]) or 0
local function current()
  return {0, epoch, row[2] or '', untilms - now, lease_until - now, row[4] or ''}
end
if epoch ~= tonumber(ARGV[1]) or row[2] ~= 'open' or now < untilms then return current() end
if row[4] and row[4] ~= ARGV[2] and lease_until > now then return current() end
local lease = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'lease', ARGV[2], 'lease_until', now + lease)
redis.call('PUBLISH', ARGV[4], cjson.encode({name = ARGV[5], epoch = epoch, state = 'half_open',
           remaining = lease, reason = 'another process probes', token = ARGV[2]}))
return {1, epoch, 'open', untilms - now, lease, ARGV[2]}
"""


@dataclass(slots=True)
class _Row:
    """What this process knows of a breaker's shared row."""

    epoch: int = 0
    state: str = ""  # "open", "closed", "" (no row)
    lease_token: str = ""  # ours, while we hold the probe lease
    lease_until: float = 0.0  # local monotonic deadline of our lease
    lease_epoch: int = -1  # the round our lease is for (a lease of another round is void)
    claiming: str = ""  # the token of our claim in flight (its message is ours)


class RedisStore:
    """A :class:`resilience.StateStore` that shares breaker state through Redis.

    Args:
        url_or_client: a ``redis://`` URL, or a ``redis.Redis`` client (its
            own timeouts and retries then apply to the store's commands; the
            subscription gets a connection of its own with ``timeout``; a URL
            gets short timeouts and no retries throughout).
        prefix: namespace of the keys and of the pub/sub channel. Default
            ``"resilience"``.
        refresh_interval: seconds, > 0, between reconciliation reads (each
            jittered by up to 20%), the safety net when a pub/sub message is
            lost. Default 1.0.
        probe_lease: seconds, > 0, a process may probe after claiming the
            fleet's half-open lease; a prober that dies is replaced when it
            runs out. Default 10.0.
        timeout: seconds, > 0, for each Redis command of the store. Default 0.25.
        key_ttl: seconds, > 0, a row outlives its open period. Default 86,400.
        clock: the monotonic clock of the store's own deadlines (its leases);
            default the system clock. Use the breakers' clock.

    Use it with ``Registry(store=RedisStore(url))``, or
    ``resilience.registry.use_store(RedisStore(url))`` at startup for
    breakers that ``@circuit`` created at import time. ``close()`` stops the
    store's threads.

    Raises:
        ValueError: a bad setting, or a URL that is not ``redis://``/``rediss://``.
    """

    def __init__(
        self,
        url_or_client: str | redis.Redis,
        *,
        prefix: str = "resilience",
        refresh_interval: float = 1.0,
        probe_lease: float = 10.0,
        timeout: float = 0.25,
        key_ttl: float = 86_400.0,
        clock: Any = None,
    ) -> None:
        for label, value in (
            ("refresh_interval", refresh_interval),
            ("probe_lease", probe_lease),
            ("timeout", timeout),
            ("key_ttl", key_ttl),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{label} must be a number of seconds > 0, got {value!r}")
        if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"prefix must be a non-empty string without braces, got {prefix!r}")
        if isinstance(url_or_client, str):
            if not url_or_client.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError(f"expected a redis:// URL, got {redact_url(url_or_client)!r}")
            self.url = redact_url(url_or_client)
            self._owns_client = True
            self._client = redis.Redis.from_url(
                url_or_client,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
                retry_on_timeout=False,
                health_check_interval=0,
            )
            self._sub_client = self._client
        elif isinstance(url_or_client, redis.Redis):
            kwargs = url_or_client.connection_pool.connection_kwargs
            self.url = f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
            self._owns_client = False  # the caller's: closed by the caller
            self._client = url_or_client
            # The subscription gets a connection of its own with the store's
            # timeouts, so that no setting of the caller's can hold the
            # listener (or close()) on a dead socket.
            pool = url_or_client.connection_pool
            self._sub_client = redis.Redis(
                connection_pool=redis.ConnectionPool(
                    connection_class=pool.connection_class,
                    **{
                        **kwargs,
                        "socket_timeout": timeout,
                        "socket_connect_timeout": timeout,
                        "retry": Retry(NoBackoff(), 0),
                        "retry_on_timeout": False,
                        "health_check_interval": 0,
                    },
                )
            )
        else:
            # Only the type: a URL-like object's repr may carry a password.
            raise TypeError(
                f"expected a redis:// URL or a redis.Redis, got {type(url_or_client).__name__}"
            )
        self.prefix = prefix
        self.channel = f"{prefix}:transitions"
        self.refresh_interval = float(refresh_interval)
        self.probe_lease = float(probe_lease)
        self.key_ttl = float(key_ttl)
        self.timeout = float(timeout)
        self._now: Callable[[], float] = clock.monotonic if clock is not None else time.monotonic
        self._propose = self._client.register_script(_PROPOSE)
        self._claim = self._client.register_script(_CLAIM)
        # The store's own breaker on Redis: never registered, never shared.
        self._guard = CircuitBreaker(
            f"redis-store {self.url}",
            failure_threshold=2,
            recovery_timeout=self.refresh_interval,
            error_rate=None,
            success_threshold=1,
        )
        self._lock = threading.Lock()
        # The rows: every read of Redis that feeds them and every change to
        # them happens under this lock, so a reply never lands after a newer
        # one (store -> breaker lock order, never the reverse). Breakers'
        # listeners hear what was applied only once it is released.
        self._rows_lock = threading.RLock()
        self._rows_depth = threading.local()
        self._applied: list[SharedBreaker] = []
        self._attaching: dict[str, list[threading.Event]] = {}
        self._offline_trips: set[str] = set()  # local trips while Redis was away
        self._breakers: dict[str, SharedBreaker] = {}
        self._rows: dict[str, _Row] = {}
        self._inbox: collections.deque[tuple[str, str]] = collections.deque(maxlen=10_000)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._healthy = True
        self._warned = False
        self._resync = False  # read every row at the next turn (after a reconnect)
        self.dropped = 0  # messages dropped because the inbox was full
        self.script_calls = 0
        self.messages_applied = 0
        self.subscriptions = 0  # connections the listener has opened (reconnects + 1)
        self._worker = threading.Thread(target=self._run, name="resilience-redis", daemon=True)
        self._listener = threading.Thread(target=self._listen, name="resilience-redis-sub",
                                          daemon=True)  # fmt: skip
        self._worker.start()
        self._listener.start()

    def __repr__(self) -> str:
        return f"<RedisStore {self.url} prefix={self.prefix!r}>"

    # -- the StateStore protocol (called by breakers; never blocks) ----------

    @property
    def healthy(self) -> bool:
        """Whether Redis answers: breakers share their state (else they run locally)."""
        return self._healthy

    def attach(self, breaker: SharedBreaker) -> None:
        """Share ``breaker``; its row is read at once, so a process that starts
        during a known outage rejects from its first call. The read runs on
        the store's thread and the caller (maybe an event loop, creating a
        breaker on first use) waits for it at most ``timeout``, whatever the
        client's own timeouts and retries; a later answer still applies."""
        name = breaker.name
        with self._lock:
            self._breakers[name] = breaker
            self._rows.setdefault(name, _Row())
        if not self._healthy:
            return
        if threading.current_thread() in (self._worker, self._listener):
            # A listener on the store's thread: read here (the thread may wait).
            try:
                self._reconcile([name])
            except CircuitOpenError:
                pass
            except Exception:
                self._trouble()
            return
        read = threading.Event()
        with self._lock:
            self._attaching.setdefault(name, []).append(read)
        self._post("attach", name)
        read.wait(self.timeout)

    def publish(self, breaker: SharedBreaker, transition: Transition) -> None:
        """Queue a local transition for the fleet (the automatic ones only:
        the manual states and manual resets are this process's own)."""
        new, old = transition.new, transition.old
        if new is _OPEN and old in (_CLOSED, _HALF_OPEN):
            if not self._healthy:
                self._offline_trips.add(breaker.name)  # proposed again on recovery
            self._post("open", breaker.name)
        elif new is _CLOSED and old is _HALF_OPEN:
            self._post("closed", breaker.name)

    def may_probe(self, breaker: SharedBreaker) -> bool:
        """Whether this process probes now that the open period ended: yes
        without Redis, or when the fleet's row is not known to be open; with
        it, only while this process holds the lease (asked for here, in the
        background)."""
        if not self._healthy:
            return True
        row = self._rows.get(breaker.name)
        if row is None or row.state != "open":
            return True
        if row.lease_token and row.lease_epoch == row.epoch and self._now() < row.lease_until:
            return True
        self._post("claim", breaker.name)
        return False

    # -- status --------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The store's own health (no secrets): URL (redacted), whether Redis
        answers, breakers shared, messages applied and dropped."""
        return {
            "url": self.url,
            "prefix": self.prefix,
            "healthy": self._healthy,
            "breakers": len(self._breakers),
            "messages_applied": self.messages_applied,
            "dropped": self.dropped,
            "script_calls": self.script_calls,
            "subscriptions": self.subscriptions,
        }

    def close(self) -> None:
        """Stop the store's threads (breakers keep working locally) and close
        the client it made from a URL; a client passed in is the caller's to
        close."""
        self._stop.set()
        self._wake.set()
        self._worker.join(timeout=2.0)
        self._listener.join(timeout=2.0)
        self._healthy = False
        for thread in (self._worker, self._listener):
            if thread.is_alive():
                # A client of the caller's with no socket timeout can hold a
                # thread in a blocking call; it is a daemon and ends with it.
                logger.warning(
                    "RedisStore %s: thread %s still waiting on Redis after close()",
                    self.url,
                    thread.name,
                )
        if self._owns_client:
            self._client.close()
        else:
            self._sub_client.connection_pool.disconnect()  # its own, from the caller's settings

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the worker thread ----------------------------------------------------

    def _key(self, name: str) -> str:
        return f"{self.prefix}:{{{name}}}"

    def _post(self, kind: str, name: str) -> None:
        inbox = self._inbox
        if len(inbox) == inbox.maxlen:
            self.dropped += 1
        inbox.append((kind, name))
        self._wake.set()

    def _run(self) -> None:
        next_refresh = self._now() + self._jittered()
        while not self._stop.is_set():
            self._wake.wait(timeout=max(0.0, next_refresh - self._now()))
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                while self._inbox:
                    kind, name = self._inbox.popleft()
                    try:
                        self._handle(kind, name)
                    except CircuitOpenError:
                        self._inbox.appendleft((kind, name))  # Redis down: kept for later
                        raise
                if self._resync or self._now() >= next_refresh:
                    self._resync = False
                    next_refresh = self._now() + self._jittered()
                    was_healthy = self._healthy
                    self._reconcile(list(self._breakers))
                    if not was_healthy:
                        self._recovered()
            except CircuitOpenError:
                # Redis is known to be down: local state meanwhile; the kept
                # messages wait for the next turn, not a busy loop.
                next_refresh = max(next_refresh, self._now() + self._jittered())
            except Exception:
                self._trouble()

    def _jittered(self) -> float:
        return self.refresh_interval * (0.8 + 0.4 * random.random())

    def _redis(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One Redis operation through the store's own breaker."""
        return self._guard.call_sync(fn, *args, **kwargs)

    def _locked(self) -> _RowsLock:
        return _RowsLock(self)

    def _handle(self, kind: str, name: str) -> None:
        breaker = self._breakers.get(name)
        if breaker is None:
            return
        if kind == "claim":
            self._try_claim(name)
            return
        if kind == "attach":
            try:
                self._reconcile([name])
            finally:
                with self._lock:
                    waiting = self._attaching.pop(name, [])
                for read in waiting:
                    read.set()
            return
        with self._locked():
            state, remaining = breaker.shared_state()
            row = self._rows[name]
            if kind == "open" and (
                state is not _OPEN or (row.state == "open" and not row.lease_token)
            ):
                # It moved on before the message left, or the fleet already
                # knows this opening (a prober's re-opening has the lease).
                return
            token = row.lease_token if kind == "closed" else ""
            self._send(name, kind, remaining, token)

    def _send(self, name: str, state: str, remaining: float, token: str) -> None:
        """Propose ``state`` at the epoch this process knows (under the row
        lock). An opening that loses to a row that is not open (a close this
        process had not heard of, or a row Redis lost and restarted at a lower
        epoch) is proposed once more at the row's epoch: a trip made here is
        never closed by older news."""
        row = self._rows[name]
        for attempt in range(2):
            result = self._redis(
                self._propose,
                keys=[self._key(name)],
                args=[row.epoch, state, int(remaining * 1000), f"{state} elsewhere",
                      int(self.key_ttl * 1000), token, self.channel, name],
            )  # fmt: skip
            self.script_calls += 1
            won, epoch, rstate, remaining_ms, lease_ms, lease = _decode(result)
            row.lease_token = ""
            row.lease_until = 0.0
            if won:
                row.epoch, row.state = epoch, rstate
                return
            if state == "open" and rstate != "open" and attempt == 0:
                row.epoch, row.state = epoch, rstate
                continue
            break
        # Lost the race: adopt the winner's row (a newer epoch), or, for a
        # row Redis restarted lower, take it as it is.
        if epoch < row.epoch:
            row.epoch = epoch
        self._adopt_locked(name, epoch, rstate, remaining_ms, lease_ms, lease)

    def _try_claim(self, name: str) -> None:
        with self._locked():
            row = self._rows[name]
            if row.state != "open" or (
                row.lease_token and row.lease_epoch == row.epoch and self._now() < row.lease_until
            ):
                return
            token = secrets.token_hex(8)
            row.claiming = token
            asked = self._now()  # the lease runs from before the request, never past Redis's
            result = self._redis(
                self._claim,
                keys=[self._key(name)],
                args=[row.epoch, token, int(self.probe_lease * 1000), self.channel, name],
            )
            self.script_calls += 1
            won, epoch, rstate, remaining_ms, lease_ms, lease = _decode(result)
            if won:
                row.lease_token = token
                row.lease_epoch = epoch
                row.lease_until = asked + lease_ms / 1000.0
                return
            self._adopt_locked(name, epoch, rstate, remaining_ms, lease_ms, lease)

    def _reconcile(self, names: list[str]) -> None:
        """Read the rows of ``names`` (one round trip, Redis TIME with them)
        and adopt them, under the row lock: no message applied meanwhile can
        be undone by this older read. A row with a lower epoch than the one
        known is then Redis having lost data: an open one is adopted as it
        is, a missing or closed one never closes anything (the open states
        this process holds are proposed again)."""
        if not names:
            return

        def read() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            pipe.time()
            for name in names:
                pipe.hgetall(self._key(name))
            return pipe.execute()

        with self._locked():
            replies = self._redis(read)
            seconds, micros = replies[0]
            now_ms = int(seconds) * 1000 + int(micros) // 1000
            for name, raw in zip(names, replies[1:], strict=True):
                row = self._rows.get(name)
                breaker = self._breakers.get(name)
                if row is None or breaker is None:
                    continue
                fields = {k.decode(): v.decode() for k, v in raw.items()}
                epoch = int(fields.get("epoch", 0))
                rstate = fields.get("state", "") if fields else ""
                if epoch < row.epoch and fields and rstate == "open":
                    row.epoch = epoch  # Redis restarted lower: this is the fleet's row now
                    row.state = ""
                if not fields or epoch < row.epoch or (epoch == 0 and row.epoch == 0):
                    # Missing (emptied, expired) or lost: never closes
                    # anything; re-propose an open state we hold.
                    state, _ = breaker.shared_state()
                    row.epoch, row.state = epoch, rstate
                    if state is _OPEN:
                        row.state = ""  # what the fleet knows is gone: say it again
                        self._handle("open", name)
                    continue
                if epoch > row.epoch or (epoch == row.epoch and rstate != row.state):
                    until = int(fields.get("until", now_ms))
                    lease_until = int(fields.get("lease_until", 0))
                    self._adopt_locked(name, epoch, rstate, until - now_ms,
                                       lease_until - now_ms, fields.get("lease", ""))  # fmt: skip

    def _adopt(
        self, name: str, epoch: int, state: str, remaining_ms: int, lease_ms: int, lease: str
    ) -> None:
        """Take the fleet's row as this process's state, if newer."""
        with self._locked():
            self._adopt_locked(name, epoch, state, remaining_ms, lease_ms, lease)

    def _adopt_locked(
        self, name: str, epoch: int, state: str, remaining_ms: int, lease_ms: int, lease: str
    ) -> None:
        row = self._rows.get(name)
        breaker = self._breakers.get(name)
        if row is None or breaker is None or epoch < row.epoch:
            return
        same_round = epoch == row.epoch
        if not same_round:
            # A new round: any lease held was for an older one.
            row.lease_token, row.lease_until, row.lease_epoch = "", 0.0, -1
        row.epoch, row.state = epoch, state
        if state == "open":
            if lease and lease in (row.lease_token, row.claiming) and lease_ms > 0:
                # Ours (a claim whose reply was lost): we probe.
                row.lease_token, row.lease_epoch = lease, epoch
                row.lease_until = self._now() + lease_ms / 1000.0
                return
            if lease and lease_ms > 0:
                remote = RemoteState(_HALF_OPEN, lease_ms / 1000.0, "another process probes", epoch)
            elif same_round and remaining_ms <= 0:
                return  # nothing new: the period we know has ended
            else:
                remote = RemoteState(_OPEN, max(0, remaining_ms) / 1000.0, "open elsewhere", epoch)
        elif state == "closed":
            remote = RemoteState(_CLOSED, 0.0, "closed elsewhere", epoch)
        else:
            return
        breaker.apply_remote(remote, deliver=False)
        self._applied.append(breaker)
        self.messages_applied += 1

    # -- pub/sub ------------------------------------------------------------------

    def _listen(self) -> None:
        backoff = self.refresh_interval
        while not self._stop.is_set():
            pubsub = self._sub_client.pubsub(ignore_subscribe_messages=True)
            self.subscriptions += 1
            try:
                pubsub.subscribe(self.channel)
                # Reconnected: anything missed meanwhile is read back now.
                self._post_reconcile()
                self._hear(pubsub)
            except Exception:
                if self._stop.wait(backoff):
                    return
            finally:
                try:
                    pubsub.close()
                except Exception:
                    pass

    def _hear(self, pubsub: Any) -> None:
        """Apply the subscription's messages until the store stops. A
        connection quiet for a ``refresh_interval`` is pinged; one that does
        not answer within two more (black-holed, dropped by a NAT) raises, and
        the listener subscribes again. Real time: this is about sockets."""
        heard = time.monotonic()
        pinged = 0.0
        while not self._stop.is_set():
            message = pubsub.get_message(timeout=0.2)
            now = time.monotonic()
            if message is not None:
                heard, pinged = now, 0.0
                if message.get("type") == "message":
                    self._on_message(message["data"])
                continue
            if not pinged and now - heard >= self.refresh_interval:
                pubsub.ping()
                pinged = now
            elif pinged and now - pinged >= 2 * self.refresh_interval:
                raise ConnectionError("the pub/sub connection stopped answering")

    def _post_reconcile(self) -> None:
        self._resync = True
        self._wake.set()

    def _on_message(self, data: bytes) -> None:
        try:
            msg = json.loads(data)
            name, epoch, state = str(msg["name"]), int(msg["epoch"]), str(msg["state"])
            remaining = int(msg["remaining"])
            token = str(msg.get("token", ""))
        except (ValueError, KeyError, TypeError):
            logger.warning("RedisStore %s: an unreadable message on %s", self.url, self.channel)
            return
        with self._locked():
            row = self._rows.get(name)
            if row is None:
                return
            if state == "half_open":
                if epoch == row.epoch and token not in (row.lease_token, row.claiming):
                    self._adopt_locked(name, epoch, "open", 0, remaining, token or "another")
                return
            if epoch > row.epoch:
                self._adopt_locked(name, epoch, state, remaining, 0, "")

    # -- health -------------------------------------------------------------------

    def _trouble(self) -> None:
        if self._healthy:
            self._healthy = False
            if not self._warned:
                self._warned = True
                logger.warning(
                    "RedisStore %s: Redis is not answering; breakers run on local state "
                    "until it does",
                    self.url,
                )

    def _recovered(self) -> None:
        if self._stop.is_set():
            return  # closed meanwhile: stays unhealthy (every process probes for itself)
        self._healthy = True
        self._warned = False
        logger.info("RedisStore %s: Redis answers again; breaker state is shared", self.url)
        # Re-propose the open states this process knows. A trip made while
        # Redis was away is news to the fleet (its row state is cleared so it
        # is sent even if the fleet's row is open); an opening only adopted
        # is not (re-proposing it would void another process's probe lease).
        with self._locked():
            offline, self._offline_trips = self._offline_trips, set()
            for name, breaker in list(self._breakers.items()):
                state, _ = breaker.shared_state()
                if state is _OPEN:
                    if name in offline:
                        self._rows[name].state = ""
                    self._post("open", name)


class _RowsLock:
    """The store's row lock (re-entrant); leaving it for the last time in a
    thread delivers the transitions applied under it to the breakers'
    listeners, outside any lock of the store, so a listener may call into
    the store or the registry and a slow one holds up nothing."""

    __slots__ = ("_store",)

    def __init__(self, store: RedisStore) -> None:
        self._store = store

    def __enter__(self) -> None:
        store = self._store
        store._rows_lock.acquire()
        depth = store._rows_depth
        depth.n = getattr(depth, "n", 0) + 1

    def __exit__(self, *exc: object) -> None:
        store = self._store
        depth = store._rows_depth
        depth.n -= 1
        applied: list[SharedBreaker] = []
        if depth.n == 0 and store._applied:
            applied, store._applied = store._applied, []
        store._rows_lock.release()
        for breaker in dict.fromkeys(applied):
            try:
                breaker.deliver()
            except Exception:
                logger.exception("RedisStore %s: delivering a fleet transition failed", store.url)


def _decode(result: list[Any]) -> tuple[bool, int, str, int, int, str]:
    won, epoch, state, remaining, lease_ms, lease = result
    text = state.decode() if isinstance(state, bytes) else str(state)
    token = lease.decode() if isinstance(lease, bytes) else str(lease)
    return bool(won), int(epoch), text, int(remaining), int(lease_ms), token
