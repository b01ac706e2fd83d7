"""Guarding a callable with a breaker: the hot path.

:func:`guard` is what ``@circuit`` and ``@breaker`` apply. A plain function
gets a guard with its own parameters, built from :func:`_g_template` below:
real code that ruff, mypy and coverage see, of which only the signature is
generated (the ``def`` line and the argument lists of the marked lines). A
wrapper written ``(*args, **kwargs)`` packs a tuple and a dict on every call
and unpacks them again, which costs as much as the whole breaker decision;
with the function's own parameters, a call costs what a hand-written wrapper
costs plus the breaker. The guard takes the original's ``__defaults__`` and
``__kwdefaults__``, so a call binds exactly as a direct call would (a bad call
raises the same ``TypeError``, naming the function, before the breaker sees
anything), and runs with the original's globals (tools resolving string
annotations through ``fn.__globals__`` need that): the template reads no
global, everything it uses is a closure variable. It is compiled under this
file's name with its lines in place, so tracebacks show these lines and
``linecache`` needs no entry per function.

Per call, the guard does without the lock only what ``Machine.lane`` allows:

- LANE_TIMED/LANE_UNTIMED (CLOSED or METRICS_ONLY, a settled window): the
  guard reads the lane's token (``Machine.fast``, else ``Machine.valid``;
  see ``LaneToken``) before the call and, if ``Machine.valid`` is still that
  token after it, a fast success only counts ``Machine.left`` down: an
  attribute write that CPython does not interleave with another thread (no
  call and no backward jump between the check and the write, so no point
  where the GIL could change hands; asyncio runs one step of one coroutine
  at a time). ``Machine.fold`` adds what was counted to the counters under
  the lock before anything reads them. With LANE_UNTIMED only the latency
  sample (one call in each run of 128 to 255, ``resilience._latency``)
  reads the clock;
- LANE_OPEN: a call before the open deadline is rejected with a fresh
  :class:`CircuitOpenError` (a counter and a deadline compare);
- anything else (HALF_OPEN, a failure, an unsettled window, a call nested in
  a call of the same breaker) goes through the breaker's locked driver
  (``CircuitBreaker._call_async``/``_call_sync``).
"""

from __future__ import annotations

import functools
import inspect
import keyword
import re
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import wrapt

from ._errors import CircuitOpenError
from ._machine import Machine
from ._states import CircuitState

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker

__all__ = ("GUARD_FILE", "guard", "guard_frame_breaker", "is_async_callable", "unwrap_descriptor")


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


# The template. Its own names start with ``_g_`` so that they cannot clash
# with the guarded function's parameters (another prefix is used when one
# does). The lines marked ``# <signature>``, ``# <call>`` and ``# <slow>``
# are rewritten for each signature; the sync guard is the same text without
# ``async``/``await``.
def _g_template(
    _g_m: Machine,
    _g_fn: Callable[..., Any],
    _g_b: CircuitBreaker,
    _g_now: Callable[[], float],
    _g_slow: Callable[..., Any],
    _g_new: Callable[..., BaseException],
    _g_error: type[CircuitOpenError],
    _g_open: CircuitState,
) -> Callable[..., Any]:
    async def _g_guarded(*_g_args: Any, **_g_kwargs: Any) -> Any:  # <signature>
        _g_t = _g_m.fast
        if _g_t is None:
            _g_t = _g_m.valid
            if _g_t is None:
                _g_gen = _g_m.gen
                if _g_m.lane < 0:  # LANE_OPEN
                    _g_at = _g_now()
                    _g_u = _g_m.open_until
                    # The generation again: the clock read is a point where
                    # another thread may have moved the state.
                    if _g_at < _g_u and _g_gen == _g_m.gen:
                        _g_m.rejected_calls += 1
                        # Built in the raise, never held in a local: a local
                        # would tie the error to this frame through its
                        # traceback, a cycle only the garbage collector frees.
                        raise _g_new(
                            _g_error,
                            _g_b._name,
                            _g_open,
                            _g_u - _g_at,
                            _g_m.last_failure_category,
                        )
                return await _g_slow(_g_fn, _g_args, _g_kwargs)  # <slow>
            if _g_t.timed:
                _g_w = 0  # LANE_TIMED: the call that ends a run is its sample
            else:
                # LANE_UNTIMED after a run ended: the skip-th admission is
                # the run's latency sample, standing for ``unsampled`` calls,
                # and hands the lane back; the ones before it (-1) go on
                # untimed, below.
                _g_k = _g_m.skip - 1
                _g_m.skip = _g_k
                _g_w = -1
                if _g_k <= 0:
                    _g_w = _g_m.take_unsampled()
                    _g_m.fast = _g_t
            if _g_w >= 0:
                _g_start = _g_now()
                try:
                    _g_result = await _g_fn(*_g_args, **_g_kwargs)  # <call>
                except:  # BaseException, without a name to look up
                    if _g_w > 0:
                        _g_m.give_back(_g_t, _g_w)
                    _g_b._fast_error(_g_t.gen, _g_start)
                    raise
                _g_end = _g_now()
                _g_d = _g_end - _g_start
                if (
                    _g_m.valid is _g_t
                    and _g_d <= _g_m.slow_threshold
                    and _g_end < _g_m.lockfree_until
                ):
                    _g_n = _g_m.left - 1
                    _g_m.left = _g_n
                    if _g_n and not _g_w:
                        return _g_result
                    _g_b._run_done(_g_t, _g_n, _g_d, _g_w)
                    return _g_result
                _g_b._finish(_g_t.gen, _g_end, _g_d, _g_w)
                return _g_result
        # LANE_UNTIMED: no clock.
        try:
            _g_result = await _g_fn(*_g_args, **_g_kwargs)  # <call>
        except:
            _g_b._fast_error(_g_t.gen, None)
            raise
        if _g_m.valid is _g_t:
            _g_n = _g_m.left - 1
            _g_m.left = _g_n
            if _g_n:
                return _g_result
            _g_b._run_over(_g_t)
            return _g_result
        _g_b._finish(_g_t.gen, None, None, 0)
        return _g_result

    return _g_guarded


