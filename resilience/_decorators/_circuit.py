"""``@circuit``: guard a function with a named breaker from a registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from .._categories import ErrorCategory
from .._config import CircuitConfig
from .._guard import guard
from ._common import qualified_name

if TYPE_CHECKING:
    from .._registry import Registry

__all__ = ("circuit", "guard")  # guard lives in resilience._guard

P = ParamSpec("P")
R = TypeVar("R")


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
