"""``@chain``: try a primary resource, then its backups, in order.

``@chain(primary, replica)`` decorates a function whose first argument is the
resource (a pool, a client); callers leave that argument out. ``chain.of(f1,
f2, ...)`` composes callables of one signature. Failover happens on the same
errors as ``@fallback``; an ignored error (a bad query) is a bug everywhere
and propagates at once. A resource whose ``.circuit_breaker`` is open is
skipped without a call, so an open primary costs no waiting. The chain
creates no breakers of its own. When a later candidate raises an error that
does not fail over, that error propagates unchanged; the failures before it
are logged at DEBUG (logger ``resilience``), never attached to it.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate, Final, ParamSpec, TypeVar, overload

import wrapt

from .._breaker import CircuitBreaker
from .._errors import ChainExhaustedError
from ._common import (
    Trigger,
    is_async_callable,
    make_trigger,
    qualified_name,
    reject_generators,
    unwrap_descriptor,
)

__all__ = ("chain",)

logger = logging.getLogger("resilience")

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _exhausted(name: str, errors: list[Exception], skipped: int) -> ChainExhaustedError:
    counts = f"{len(errors) - skipped} failed"
    if skipped:
        counts += f", {skipped} skipped: circuit open"
    return ChainExhaustedError(f"{name}: no resource answered ({counts})", errors)


def _call(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``chain.of``'s call: the candidate is the function itself."""
    return fn(*args, **kwargs)


