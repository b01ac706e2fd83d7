"""Write-behind: a good call hands its value to a writer and returns; the
writer stores it in the cache later, off the call's path.

One writer per cache (and per kind: a task on the event loop for async
functions, a daemon thread for sync ones), so writes of one key from any
function coalesce. Per key only the newest value is written: a value
submitted while an older one is pending replaces it (``coalesced``). A write
is skipped when the value has the same pickled bytes as the one last written
for that key less than the refresh interval ago (``skipped``): a changed
value is always written. The queue is bounded: when it is full the oldest
pending write is dropped (``dropped``). Writes that are pending or being
written are consulted before the cache (:meth:`Writer.entry`), so a failure
right after a success serves that success's value.

Flushing: ``await flush(...)`` waits for every pending write; at the end of
``asyncio.run`` (which cancels leftover tasks and waits for them) the task
writes what is left, for at most :data:`SHUTDOWN_BOUND` seconds; at
interpreter exit the threads are given as long.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import inspect
import logging
import pickle
import threading
import time
import weakref
from typing import Any, Final, Protocol

from ._decide import Entry
from ._metrics import FallbackMetrics

__all__ = (
    "SHUTDOWN_BOUND",
    "AsyncWriter",
    "Owner",
    "ThreadWriter",
    "Writer",
    "flush_all",
    "writer_for",
)

logger = logging.getLogger("resilience")

MAX_PENDING: Final = 10_000  # pending writes per cache before the oldest is dropped
CHUNK: Final = 8  # writes sent concurrently by the async writer (and connections it may open)
MULTI_CHUNK: Final = 16  # values per multi_set, for caches that have one (one round trip)
WRITE_BOUND: Final = 5.0  # seconds a chunk of writes may take before it is given up
SHUTDOWN_BOUND: Final = 2.0  # seconds left to pending writes at loop or interpreter exit
IDLE_EXIT: Final = 5.0  # seconds an idle writer thread waits before it ends
_LAST_SIZE: Final = 8192  # keys whose last written value is remembered


class Owner(Protocol):
    """What a writer needs of the decorated function a value came from."""

    refresh: float
    metrics: FallbackMetrics

    async def store_async(self, key: str, entry: Entry) -> bool:
        """Write ``entry`` under ``key``; ``True`` once written. Never raises."""
        ...

    def store_sync(self, key: str, entry: Entry) -> bool:
        """The same, for a sync cache."""
        ...

    async def store_many_async(self, pairs: list[tuple[str, Entry]]) -> bool | None:
        """Write several entries in one ``multi_set``: ``True`` once written,
        ``False`` on a cache error, ``None`` when a value cannot be stored
        (then they are written one by one). Never raises."""
        ...


Item = tuple[Owner, Any, float]  # (owner, value, stored_at)
Todo = tuple[str, Item, bytes | None]  # (key, item, fingerprint)


def fingerprint(value: Any) -> bytes | None:
    """A digest of ``value``'s pickled bytes, or ``None`` if it cannot be pickled."""
    try:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return None
    return hashlib.blake2b(data, digest_size=16).digest()


class Writer:
    """Pending writes of one cache; the drivers only call :meth:`submit`."""

    def __init__(self, cache: Any, max_pending: int = MAX_PENDING) -> None:
        self.cache = cache
        self.max_pending = max_pending
        self.pending: dict[str, Item] = {}
        self.inflight: dict[str, Item] = {}
        self._last: dict[str, tuple[bytes, float]] = {}

    def entry(self, key: str) -> Entry | None:
        """The newest value not yet in the cache for ``key``, as an entry."""
        item = self.pending.get(key) or self.inflight.get(key)
        return None if item is None else (item[1], item[2])

    def __len__(self) -> int:
        return len(self.pending) + len(self.inflight)

    def submit(self, owner: Owner, key: str, value: Any, stored_at: float) -> None:
        """Schedule the write of ``value`` for ``key``; never waits on the cache."""
        raise NotImplementedError

    async def flush(self) -> None:
        """Wait until nothing is pending."""
        raise NotImplementedError

    def _queue(self, owner: Owner, key: str, value: Any, stored_at: float) -> None:
        pending = self.pending
        if key in pending:
            # Re-inserted, so the dict stays ordered oldest first.
            del pending[key]
            owner.metrics.coalesced += 1
        elif len(pending) >= self.max_pending:
            oldest = next(iter(pending))
            dropped = pending.pop(oldest)
            dropped[0].metrics.dropped += 1
            logger.debug("fallback: write-behind queue full, dropped the write of %r", oldest)
        pending[key] = (owner, value, stored_at)

    def _skip(self, key: str, item: Item) -> tuple[bool, bytes | None]:
        """Whether to leave this write out, and the value's fingerprint."""
        owner, value, stored_at = item
        if owner.refresh <= 0:
            return False, None
        fp = fingerprint(value)
        last = self._last.get(key)
        if (
            fp is not None
            and last is not None
            and last[0] == fp
            and 0 <= stored_at - last[1] < owner.refresh
        ):
            owner.metrics.skipped += 1
            return True, fp
        return False, fp

    def _written(self, key: str, fp: bytes | None, stored_at: float) -> None:
        last = self._last
        last.pop(key, None)
        if fp is None:
            return
        if len(last) >= _LAST_SIZE:
            del last[next(iter(last))]
        last[key] = (fp, stored_at)


