"""The guarded function ``@circuit`` returns for a plain function: generated
once per function, with the function's own parameters.

Why generate code: a wrapper written ``(*args, **kwargs)`` packs a tuple and a
dict on every call and unpacks them again, which costs as much as the whole
breaker decision. A wrapper with the same parameters as the function passes
them straight through, so a call costs what a hand-written wrapper costs plus
the breaker. Defaults are not copied into the code: the generated function
takes the original's ``__defaults__`` and ``__kwdefaults__`` objects, so a
call binds exactly as a direct call would (a bad call raises the same
``TypeError``, naming the function, before the breaker sees anything).

The generated code reads no globals: everything it uses is a closure
variable, so it runs with the *original* function's globals, which is what
tools resolving string annotations through ``fn.__globals__`` need.

Per call, while CLOSED (the hot path):

- admission reads the generation, then the state, without the lock (a stale
  pair only drops the result, see ``Machine.gen``);
- with a settled window (``Machine.fast``) a success is counted without the
  lock, in ``Machine.hot``: an attribute write that CPython does not
  interleave with another thread (no call and no backward jump between the
  check and the write, so no eval-breaker point where the GIL could change
  hands), and asyncio runs one step of one coroutine at a time.
  ``Machine.fold`` adds what ``hot`` gained to ``successful_calls`` (and to a
  time window's newest bucket) under the lock, before either is read.
  Everything that unsettles the window clears ``fast`` before anything
  else, under the lock;
- when no rule needs durations (``FAST_UNTIMED``), one call in 32 reads
  the clock: the admission whose count (``Machine.ticks``) reaches
  ``Machine.tick_at``, which then moves on to the next run of 32 admissions,
  at a random place drawn then (``_machine.next_sample``); that call feeds
  the latency metrics, weighted for 32. A window
  that times every call (a slow-call rule, a time window) feeds them every
  call until 1,023 have been counted in ``hot``, then the one at
  ``Machine.sample_at``, chosen the same way on ``hot``. A random place, not
  every 32nd call, and fixed before the run starts, not by when calls
  finish: a rhythm in the traffic (two queries per request) or the order in
  which concurrent calls finish must not decide which calls are seen; and
  runs are counted on ``hot`` or ``ticks``, which calls recorded under the
  lock do not move, so they cannot line up with the sample either;
- with a clean time window (``FAST_TIME``) a success that ends in the newest
  bucket is counted the same way, and fold adds it to that bucket;
- a rejection while OPEN (before its deadline) or FORCED_OPEN is decided
  without the lock too (a counter, a deadline compare) and raises a fresh
  :class:`CircuitOpenError`.

Anything else (HALF_OPEN, a failure, an unsettled window) goes through the
breaker's locked methods.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import keyword
import linecache
import types
from typing import TYPE_CHECKING, Any

from ._config import CircuitState
from ._errors import CircuitOpenError
from ._machine import (
    _HIST_EXACT,
    _PLACE_SHIFT,
    FAST_UNTIMED,
    LOCK_FREE,
    RNG_INCREMENT,
    RNG_MASK,
    RNG_MULTIPLIER,
    SAMPLE_SHIFT,
    SAMPLE_WEIGHT,
)

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker

__all__ = ("compile_guard",)

# Integers are written in as constants and the cold helpers are reached
# through the breaker (``_rp_b``): every closure variable is copied into the
# frame on each call, so the hot paths keep only the ones they use.
_TEMPLATE = """\
def _rp_factory(_rp_m, _rp_fn, _rp_b, _rp_now, _rp_closed, _rp_open, _rp_forced, _rp_new,
                _rp_error):
    {async_}def {name}({params}):
        _rp_gen = _rp_m.gen  # read before the rest: a stale pair only drops the result
        _rp_f = _rp_m.fast
        # fast is cleared before any transition: while it is positive the
        # state is CLOSED or METRICS_ONLY, which admit every call; FAST_OPEN
        # is set once a transition to OPEN is complete.
        if _rp_f == {untimed}:
            # Counted at admission, so concurrent calls do not all share one
            # sampling decision.
            _rp_k = _rp_m.ticks + 1
            _rp_m.ticks = _rp_k
            if _rp_k < _rp_m.tick_at:
                try:
                    _rp_result = {await_}_rp_fn({args})
                except:  # noqa: E722 - BaseException, without a name to look up
                    _rp_b._settle_current(_rp_gen, None)
                    raise
                # Still settled: consecutive_failures is 0 (a failure clears
                # fast first) and the window needs nothing.
                if _rp_m.fast and _rp_gen == _rp_m.gen:
                    _rp_m.hot += 1
                    return _rp_result
                _rp_b._finish(_rp_gen, None, None, 1)
                return _rp_result
            # A sample: this call's latency stands for its run of 32
            # admissions. The next is at a random place in the next run
            # (_machine.next_sample, inlined: no call in this step).
            _rp_x = (_rp_m.sample_rng * {rng_mult} + {rng_inc}) & {rng_mask}
            _rp_m.sample_rng = _rp_x
            _rp_m.tick_at = ((_rp_k >> {shift}) + 1 << {shift}) + (_rp_x >> {place_shift})
            _rp_s = 1
        elif _rp_f > 0:  # FAST_SETTLED, FAST_TIME: sampled at Machine.sample_at
            _rp_s = 0
        elif _rp_f:  # FAST_OPEN, the only negative value: reject until the deadline
            _rp_t = _rp_now()
            _rp_u = _rp_m.open_until
            # The generation again: the clock read is a point where another
            # thread may have moved the state.
            if _rp_t < _rp_u and _rp_gen == _rp_m.gen:
                _rp_m.rejected_calls += 1
                raise _rp_new(
                    _rp_error, _rp_b._name, _rp_open, _rp_u - _rp_t, _rp_m.last_failure_category
                )
            _rp_gen = _rp_b._admit_slow()
            _rp_s = 0
        else:
            if _rp_m.state is not _rp_closed:
                if _rp_m.state is _rp_forced:
                    _rp_m.rejected_calls += 1
                    raise _rp_new(
                        _rp_error, _rp_b._name, _rp_forced, None, _rp_m.last_failure_category
                    )
                _rp_gen = _rp_b._admit_slow()
            _rp_s = 0
        _rp_start = _rp_now()
        try:
            _rp_result = {await_}_rp_fn({args})
        except:  # noqa: E722
            _rp_b._settle_current(_rp_gen, _rp_start)
            raise
        _rp_end = _rp_now()
        _rp_d = _rp_end - _rp_start
        # Machine.settled_success, inlined; with a time window, only a call
        # that ends in the newest bucket (hot_end is infinite otherwise).
        # fast may be FAST_OPEN (true) only under a later generation.
        if (
            _rp_m.fast
            and _rp_gen == _rp_m.gen
            and _rp_d < _rp_m.slow_threshold
            and _rp_end < _rp_m.hot_end
        ):
            _rp_n = _rp_m.hot + 1
            _rp_m.hot = _rp_n
            if _rp_s:
                _rp_m.settled_sample(_rp_gen, _rp_n, _rp_d, 1)
            elif _rp_n >= _rp_m.sample_at:
                # Every call up to 1,023, then one in each run of 32, at a
                # random place (_machine.next_sample, inlined); moved on
                # before the call.
                if _rp_n < {exact}:
                    _rp_m.sample_at = _rp_n + 1
                else:
                    _rp_x = (_rp_m.sample_rng * {rng_mult} + {rng_inc}) & {rng_mask}
                    _rp_m.sample_rng = _rp_x
                    _rp_m.sample_at = ((_rp_n >> {shift}) + 1 << {shift}) + (_rp_x >> {place_shift})
                _rp_m.settled_sample(_rp_gen, _rp_n, _rp_d, 0)
            return _rp_result
        _rp_b._finish(_rp_gen, _rp_end, _rp_d, {weight} if _rp_s else 1)
        return _rp_result
    return {name}
