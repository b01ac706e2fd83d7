"""Per-request degradation flag: did a fallback serve part of this answer?

A :func:`degradation_scope` (the ASGI and Django middlewares open one per
request) installs a mutable holder in a context variable; a served fallback
marks it. Because the holder is shared rather than re-set, a mark made in a
child task or a copied context (anyio task groups, ``asyncio.create_task``) is
still seen by the request that opened the scope. Outside any scope,
:func:`mark_degraded` marks the current context only.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ("Degradation", "degradation_scope", "is_degraded", "mark_degraded")


class Degradation:
    """What was degraded in one scope: the distinct reasons, in the order first
    seen (e.g. ``"fallback"``)."""

    __slots__ = ("reasons",)

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.reasons)

    def __repr__(self) -> str:
        return f"Degradation({self.reasons!r})"


_current: contextvars.ContextVar[Degradation | None] = contextvars.ContextVar(
    "resilience_degradation", default=None
)


def is_degraded() -> bool:
    """Whether a fallback has served in the current request (or context)."""
    holder = _current.get()
    return holder is not None and bool(holder.reasons)


def mark_degraded(reason: str = "fallback") -> None:
    """Note that the current answer is degraded (called by ``@fallback``).

    Each distinct reason is kept once, so a long-lived context (a worker loop
    with no scope) does not grow with every served fallback.
    """
    holder = _current.get()
    if holder is None:
        holder = Degradation()
        _current.set(holder)
    if reason not in holder.reasons:
        holder.reasons.append(reason)


@contextmanager
def degradation_scope() -> Iterator[Degradation]:
    """A fresh, unmarked scope (one per request); yields its holder."""
    holder = Degradation()
    token = _current.set(holder)
    try:
        yield holder
    finally:
        _current.reset(token)
