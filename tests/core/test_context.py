"""The degradation flag."""

from __future__ import annotations

import asyncio

from resilience import degradation_scope, is_degraded, mark_degraded


def test_marks_inside_a_scope_are_seen_by_the_scope() -> None:
    """A scope starts clean and sees the mark."""
    with degradation_scope() as holder:
        assert not is_degraded()
        mark_degraded()
        assert is_degraded() and holder.reasons == ["fallback"]
    assert not holder or holder.reasons == ["fallback"]


async def test_a_mark_in_a_child_task_reaches_the_request_scope() -> None:
    """Copied contexts share the holder."""
    with degradation_scope() as holder:
        await asyncio.create_task(_mark_later())
        assert holder.reasons == ["fallback"]


async def _mark_later() -> None:
    mark_degraded()


def test_repeated_marks_outside_a_scope_do_not_grow() -> None:
    """A worker loop without a scope keeps each reason once (review finding)."""

    def worker() -> list[str]:
        for _ in range(10_000):
            mark_degraded()
        mark_degraded("cache")
        with degradation_scope() as inner:
            pass
        assert not inner
        from resilience._context import _current

        holder = _current.get()
        assert holder is not None
        return holder.reasons

    import contextvars

    assert contextvars.copy_context().run(worker) == ["fallback", "cache"]
