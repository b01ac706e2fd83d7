"""Cache keys: a canonical, injective, cross-process text of a call's
arguments, digested into ``resilience:fallback:{module.qualname}:{digest}``."""

from __future__ import annotations

import enum
import hashlib
import inspect
import re
from collections.abc import Callable
from typing import Any, Final

from .._common import qualified_name, unwrap_descriptor

__all__ = ("KEY_PREFIX", "KeyMaker", "UnkeyableError", "_BadCall")

KEY_PREFIX: Final = "resilience:fallback:"


class UnkeyableError(TypeError):
    """An argument has no stable representation, so no cache key can be built."""


class _BadCall(TypeError):
    """The arguments do not fit the signature: the call itself will say so."""


_EMPTY = inspect.Parameter.empty

# A repr showing a memory address ("<Pool at 0x7f...>") names the object in
# this process only: it cannot key values shared by a fleet.
_ADDRESS: Final = re.compile(r" at 0x[0-9a-fA-F]+")
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _prefixed(tag: str, text: str) -> str:
    # Length-prefixed, so a representation may contain any character and the
    # encoding stays unambiguous (collision-free) inside containers.
    return f"{tag}{len(text)}:{text}"


def _encode(value: Any) -> str:
    """A canonical text of ``value``: equal for equal arguments in every
    process (no ``hash()``, no memory addresses, dicts and sets sorted) and
    injective (different arguments never share a text)."""
    t = type(value)
    if t is str:
        return repr(value)
    if t is int:
        return f"i{value!r}"
    if value is None:
        return "N"
    if t is bool:
        return "T" if value else "F"
    if t is float:
        return f"f{value!r}"
    if t is bytes:
        return repr(value)
    if t is tuple:
        parts = []
        for v in value:  # the bound arguments: inline the common leaves
            tv = type(v)
            if tv is int:
                parts.append(f"i{v!r}")
            elif tv is str:
                parts.append(repr(v))
            else:
                parts.append(_encode(v))
        return "(" + ",".join(parts) + ")"
    if t is list:
        return "[" + ",".join([_encode(v) for v in value]) + "]"
    if t is dict:
        items = sorted(f"{_encode(k)}:{_encode(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if t is set or t is frozenset:
        tag = "s" if t is set else "z"
        return tag + "{" + ",".join(sorted(_encode(v) for v in value)) + "}"
    name = f"{t.__module__}.{t.__qualname__}"
    if isinstance(value, enum.Enum):
        return _prefixed("e", f"{name}.{value.name}")
    if type(value) is _DefaultMarker:
        return _prefixed("d", value.name)
    representation: Any = t.__repr__
    if representation is object.__repr__:
        raise UnkeyableError(
            f"{name} has no stable representation (its repr is its memory address)"
        )
    text = repr(value)
    if _ADDRESS.search(text) is not None:
        # Never the address itself in the message: it is reported once per text.
        raise UnkeyableError(
            f"{name} has no stable representation (its repr shows a memory address)"
        )
    return _prefixed("o", f"{name}:{text}")


class _DefaultMarker:
    """Stands in a key for a parameter's own default when that default has no
    stable text (a sentinel such as ``_UNSET = object()``): ``f(x)`` and
    ``f(x, limit=_UNSET)`` share the key ``limit=<default>``."""

    __slots__ = ("name",)

    def __init__(self, parameter: str) -> None:
        self.name = f"{parameter}=<default>"


def _keyable(value: Any) -> bool:
    try:
        _encode(value)
    except Exception:
        return False
    return True


class _Binder:
    """Maps a call's arguments to the function's parameters, in order, with
    defaults applied, so ``f(1)``, ``f(x=1)`` and ``f(1, limit=10)`` (when 10
    is the default) are one call. The common case (positional arguments only)
    skips :meth:`inspect.Signature.bind`."""

    __slots__ = ("_defaults", "_n", "_required", "_sig", "_simple")

    def __init__(self, sig: inspect.Signature | None) -> None:
        self._sig = sig
        defaults: list[Any] = []
        simple = sig is not None
        required = 0
        if sig is not None:
            for p in sig.parameters.values():
                if p.kind in _POSITIONAL:
                    defaults.append(p.default)
                    if p.default is _EMPTY:
                        required = len(defaults)
                else:
                    simple = False
        self._defaults = tuple(defaults)
        self._n = len(defaults)
        self._required = required
        self._simple = simple

    def values(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        if not kwargs and self._simple:
            n = len(args)
            if n == self._n:
                return args
            if self._required <= n < self._n:
                return args + self._defaults[n:]
        sig = self._sig
        if sig is None:
            return (args, kwargs)
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise _BadCall(str(exc)) from None
        bound.apply_defaults()
        return tuple(bound.arguments.values())


class _MarkingBinder(_Binder):
    """A :class:`_Binder` for a signature with unkeyable defaults (sentinels):
    a value that *is* such a default becomes a :class:`_DefaultMarker`."""

    __slots__ = ("_marks",)

    def __init__(
        self, sig: inspect.Signature, marks: tuple[tuple[int, Any, _DefaultMarker], ...]
    ) -> None:
        super().__init__(sig)
        self._marks = marks

    def values(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        values = super().values(args, kwargs)
        marked: list[Any] | None = None
        for index, default, marker in self._marks:
            if index < len(values) and values[index] is default:
                if marked is None:
                    marked = list(values)
                marked[index] = marker
        return values if marked is None else tuple(marked)


def _binder(sig: inspect.Signature | None) -> _Binder:
    """A binder for ``sig``; one that marks sentinel defaults if it has any."""
    if sig is None:
        return _Binder(sig)
    marks = tuple(
        (index, p.default, _DefaultMarker(p.name))
        for index, p in enumerate(sig.parameters.values())
        if p.default is not _EMPTY and not _keyable(p.default)
    )
    return _MarkingBinder(sig, marks) if marks else _Binder(sig)


def _signature(fn: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(unwrap_descriptor(fn))
    except (TypeError, ValueError):
        return None


def _drop_first(sig: inspect.Signature | None) -> inspect.Signature | None:
    if sig is None:
        return None
    params = list(sig.parameters.values())
    if params and params[0].kind in _POSITIONAL:
        return sig.replace(parameters=params[1:])
    return sig


_MEMO_TYPES: Final = frozenset({int, str, bytes, bool, type(None)})
_MEMO_SIZE: Final = 1024
_MODES_SIZE: Final = 256  # classes whose identity mode is remembered (bounded)


_LEFT_OUT: Final = "left out"  # the instance is left out of the key
_OWN_KEY: Final = "own key"  # its class has __resilience_key__ (attribute, property, method)
_OWN_REPR: Final = "own repr"  # its class defines a __repr__ of its own


def _identity_mode(cls: type) -> str:
    """How instances of ``cls`` are identified in keys (decided once per class)."""
    if issubclass(cls, type):
        return _LEFT_OUT  # cls of a classmethod: the qualified name says enough
    if hasattr(cls, "__resilience_key__"):
        return _OWN_KEY
    representation: Any = cls.__repr__
    return _LEFT_OUT if representation is object.__repr__ else _OWN_REPR


def _identity(instance: Any, modes: dict[type, str]) -> str | None:
    """The text that identifies ``instance`` in a cache key, or ``None`` when
    it has no stable identity (it is then left out of the key).

    ``__resilience_key__`` wins: an attribute (of the instance or its class)
    or a method, whose value or answer must be keyable; else a ``__repr__``
    its class defines, unless that repr shows a memory address. Classes
    (``cls``) are always left out. ``modes`` caches the per-class decision.
    """
    cls = type(instance)
    mode = modes.get(cls)
    if mode is None:
        if len(modes) >= _MODES_SIZE:
            modes.clear()  # bounded: never a strong reference to every class seen
        mode = modes[cls] = _identity_mode(cls)
    if mode is _OWN_KEY:
        own = instance.__resilience_key__
    else:
        attributes = getattr(instance, "__dict__", None)
        own = None if attributes is None else attributes.get("__resilience_key__")
        if own is None:
            if mode is _LEFT_OUT:
                return None
            text = repr(instance)
            if _ADDRESS.search(text) is not None:
                return None
            return "@" + _prefixed("o", f"{cls.__module__}.{cls.__qualname__}:{text}")
    if callable(own):
        own = own()
    return "@" + _prefixed("k", _encode(own))


class KeyMaker:
    """Builds the cache key of one call of one function.

    The default key is ``resilience:fallback:{module.qualname}:{digest}``,
    where the digest is a 128-bit BLAKE2b of a canonical, injective text of
    the bound arguments. For a method, ``self`` is part of that text when it
    identifies itself stably (see :func:`_identity`), and is left out
    otherwise; ``cls`` is always left out. A ``key`` callable, given the same
    arguments as the function, replaces it entirely.
    """

    __slots__ = (
        "_custom",
        "_full",
        "_memo",
        "_method",
        "_modes",
        "_name",
        "_pass_instance",
        "_prefix",
        "_tail",
        "one",
    )

    def __init__(self, fn: Any, custom: Callable[..., Any] | None) -> None:
        self._name = qualified_name(fn)
        self._prefix = f"{KEY_PREFIX}{self._name}:"
        self._custom = custom
        self._pass_instance = not isinstance(fn, staticmethod)
        sig = _signature(fn)  # of the function itself: self/cls included
        self._full = _binder(sig)
        self._tail: _Binder | None = None
        self._memo: dict[tuple[str | None, tuple[Any, ...], tuple[type, ...]], str] = {}
        # The commonest call of all, one int or str argument (of exactly those
        # types: 1 == 1.0 == True), has a memo of its own; 1 and "1" differ.
        self.one: dict[int | str, str] = {}
        self._modes: dict[type, str] = {}
        # Only for cache_key(), which is called without an instance: a plain
        # function whose first parameter is self/cls is taken for a method.
        first = next(iter(sig.parameters), None) if sig is not None else None
        self._method = isinstance(fn, classmethod) or (
            first in ("self", "cls") and not isinstance(fn, staticmethod)
        )

    def _tail_binder(self) -> _Binder:
        tail = self._tail
        if tail is None:
            tail = self._tail = _binder(_drop_first(self._full._sig))
        return tail

    def key(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The key of a call; ``instance`` is wrapt's (``None`` for a plain call).

        Raises:
            UnkeyableError: an argument has no stable representation.
            TypeError: the arguments do not fit the signature, or a ``key``
                callable returned something other than a string.
        """
        bound_method = instance is not None and self._pass_instance
        custom = self._custom
        if custom is None and not bound_method and not kwargs and len(args) == 1:
            arg = args[0]
            kind = type(arg)
            if kind is int or kind is str:
                memo = self.one
                found = memo.get(arg)
                if found is None:
                    found = self._digest(self._full.values(args, kwargs), None)
                    if len(memo) >= _MEMO_SIZE:
                        memo.clear()
                    memo[arg] = found
                return found
        if custom is not None:
            key = custom(instance, *args, **kwargs) if bound_method else custom(*args, **kwargs)
            if not isinstance(key, str):
                raise TypeError(f"the key callable returned {type(key).__name__}, not a str")
            return key
        if not bound_method:
            return self._digest(self._full.values(args, kwargs), None)
        binder = self._tail
        if binder is None:
            binder = self._full if self._full._sig is None else self._tail_binder()
        # The common case, an instance of a class that says nothing about its
        # identity, costs two lookups; _identity() decides the rest.
        identity = None
        if self._modes.get(type(instance)) is not _LEFT_OUT or "__resilience_key__" in getattr(
            instance, "__dict__", ()
        ):
            identity = _identity(instance, self._modes)
        return self._digest(binder.values(args, kwargs), identity)

    def _digest(self, values: tuple[Any, ...], identity: str | None) -> str:
        # Flat arguments of exact scalar types are memoised: equal tuples of
        # equal types always have the same text (floats are left out: 0.0 ==
        # -0.0 but their texts differ), and hashing dominates the cost.
        types = tuple(map(type, values))
        memoisable = _MEMO_TYPES.issuperset(types)
        if memoisable:
            found = self._memo.get((identity, values, types))
            if found is not None:
                return found
        try:
            text = _encode(values)
        except RecursionError:
            raise UnkeyableError(
                "the arguments are nested too deeply (or contain themselves)"
            ) from None
        if identity is not None:
            text = identity + text  # "@..." never starts an argument text
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16)
        key = self._prefix + digest.hexdigest()
        if memoisable:
            memo = self._memo
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            memo[identity, values, types] = key
        return key

    def key_of_call(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], instance: Any = None
    ) -> str:
        """The key of a call made with these arguments; ``instance`` is the
        bound instance, if any (without one, ``self``/``cls`` left out)."""
        if instance is not None:
            return self.key(instance, args, kwargs)
        if self._custom is not None:
            return self.key(None, args, kwargs)
        binder = self._tail_binder() if self._method else self._full
        return self._digest(binder.values(args, kwargs), None)
