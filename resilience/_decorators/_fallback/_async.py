"""The async driver: calls the function, carries out the decisions of
:mod:`._decide`, and hands good values to the writer (never awaiting it)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Final

from ..._context import mark_degraded
from ..._errors import fresh_copy
from ._decide import UNREAD, Entry, Step, after_failure, is_fresh, serve
from ._flights import ABANDONED, ERROR, Probe
from ._runtime import RAISE, Fallback

__all__ = ("call_async",)

_HIT: Final = "hit"  # a fresh cache entry served without calling
_OK: Final = "ok"  # the dependency answered
_SERVED: Final = "served"  # a fallback was served


async def _recover(
    fb: Fallback,
    exc: Exception,
    key: str | None,
    cached: Entry | Any | None,
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Carry out :func:`after_failure`: the value to serve, or ``RAISE``."""
    triggered = fb.trigger(exc)
    if triggered and fb.cache is not None:
        fb.down = True
    now = fb.clock.time()
    step, value = after_failure(fb.rules, triggered, cached, now)
    if step is Step.READ:
        assert key is not None
        cached = await fb.read_async(key)
        now = fb.clock.time()
        step, value = serve(fb.rules, cached, now)
    elif step is Step.SOURCE:
        assert fb.source_fn is not None
        value = fb.source_fn(*fb.source_args(instance, args), **kwargs)
        if inspect.isawaitable(value):
            value = await value
        return value
    if step is Step.RAISE:
        return RAISE
    fb.count_served(cached, value, now)
    return value


async def call_async(
    fb: Fallback,
    wrapped: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    instance: Any = None,
) -> Any:
    """One call of an async function with a fallback."""
    key: str | None = None
    if fb.cache is not None:
        key = fb.key_for(instance, args, kwargs)
        if key is None:
            return await wrapped(*args, **kwargs)
        if fb.down or fb.fresh_ttl is not None:
            return await _call_slow(fb, key, wrapped, instance, args, kwargs)
    try:
        result = await wrapped(*args, **kwargs)
    except Exception as exc:
        value = await _recover(fb, exc, key, UNREAD, instance, args, kwargs)
        if value is RAISE:
            raise
        mark_degraded("fallback")
        return value
    if key is not None:
        fb.remember(key, result)
    return result


async def _call_slow(
    fb: Fallback,
    key: str,
    wrapped: Callable[..., Awaitable[Any]],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Read-through, or the dependency known down (identical calls coalesce)."""
    if fb.down:
        kind, value = await _call_down(fb, key, wrapped, instance, args, kwargs)
    else:
        cached = await fb.read_async(key)
        kind, value = await _attempt(fb, key, cached, wrapped, instance, args, kwargs)
    if kind is _SERVED:
        mark_degraded("fallback")
    return value


async def _call_down(
    fb: Fallback,
    key: str,
    wrapped: Callable[..., Awaitable[Any]],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[str, Any]:
    """The dependency is known down: one attempt per key (and instance) at
    a time. Identical callers meanwhile are served what the cache held
    when it started, at once, if it has not expired since (ttl is checked
    now, not when the attempt read it); only when there is nothing to
    serve do they wait for its answer (a copy of its error, never the
    same object)."""
    loop = asyncio.get_running_loop()
    pkey = (loop, key) if instance is None else (loop, key, id(instance))
    probes = fb.probes
    while True:
        probe = probes.get(pkey)
        if probe is None:
            break
        # shield: a cancelled follower must not cancel the shared futures.
        cached = await asyncio.shield(probe.stale)
        if cached is ABANDONED:
            continue
        now = fb.clock.time()
        if is_fresh(fb.rules, cached, now):
            return _HIT, cached[0]
        step, value = fb.serve(cached, now)
        if step is Step.SERVE:
            return _SERVED, value
        result = await asyncio.shield(probe.done)
        if result is ABANDONED:
            continue
        if result[0] is ERROR:
            raise fresh_copy(result[1])
        return result  # type: ignore[no-any-return]
    probe = probes[pkey] = Probe(loop)
    try:
        cached = await fb.read_async(key)
        probe.stale.set_result(cached)
        result = await _attempt(fb, key, cached, wrapped, instance, args, kwargs)
    except Exception as exc:
        probe.done.set_result((ERROR, exc))
        raise
    except BaseException:
        probe.abandon()
        raise
    finally:
        if probes.get(pkey) is probe:
            del probes[pkey]
    probe.done.set_result(result)
    return result


async def _attempt(
    fb: Fallback,
    key: str,
    cached: Entry | None,
    wrapped: Callable[..., Awaitable[Any]],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[str, Any]:
    """One call, the cache already read: ``(kind, value)``, or the error."""
    if is_fresh(fb.rules, cached, fb.clock.time()):
        assert cached is not None
        return _HIT, cached[0]
    try:
        result = await wrapped(*args, **kwargs)
    except Exception as exc:
        value = await _recover(fb, exc, key, cached, instance, args, kwargs)
        if value is RAISE:
            raise
        return _SERVED, value
    fb.remember(key, result)
    return _OK, result