"""


def _usable(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def _prefix(names: tuple[str, ...]) -> str | None:
    """A prefix for the template's own names that no parameter starts with."""
    for i in range(100):
        prefix = "_rp_" if i == 0 else f"_rp{i}_"
        if not any(n.startswith(prefix) for n in names):
            return prefix
    return None  # pragma: no cover - a hundred prefixes all taken


def _signature_source(code: types.CodeType) -> tuple[str, str] | None:
    """``(parameters, call arguments)`` mirroring ``code``'s parameters, or
    ``None`` if a parameter's name cannot be written in source (a code
    object built by hand can hold any string)."""
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
    for i, n in enumerate(names[:npos]):
        params.append(n)
        if i + 1 == nposonly:
            params.append("/")
        args.append(n)
    i = npos + nkw
    if varargs:
        params.append("*" + names[i])
        args.append("*" + names[i])
        i += 1
    elif nkw:
        params.append("*")
    for n in names[npos : npos + nkw]:
        params.append(n)
        args.append(f"{n}={n}")
    if varkw:
        params.append("**" + names[i])
        args.append("**" + names[i])
    return ", ".join(params), ", ".join(args)


def _source(fn: types.FunctionType, is_async: bool) -> tuple[str, str]:
    """The guard's source and the prefix of its own names."""
    code = fn.__code__
    name = code.co_name if _usable(code.co_name) else "guarded"
    mirrored = _signature_source(code)
    prefix = _prefix((*code.co_varnames, name)) if mirrored else None
    if mirrored is None or prefix is None:
        # Parameters that cannot be mirrored: pass everything through.
        prefix, mirrored = "_rp_", ("*_rp_args, **_rp_kwargs", "*_rp_args, **_rp_kwargs")
        if name.startswith(prefix):
            name = "guarded"
    params, args = mirrored
    source = _TEMPLATE.replace("_rp_", prefix).format(
        async_="async " if is_async else "",
        await_="await " if is_async else "",
        name=name,
        params=params,
        args=args,
        untimed=FAST_UNTIMED,
        shift=SAMPLE_SHIFT,
        place_shift=_PLACE_SHIFT,
        rng_mult=RNG_MULTIPLIER,
        rng_inc=RNG_INCREMENT,
        rng_mask=RNG_MASK,
        exact=_HIST_EXACT,
        weight=SAMPLE_WEIGHT,
    )
    return source, prefix