GUARD_FILE = _g_template.__code__.co_filename
_FILE = GUARD_FILE
_GUARD_NAME = re.compile(r"_g\d*_b")


def _template_lines() -> tuple[int, list[str]]:
    lines, first = inspect.getsourcelines(_g_template)
    return first, lines


def _usable(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def _prefix(names: tuple[str, ...]) -> str | None:
    """A prefix for the template's own names that no parameter starts with."""
    for i in range(100):
        prefix = "_g_" if i == 0 else f"_g{i}_"
        if not any(n.startswith(prefix) for n in names):
            return prefix
    return None  # pragma: no cover - a hundred prefixes all taken


def _mirror(code: types.CodeType) -> tuple[str, str, str, str] | None:
    """``(parameters, call arguments, positional tuple, keyword dict)``
    mirroring ``code``'s parameters, or ``None`` if a parameter's name cannot
    be written in source (a code object built by hand can hold any string)."""
    names = code.co_varnames
    npos = code.co_argcount
    nposonly = code.co_posonlyargcount
    nkw = code.co_kwonlyargcount
    varargs = bool(code.co_flags & inspect.CO_VARARGS)
    varkw = bool(code.co_flags & inspect.CO_VARKEYWORDS)
    if not all(_usable(n) for n in names[: npos + nkw + varargs + varkw]):
        return None
    params: list[str] = []
    args: list[str] = []
    pos: list[str] = []
    kws: list[str] = []
    for i, n in enumerate(names[:npos]):
        params.append(n)
        if i + 1 == nposonly:
            params.append("/")
        args.append(n)
        pos.append(n)
    i = npos + nkw
    if varargs:
        params.append("*" + names[i])
        args.append("*" + names[i])
        pos.append("*" + names[i])
        i += 1
    elif nkw:
        params.append("*")
    for n in names[npos : npos + nkw]:
        params.append(n)
        args.append(f"{n}={n}")
        kws.append(f"{n!r}: {n}")
    if varkw:
        params.append("**" + names[i])
        args.append("**" + names[i])
        kws.append("**" + names[i])
    return ", ".join(params), ", ".join(args), "".join(p + ", " for p in pos), ", ".join(kws)


def _source(fn: types.FunctionType, is_async: bool) -> tuple[str, str]:
    """The guard's source (with this file's line numbers) and the prefix of
    its own names."""
    code = fn.__code__
    name = code.co_name if _usable(code.co_name) else "guarded"
    mirrored = _mirror(code)
    prefix = _prefix((*code.co_varnames, name)) if mirrored else None
    if mirrored is None or prefix is None:
        # Parameters that cannot be mirrored: pass everything through.
        prefix = "_g_"
        mirrored = ("*_g_args, **_g_kwargs", "*_g_args, **_g_kwargs", "*_g_args, ", "**_g_kwargs")
        # (these names are the template's own, already under this prefix)
        if name.startswith(prefix):
            name = "guarded"
    params, args, pos, kws = mirrored
    first, lines = _template_lines()
    out: list[str] = []
    for line in lines:
        marker = line.rstrip()[-13:]
        line = line.replace("_g_", prefix)  # before any of fn's names go in
        if marker == "# <signature>":
            indent = line[: len(line) - len(line.lstrip())]
            line = f"{indent}async def {name}({params}):\n"
        elif marker.endswith("# <call>"):
            line = line.replace(f"*{prefix}args, **{prefix}kwargs", args)
        elif marker.endswith("# <slow>"):
            line = line.replace(f"{prefix}args, {prefix}kwargs", f"({pos}), {{{kws}}}")
        elif line.strip() == f"return {prefix}guarded":
            line = line.replace(f"{prefix}guarded", name)
        if not is_async:
            line = line.replace("async def ", "def ").replace("await ", "")
        out.append(line)
    # Blank lines first, so that each line keeps its number in this file.
    return "\n" * (first - 1) + "".join(out), prefix


@functools.lru_cache(maxsize=1024)
def _factory(source: str, prefix: str) -> Any:
    """The compiled template for ``source``: functions with the same name and
    parameters share one code object (each call of the factory closes over
    its own breaker and function)."""
    namespace: dict[str, Any] = {}
    exec(compile(source, _FILE, "exec"), namespace)
    return namespace[prefix + "template"]


def _compile(breaker: CircuitBreaker, fn: types.FunctionType, is_async: bool) -> Any:
    """A function that calls ``fn`` through ``breaker``, with ``fn``'s
    parameters, defaults, metadata and globals, and ``.breaker``."""
    source, prefix = _source(fn, is_async)
    made = _factory(source, prefix)(
        breaker._m,
        fn,
        breaker,
        breaker._now,
        breaker._call_async if is_async else breaker._call_sync,
        BaseException.__new__,  # CircuitOpenError keeps its fields in args
        CircuitOpenError,
        CircuitState.OPEN,
    )
    # The same code and closure, with fn's globals: the code reads no global.
    code = made.__code__.replace(co_qualname=fn.__qualname__)
    guarded = types.FunctionType(
        code, fn.__globals__, fn.__name__, fn.__defaults__, made.__closure__
    )
    guarded.__kwdefaults__ = fn.__kwdefaults__
    functools.update_wrapper(guarded, fn)
    guarded.breaker = breaker  # type: ignore[attr-defined]
    return guarded


def guard_frame_breaker(frame: types.FrameType) -> Any:
    """The breaker of a generated guard running in ``frame``, else ``None``
    (how a failure finds out that its call is nested in another call of the
    same breaker that was admitted without the lock)."""
    code = frame.f_code
    if code.co_filename != _FILE or code.co_name == "_g_template":
        return None
    for name in code.co_freevars:
        if _GUARD_NAME.fullmatch(name):
            return frame.f_locals.get(name)
    return None


def reject_generators(fn: Any, decorator: str) -> None:
    """Raise ``TypeError`` for generator functions: guarding them would only
    guard creating the generator, never its work."""
    target = unwrap_descriptor(fn)
    if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
        name = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', target)}"
        raise TypeError(
            f"@{decorator} cannot guard the generator function {name}: "
            "it would only guard creating the generator"
        )


class _Guard(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """A guarded callable; ``.breaker`` is its circuit breaker."""

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker guarding this function."""
        return self._self_breaker  # type: ignore[no-any-return]


def guard(fn: Any, breaker: CircuitBreaker) -> Any:
    """Wrap ``fn`` (sync or async function, method, classmethod, staticmethod,
    callable object) so every call goes through ``breaker``.

    A plain function (a method defined with ``def`` included) gets a guard
    generated for it, with its own parameters; it binds as a method like any
    function. Other callables get a wrapt ``FunctionWrapper`` that calls the
    breaker's generic driver.
    """
    if not callable(fn) and not isinstance(fn, classmethod | staticmethod):
        raise TypeError(f"@circuit needs a callable, got {fn!r}")
    reject_generators(fn, "circuit")
    is_async = is_async_callable(fn)
    if type(fn) is types.FunctionType:
        return _compile(breaker, fn, is_async)
    run = breaker._call_async if is_async else breaker._call_sync

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return run(wrapped, args, kwargs)

    wrapped: Any = _Guard(fn, wrapper)
    wrapped._self_breaker = breaker
    return wrapped