async def _call_any(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``chain.of``'s call when sync and async members mix."""
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


class _Chain:
    """Failover over one list of candidates (``@chain``'s resources, or
    ``chain.of``'s callables): the decisions, sans-I/O (:meth:`skip`,
    :meth:`fail_over`, :meth:`exhausted`), and one thin driver each for sync
    and async code, which make the calls."""

    __slots__ = ("guarded", "name", "resources", "trigger")

    def __init__(
        self, name: str, resources: tuple[Any, ...], trigger: Trigger, *, guarded: bool = True
    ) -> None:
        self.name = name
        self.resources = resources
        self.trigger = trigger
        # Whether a candidate's open .circuit_breaker skips it (resources only).
        self.guarded = guarded

    # -- decisions ---------------------------------------------------------

    def skip(self, resource: Any, errors: list[Exception]) -> bool:
        """Whether ``resource`` is skipped without a call because its breaker
        would reject a call now (open, forced open, or half-open with every
        probe permit taken); its ``CircuitOpenError`` then joins ``errors``."""
        if not self.guarded:
            return False
        breaker = getattr(resource, "circuit_breaker", None)
        if not isinstance(breaker, CircuitBreaker):
            return False
        rejected = breaker.rejection()
        if rejected is None:
            return False
        errors.append(rejected)
        return True

    def fail_over(self, exc: Exception, errors: list[Exception]) -> bool:
        """Whether ``exc`` moves on to the next candidate (it joins ``errors``)
        rather than propagating at once."""
        if not self.trigger(exc):
            return False
        errors.append(exc)
        return True

    def exhausted(self, errors: list[Exception], skipped: int) -> ChainExhaustedError:
        """The error raised once every candidate has failed, ``skipped`` of
        them without a call (their breaker rejected it)."""
        return _exhausted(self.name, errors, skipped)

    def give_up(self, exc: Exception, errors: list[Exception]) -> None:
        """``exc`` does not fail over and propagates unchanged (the rule):
        the failures before it, if any, are logged at DEBUG so they are not
        lost without a trace."""
        if errors and logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "chain %s: %s does not fail over and is raised; earlier failures: %s",
                self.name,
                type(exc).__name__,
                "; ".join(f"{type(e).__module__}.{type(e).__qualname__}: {e}" for e in errors),
            )

    # -- drivers -----------------------------------------------------------

    async def call_async(
        self,
        wrapped: Callable[..., Awaitable[Any]],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        errors: list[Exception] = []
        skipped = 0
        for resource in self.resources:
            if self.skip(resource, errors):
                skipped += 1
                continue
            try:
                return await wrapped(resource, *args, **kwargs)
            except Exception as exc:
                if not self.fail_over(exc, errors):
                    self.give_up(exc, errors)
                    raise
        raise self.exhausted(errors, skipped)

    def call_sync(
        self,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        errors: list[Exception] = []
        skipped = 0
        for resource in self.resources:
            if self.skip(resource, errors):
                skipped += 1
                continue
            try:
                return wrapped(resource, *args, **kwargs)
            except Exception as exc:
                if not self.fail_over(exc, errors):
                    self.give_up(exc, errors)
                    raise
        raise self.exhausted(errors, skipped)


def _without_resource(fn: Any) -> inspect.Signature | None:
    """The signature callers see: the resource parameter removed (the first,
    or the second after ``self``/``cls`` for methods)."""
    target = unwrap_descriptor(fn)
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    skip = 0
    if isinstance(fn, classmethod) or (
        not isinstance(fn, staticmethod) and params and params[0].name in ("self", "cls")
    ):
        skip = 1
    if len(params) <= skip or params[skip].kind not in _POSITIONAL:
        raise TypeError(
            f"@chain: {qualified_name(fn)} must take the resource as its first positional parameter"
        )
    return sig.replace(parameters=params[:skip] + params[skip + 1 :])


class _BoundChainWrapper(wrapt.BoundFunctionWrapper):  # type: ignore[type-arg]
    @property
    def __func__(self) -> Any:
        # inspect.signature() of a bound method drops the first parameter of
        # __func__'s signature: hand it the parent, which has ours.
        return self._self_parent

    @property
    def __signature__(self) -> inspect.Signature | None:
        sig: inspect.Signature | None = self._self_parent._self_signature
        if sig is None or self._self_instance is None:
            return sig
        params = list(sig.parameters.values())
        return sig.replace(parameters=params[1:]) if params else sig


class _ChainWrapper(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """A function tried against each resource in turn; ``.resources`` lists them."""

    __bound_function_wrapper__ = _BoundChainWrapper

    @property
    def __signature__(self) -> inspect.Signature | None:
        return self._self_signature  # type: ignore[no-any-return]

    @property
    def resources(self) -> tuple[Any, ...]:
        """The resources, in the order they are tried."""
        return self._self_chain.resources  # type: ignore[no-any-return]


class _ChainFactory:
    """``chain(primary, backup, ...)`` and ``chain.of(f1, f2, ...)``."""

    def __call__(
        self,
        *resources: T,
        on: type[Exception]
        | tuple[type[Exception], ...]
        | Callable[[BaseException], bool]
        | None = None,
    ) -> Callable[[Callable[Concatenate[T, P], R]], Callable[P, R]]:
        """Try the decorated function with each resource in turn.

        The decorated function (sync or async, a method too) takes the
        resource as its first argument (after ``self``); callers leave it out:
        ``find_orders(customer_id)`` calls ``find_orders(primary,
        customer_id)``, then, on failure, ``find_orders(replica,
        customer_id)``. The first answer wins.

        A resource with a ``.circuit_breaker`` (a :class:`CircuitBreaker`,
        as ``ResilientPool`` has) whose state is OPEN or FORCED_OPEN is
        skipped without a call; its ``CircuitOpenError`` joins the causes.
        No breaker is created.

        Args:
            *resources: one or more resources, tried in this order.
            on: what fails over; replaces the default rule. An exception
                type, a non-empty tuple of ``Exception`` subclasses, or a
                predicate ``fn(exc) -> bool``. Default ``None``: the errors
                ``@fallback`` acts on (``CircuitOpenError``,
                ``BulkheadFullError``, ``TimeoutError``, errors whose outcome
                is a failure); any other error propagates at once.

        Raises:
            ValueError: no resources.
            TypeError: a bad ``on``; at decoration, a function with no
                positional parameter for the resource.
            ChainExhaustedError: (at call time) every resource failed: an
                ``ExceptionGroup`` of each cause, in order.
        """
        if not resources:
            raise ValueError("@chain needs at least one resource")
        trigger = make_trigger(on, "chain")

        def decorate(fn: Callable[Concatenate[T, P], R]) -> Callable[P, R]:
            target: Any = fn
            if not callable(target) and not isinstance(target, classmethod | staticmethod):
                raise TypeError(f"@chain needs a callable, got {fn!r}")
            reject_generators(fn, "chain")
            policy = _Chain(qualified_name(fn), tuple(resources), trigger)
            run = policy.call_async if is_async_callable(fn) else policy.call_sync

            def wrapper(
                wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> Any:
                return run(wrapped, instance, args, kwargs)

            wrapped: Any = _ChainWrapper(fn, wrapper)
            wrapped._self_chain = policy
            wrapped._self_signature = _without_resource(fn)
            return wrapped  # type: ignore[no-any-return]

        return decorate

    @overload
    def of(
        self,
        first: Callable[P, Coroutine[Any, Any, R]],
        /,
        *rest: Callable[P, Awaitable[R]] | Callable[P, R],
        on: type[Exception]
        | tuple[type[Exception], ...]
        | Callable[[BaseException], bool]
        | None = None,
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def of(
        self,
        first: Callable[P, R],
        /,
        *rest: Callable[P, R],
        on: type[Exception]
        | tuple[type[Exception], ...]
        | Callable[[BaseException], bool]
        | None = None,
    ) -> Callable[P, R]: ...

    def of(
        self,
        first: Callable[..., Any],
        /,
        *rest: Callable[..., Any],
        on: Any = None,
    ) -> Callable[..., Any]:
        """Compose callables of one signature: each is tried in turn.

        ``chain.of(full_search, simple_search, popular_products)`` returns a
        function with ``full_search``'s signature that calls ``full_search``,
        then, on a failover error, ``simple_search``, and so on. If any of
        them is async, the result is async (sync members are called
        inline); otherwise it is sync. Failover rules and the
        ``ChainExhaustedError`` are those of :func:`chain`.

        Args:
            first: the first callable; its signature and name are kept.
            *rest: the backups, in order.
            on: as for :func:`chain`.

        Raises:
            TypeError: a member is not callable, or a bad ``on``.
        """
        fns = (first, *rest)
        for fn in fns:
            if not callable(fn):
                raise TypeError(f"chain.of needs callables, got {fn!r}")
            reject_generators(fn, "chain")
        policy = _Chain(qualified_name(first), fns, make_trigger(on, "chain"), guarded=False)
        kinds = [is_async_callable(fn) for fn in fns]

        if any(kinds):
            invoke = _call if all(kinds) else _call_any

            async def composed_async(*args: Any, **kwargs: Any) -> Any:
                return await policy.call_async(invoke, None, args, kwargs)

            composed: Callable[..., Any] = composed_async
        else:

            def composed_sync(*args: Any, **kwargs: Any) -> Any:
                return policy.call_sync(_call, None, args, kwargs)

            composed = composed_sync
        functools.update_wrapper(composed, first)
        composed.chain = fns  # type: ignore[attr-defined]
        return composed


chain: Final = _ChainFactory()
"""Failover across resources (``@chain(primary, backup)``) or callables (``chain.of``)."""
