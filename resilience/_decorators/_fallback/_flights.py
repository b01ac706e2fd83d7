"""Single flight: concurrent identical operations share one result."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Final

__all__ = ("ABANDONED", "ERROR", "Flights", "Probe")

ERROR: Final = object()  # a shared operation raised: (ERROR, exc)
ABANDONED: Final = object()  # the leader of a shared operation was cancelled


class Flights:
    """Single flight: concurrent identical operations on one event loop share
    the first one's result. Keyed by ``(loop, key)`` so a decorated function
    used from several loops (or threads) never mixes their futures."""

    __slots__ = ("_futures",)

    def __init__(self) -> None:
        self._futures: dict[tuple[asyncio.AbstractEventLoop, Hashable], asyncio.Future[Any]] = {}

    def __len__(self) -> int:
        return len(self._futures)

    async def run(self, key: Hashable, work: Callable[[], Awaitable[Any]]) -> Any:
        """``await work()``, or the result of an identical one already running.

        An exception raised by ``work`` is shared as a result
        ``(ERROR, exc)``; a cancelled leader is replaced by one of its
        followers, which runs ``work`` again.
        """
        loop = asyncio.get_running_loop()
        fkey = (loop, key)
        futures = self._futures
        while True:
            fut = futures.get(fkey)
            if fut is None:
                break
            # shield: a cancelled follower must not cancel the shared future.
            result = await asyncio.shield(fut)
            if result is not ABANDONED:
                return result
        fut = loop.create_future()
        futures[fkey] = fut
        try:
            result = await work()
        except Exception as exc:
            result = (ERROR, exc)
        except BaseException:
            fut.set_result(ABANDONED)
            raise
        finally:
            if futures.get(fkey) is fut:
                del futures[fkey]
        fut.set_result(result)
        return result


class Probe:
    """One attempt in flight while the dependency is known down: what the
    cache held when it started (``stale``) and how it ended (``done``)."""

    __slots__ = ("done", "stale")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.stale: asyncio.Future[Any] = loop.create_future()
        self.done: asyncio.Future[Any] = loop.create_future()

    def abandon(self) -> None:
        for fut in (self.stale, self.done):
            if not fut.done():
                fut.set_result(ABANDONED)
