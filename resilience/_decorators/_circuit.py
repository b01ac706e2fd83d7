"""``@circuit``: guard a function with a named breaker from a registry."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

import wrapt

from .._breaker import CircuitBreaker
from .._categories import ErrorCategory
from .._config import CircuitConfig
from .._hotpath import compile_guard
from ._common import is_async_callable, qualified_name, reject_generators

if TYPE_CHECKING:
    from .._registry import Registry

__all__ = ("circuit", "guard")

P = ParamSpec("P")
R = TypeVar("R")


class _Guard(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """A guarded callable; ``.breaker`` is its circuit breaker."""

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker guarding this function."""
        return self._self_breaker  # type: ignore[no-any-return]


def guard(fn: Callable[P, R], breaker: CircuitBreaker) -> Callable[P, R]:
    """Wrap ``fn`` (sync or async function, method, classmethod, staticmethod)
    so every call goes through ``breaker``.

    A plain function (a method defined with ``def`` included) gets a function
    generated for it, with its own parameters (``resilience._hotpath``): the
    fast path, and it binds as a method like any function. Other callables
    (classmethods, staticmethods, callable objects, partials) get a wrapt
    ``FunctionWrapper``.
    """
    if not callable(fn) and not isinstance(fn, classmethod | staticmethod):  # type: ignore[unreachable]
        raise TypeError(f"@circuit needs a callable, got {fn!r}")
    reject_generators(fn, "circuit")
    is_async = is_async_callable(fn)
    if type(fn) is types.FunctionType:
        return compile_guard(breaker, fn, is_async)  # type: ignore[no-any-return]
    run = breaker._call_async if is_async else breaker._call_sync

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return run(wrapped, args, kwargs)

    wrapped: Any = _Guard(fn, wrapper)
    wrapped._self_breaker = breaker
    return wrapped  # type: ignore[no-any-return]


@overload
def circuit(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def circuit(
    name: str | None = None,
    /,
    *,
    registry: Registry | None = None,
    config: CircuitConfig | None = None,
    classifier: Callable[[BaseException], ErrorCategory] | None = None,
    **fields: Any,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def circuit(
    name: Any = None,
    /,
    *,
    registry: Registry | None = None,
    config: CircuitConfig | None = None,
    classifier: Callable[[BaseException], ErrorCategory] | None = None,
    **fields: Any,
) -> Any:
    """Guard a sync or async function with the breaker called ``name``.

    Use bare (``@circuit``) or with arguments (``@circuit("users-db",
    failure_threshold=5)``). The breaker comes from ``registry`` (default
    ``resilience.registry``) and is created on first use; the same name on two
    functions means one shared breaker, and asking for it with other settings
    raises ``ValueError`` at decoration time. The wrapped function keeps its
    signature, docstring and ``inspect.iscoroutinefunction``, and has
    ``.breaker``.

    Args:
        name: the breaker's name; default the function's ``module.qualname``.
        registry: where the breaker lives; default ``resilience.registry``.
        config: a :class:`CircuitConfig` to start from.
        classifier: replaces :func:`resilience.classify` for this breaker.
        **fields: :class:`CircuitConfig` settings.
    """
    if callable(name) and not isinstance(name, str):
        if registry is not None or config is not None or classifier is not None or fields:
            raise TypeError("@circuit: pass settings as @circuit(name, **settings)")
        return _decorate(name, None, None, None, None, {})
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"@circuit: name must be a non-empty string, got {name!r}")
    # Unknown settings fail here, before any function is decorated.
    from .._config import make_config

    make_config(config, fields)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        return _decorate(fn, name, registry, config, classifier, fields)  # type: ignore[no-any-return]

    return decorate


def _decorate(
    fn: Any,
    name: str | None,
    registry: Registry | None,
    config: CircuitConfig | None,
    classifier: Callable[[BaseException], ErrorCategory] | None,
    fields: dict[str, Any],
) -> Any:
    if registry is None:
        from .._registry import registry as default_registry

        registry = default_registry
    breaker = registry.get_or_create(
        name or qualified_name(fn), config, classifier=classifier, **fields
    )
    return guard(fn, breaker)