@functools.lru_cache(maxsize=1024)
def _factory(source: str, prefix: str) -> Any:
    """The compiled factory for ``source``: functions with the same name and
    parameters share one code object (each call of the factory closes over
    its own breaker and function)."""
    # One file name per distinct source, registered with linecache so that
    # tracebacks and profilers show the guard's lines.
    filename = f"<resilience guard {hashlib.blake2s(source.encode(), digest_size=8).hexdigest()}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {}
    exec(compile(source, filename, "exec"), namespace)
    return namespace[prefix + "factory"]


def compile_guard(breaker: CircuitBreaker, fn: types.FunctionType, is_async: bool) -> Any:
    """A function that calls ``fn`` through ``breaker``, with ``fn``'s
    parameters, defaults, metadata and globals, and ``.breaker``."""
    source, prefix = _source(fn, is_async)
    lock_free = LOCK_FREE
    made = _factory(source, prefix)(
        breaker._m,
        fn,
        breaker,
        breaker._now,
        CircuitState.CLOSED,
        # Without a GIL, rejections take the lock too: no state is ever
        # identical to these placeholders.
        CircuitState.OPEN if lock_free else object(),
        CircuitState.FORCED_OPEN if lock_free else object(),
        BaseException.__new__,  # CircuitOpenError keeps its fields in args
        CircuitOpenError,
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