class AsyncWriter(Writer):
    """Writes on the event loop, from a task started when there is work and
    ending when there is none (so no task outlives its loop unawaited)."""

    def __init__(self, cache: Any, max_pending: int = MAX_PENDING) -> None:
        super().__init__(cache, max_pending)
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # aiocache caches pipeline several writes into one round trip.
        self._multi = inspect.iscoroutinefunction(getattr(cache, "multi_set", None))

    def submit(self, owner: Owner, key: str, value: Any, stored_at: float) -> None:
        """Schedule the write of ``value``; called on the loop, never blocks."""
        self._queue(owner, key, value, stored_at)
        if self._task is None or self._loop is not asyncio.get_running_loop():
            self._start()

    def _start(self) -> asyncio.Task[None]:
        loop = self._loop = asyncio.get_running_loop()
        task = self._task = loop.create_task(self._drain(), name="resilience-fallback-writer")
        return task

    async def _drain(self) -> None:
        try:
            while self.pending:
                await self._write_batch()
        except asyncio.CancelledError:
            # asyncio.run (and pytest's runner) cancel leftover tasks at the
            # end and wait for them: write what is left, briefly, then stop.
            if self.pending:
                try:
                    async with asyncio.timeout(SHUTDOWN_BOUND):
                        while self.pending:
                            await self._write_batch()
                except TimeoutError:
                    logger.warning(
                        "fallback: %d cache writes still pending at shutdown were dropped",
                        len(self.pending),
                    )
            raise
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def _write_batch(self) -> None:
        batch = self.pending
        self.pending = {}
        self.inflight = batch
        done: set[str] = set()
        try:
            items = list(batch.items())
            size = MULTI_CHUNK if self._multi else CHUNK
            # A chunk at a time, yielding in between: the writer's own work
            # (fingerprints, serialising) never holds the loop for long.
            for start in range(0, len(items), size):
                if start:
                    await asyncio.sleep(0)
                # Per owner (its ttl and breaker), the writes left after skipping.
                groups: dict[int, list[Todo]] = {}
                for key, item in items[start : start + size]:
                    skip, fp = self._skip(key, item)
                    if skip:
                        done.add(key)
                    else:
                        groups.setdefault(id(item[0]), []).append((key, item, fp))
                for chunk in groups.values():
                    try:
                        async with asyncio.timeout(WRITE_BOUND):
                            await self._write_chunk(chunk, done)
                    except TimeoutError:
                        self._gave_up(chunk, done)
        except BaseException:
            # Cancelled mid-batch: what was not written goes back in front
            # of anything newer (which wins: it comes later per key).
            left = {k: item for k, item in batch.items() if k not in done}
            left.update(self.pending)
            self.pending = left
            raise
        finally:
            self.inflight = {}

    async def _write_chunk(self, chunk: list[Todo], done: set[str]) -> None:
        if len(chunk) > 1 and self._multi:
            owner = chunk[0][1][0]
            written = await owner.store_many_async([(k, (it[1], it[2])) for k, it, _ in chunk])
            if written is not None:
                for key, item, fp in chunk:
                    if written:
                        owner.metrics.writes += 1
                        self._written(key, fp, item[2])
                    done.add(key)
                return
        if len(chunk) == 1:
            await self._write_one(*chunk[0], done)
            return
        for start in range(0, len(chunk), CHUNK):
            await asyncio.gather(
                *[self._write_one(k, it, fp, done) for k, it, fp in chunk[start : start + CHUNK]]
            )

    def _gave_up(self, chunk: list[Todo], done: set[str]) -> None:
        for key, item, _ in chunk:
            if key not in done:
                item[0].metrics.cache_errors += 1
        logger.warning(
            "fallback: cache writes took over %.0f s and were given up; "
            "the cache must bound its own operations",
            WRITE_BOUND,
        )

    async def _write_one(self, key: str, item: Item, fp: bytes | None, done: set[str]) -> None:
        owner, value, stored_at = item
        if await owner.store_async(key, (value, stored_at)):
            owner.metrics.writes += 1
            self._written(key, fp, stored_at)
        done.add(key)

    async def flush(self) -> None:
        """Wait until everything submitted so far was handled (written,
        skipped or failed). Cancelling the wait does not cancel the writes."""
        while self.pending or self._task is not None:
            task = self._task
            if task is None or self._loop is not asyncio.get_running_loop():
                task = self._start()
            await asyncio.shield(task)


