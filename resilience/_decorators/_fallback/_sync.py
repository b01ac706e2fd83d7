"""The sync driver (threads): the same decisions as :mod:`._async`, with
no single flight; good values go to a writer thread (or, for the built-in
cache, inline)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..._context import mark_degraded
from ._decide import UNREAD, Entry, Step, after_failure, is_fresh, serve
from ._runtime import RAISE, Fallback

__all__ = ("call_sync",)


def _recover(
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
        cached = fb.read_sync(key)
        now = fb.clock.time()
        step, value = serve(fb.rules, cached, now)
    elif step is Step.SOURCE:
        assert fb.source_fn is not None
        return fb.source_fn(*fb.source_args(instance, args), **kwargs)
    if step is Step.RAISE:
        return RAISE
    fb.count_served(cached, value, now)
    return value


def call_sync(
    fb: Fallback,
    wrapped: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    instance: Any = None,
) -> Any:
    """One call of a sync function with a fallback."""
    key: str | None = None
    cached: Entry | Any | None = UNREAD
    if fb.cache is not None:
        key = fb.key_for(instance, args, kwargs)
        if key is None:
            return wrapped(*args, **kwargs)
        if fb.fresh_ttl is not None:
            entry = cached = fb.read_sync(key)
            if entry is not None and is_fresh(fb.rules, entry, fb.clock.time()):
                return entry[0]
    try:
        result = wrapped(*args, **kwargs)
    except Exception as exc:
        value = _recover(fb, exc, key, cached, instance, args, kwargs)
        if value is RAISE:
            raise
        mark_degraded("fallback")
        return value
    if key is not None:
        fb.remember(key, result)
    return result
