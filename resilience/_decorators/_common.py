"""What every decorator needs: what kind of callable it wraps, and its name."""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ("is_async_callable", "qualified_name", "unwrap_descriptor")


def unwrap_descriptor(fn: Any) -> Any:
    """The function inside a ``classmethod``/``staticmethod``, else ``fn``."""
    if isinstance(fn, classmethod | staticmethod):
        return fn.__func__
    return fn


def is_async_callable(fn: Any) -> bool:
    """Whether calling ``fn`` returns a coroutine (decided once, at decoration)."""
    target = unwrap_descriptor(fn)
    if inspect.iscoroutinefunction(target):
        return True
    call = getattr(type(target), "__call__", None)  # noqa: B004
    return not inspect.isfunction(target) and inspect.iscoroutinefunction(call)


def reject_generators(fn: Any, decorator: str) -> None:
    """Raise ``TypeError`` for generator functions: guarding them would only
    guard creating the generator, never its work."""
    target = unwrap_descriptor(fn)
    if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
        raise TypeError(
            f"@{decorator} cannot guard the generator function {qualified_name(fn)}: "
            "it would only guard creating the generator"
        )


def qualified_name(fn: Any) -> str:
    """``module.qualname`` of a function (or of the function in a descriptor)."""
    target = unwrap_descriptor(fn)
    module = getattr(target, "__module__", None) or "<unknown>"
    qualname = getattr(target, "__qualname__", None) or getattr(
        target, "__name__", type(target).__qualname__
    )
    return f"{module}.{qualname}"