class ThreadWriter(Writer):
    """Writes a sync cache from a daemon thread, started on demand and
    ending after :data:`IDLE_EXIT` seconds without work."""

    def __init__(self, cache: Any, max_pending: int = MAX_PENDING) -> None:
        super().__init__(cache, max_pending)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    def submit(self, owner: Owner, key: str, value: Any, stored_at: float) -> None:
        """Schedule the write of ``value``; called from any thread, never waits on the cache."""
        with self._lock:
            self._queue(owner, key, value, stored_at)
            self._ensure_thread()
        if not self._wake.is_set():
            self._wake.set()

    def _ensure_thread(self) -> None:
        """Start the writer thread if none runs (the lock is held)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="resilience-fallback-writer", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        try:
            self._loop_forever()
        finally:
            # However it ends, the next submit or flush starts another.
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None
                self.inflight = {}
                self._idle.notify_all()

    def _loop_forever(self) -> None:
        while True:
            if not self._wake.wait(IDLE_EXIT):
                with self._lock:
                    if not self.pending:
                        self._thread = None  # under the lock: a submit now starts another
                        return
            self._wake.clear()
            with self._lock:
                batch = self.pending
                self.pending = {}
                self.inflight = batch
            for key, item in batch.items():
                skip, fp = self._skip(key, item)
                if skip:
                    continue
                owner, value, stored_at = item
                try:
                    stored = owner.store_sync(key, (value, stored_at))
                except Exception:  # pragma: no cover - store_sync catches Exception
                    logger.exception("fallback: a cache write failed unexpectedly")
                    stored = False
                if stored:
                    owner.metrics.writes += 1
                    self._written(key, fp, stored_at)
            with self._lock:
                self.inflight = {}
                if not self.pending:
                    self._idle.notify_all()

    def flush_sync(self, timeout: float | None) -> bool:
        """Block until nothing is pending (at most ``timeout`` seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self.pending or self.inflight:
                self._ensure_thread()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._wake.set()
                self._idle.wait(remaining)
        return True

    async def flush(self) -> None:
        """:meth:`flush_sync` without blocking the event loop (waiting in
        slices of a second, so a cancelled wait leaves no thread for long)."""
        while not await asyncio.to_thread(self.flush_sync, 1.0):
            pass


_WRITERS: weakref.WeakValueDictionary[tuple[int, bool], Writer] = weakref.WeakValueDictionary()
_WRITERS_LOCK = threading.Lock()


def writer_for(cache: Any, *, threaded: bool) -> Writer:
    """The writer of ``cache`` (one per cache and kind, shared by every
    function using it; kept alive by those functions, and it keeps the cache
    alive, so the id is never reused while it lives)."""
    marker = (id(cache), threaded)
    with _WRITERS_LOCK:
        writer = _WRITERS.get(marker)
        if writer is None or writer.cache is not cache:
            writer = ThreadWriter(cache) if threaded else AsyncWriter(cache)
            _WRITERS[marker] = writer
        return writer


async def flush_all(cache: Any = None) -> None:
    """Flush every writer (of ``cache`` only, when given); see ``flush_fallbacks``."""
    with _WRITERS_LOCK:
        writers = [w for w in _WRITERS.values() if cache is None or w.cache is cache]
    for writer in writers:
        await writer.flush()


@atexit.register
def _flush_threads_at_exit() -> None:  # pragma: no cover - runs at interpreter exit
    with _WRITERS_LOCK:
        writers = [w for w in _WRITERS.values() if isinstance(w, ThreadWriter)]
    for writer in writers:
        if not writer.flush_sync(SHUTDOWN_BOUND):
            logger.warning("fallback: cache writes still pending at exit were dropped")
