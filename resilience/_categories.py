"""Error categories, outcomes, and the default classifier.

Classification is by exception type and SQLSTATE (read by duck typing from an
``exc.sqlstate`` attribute, as asyncpg exposes it), never by message text, so
no database driver is imported here.

The outcome of an error (what a breaker records) is decided in this order:

1. ``CancelledError``, ``GeneratorExit``, ``KeyboardInterrupt``, ``SystemExit``
   (anything not an ``Exception``) and the library's own rejections
   (``CircuitOpenError`` from an inner breaker, ``BulkheadFullError``): ignored.
2. the breaker's ``ignore`` types: ignored.
3. the category policy (``classify`` or the breaker's ``classifier``).
4. ``record``: an error the policy calls a failure but that is not a
   ``record`` type counts as a success (the dependency answered).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

from ._clients import chain_sqlstate, classify_error, register_category
from ._states import ErrorCategory, Outcome

__all__ = (
    "DEFAULT_POLICY",
    "ErrorCategory",
    "Judge",
    "Outcome",
    "classify",
    "is_transient",
    "judge_for",
    "outcome_of",
    "register_category",
)

logger = logging.getLogger("resilience")


DEFAULT_POLICY: Final[Mapping[ErrorCategory, Outcome]] = MappingProxyType(
    {
        ErrorCategory.CONNECTION_ERROR: Outcome.FAILURE,
        ErrorCategory.TIMEOUT_ERROR: Outcome.FAILURE,
        ErrorCategory.RESOURCE_ERROR: Outcome.FAILURE,
        ErrorCategory.AUTHENTICATION_ERROR: Outcome.IGNORED,
        ErrorCategory.DATABASE_ERROR: Outcome.FAILURE,
        ErrorCategory.QUERY_ERROR: Outcome.IGNORED,
        ErrorCategory.UNKNOWN_ERROR: Outcome.FAILURE,
    }
)

# Per-transaction DATABASE_ERRORs (serialization failure, deadlock): the default
# policy does not hold them against the server, and @retry retries them.
TRANSACTION_SQLSTATES: Final = frozenset({"40001", "40P01"})


def classify(exc: BaseException) -> ErrorCategory:
    """The default classifier: the :class:`ErrorCategory` of ``exc``.

    Follows the error to its causes (SQLAlchemy's ``.orig``, ``__cause__``,
    ``__context__``); on each layer, outermost first, the first rule that
    matches decides: a type registered with :func:`register_category`
    (integrations register their drivers' types); a SQLSTATE
    (``exc.sqlstate`` or ``exc.pgcode``: class 08 and 57P01-57P05
    connection, 57014 timeout, 53 resource, 28 authentication, 42/22/23 and
    other statement classes query, 3D000, 40, 58, XX and other server
    classes database); the client families (SQLAlchemy, psycopg, redis-py,
    httpx, aiohttp: see the "Clients" page), recognised without importing
    them; ``TimeoutError`` timeout; ``OSError`` (``ConnectionError``
    included) connection; ``MemoryError`` resource. Then the DB-API
    fallbacks (``OperationalError`` without a SQLSTATE connection,
    ``ProgrammingError`` query, ...); anything else unknown. Never the
    message text.
    """
    return classify_error(exc)


def _sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE on ``exc`` or on its causes (SQLAlchemy's ``.orig``, ...)."""
    return chain_sqlstate(exc)


# The outcome an inner breaker gave an error travels on the exception itself, so
# an outer @fallback, @chain or @retry honours the innermost breaker's settings.
_OUTCOME_ATTR: Final = "__resilience_outcome__"

_NOT_COUNTED: tuple[type[BaseException], ...] = ()


def _rejections() -> tuple[type[BaseException], ...]:
    global _NOT_COUNTED
    if not _NOT_COUNTED:
        from ._errors import BulkheadFullError, CircuitOpenError

        _NOT_COUNTED = (CircuitOpenError, BulkheadFullError)
    return _NOT_COUNTED


class Judge:
    """Turns an exception into an :class:`Outcome` for one breaker's settings."""

    __slots__ = ("_classifier", "_db_override", "_ignore", "_policy", "_record")

    def __init__(
        self,
        *,
        ignore: tuple[type[BaseException], ...] = (),
        record: tuple[type[BaseException], ...] = (Exception,),
        policy: Mapping[ErrorCategory, Outcome] | None = None,
        classifier: Callable[[BaseException], ErrorCategory] | None = None,
    ) -> None:
        explicit = dict(policy or {})
        self._ignore = ignore
        self._record = record
        self._policy = {**DEFAULT_POLICY, **explicit}
        self._classifier = classifier or classify
        self._db_override = ErrorCategory.DATABASE_ERROR in explicit

    def __call__(self, exc: BaseException) -> tuple[Outcome, ErrorCategory | None]:
        """The outcome and category of ``exc`` (category ``None`` when not classified)."""
        if not isinstance(exc, Exception) or isinstance(exc, _rejections()):
            return Outcome.IGNORED, None
        if self._ignore and isinstance(exc, self._ignore):
            return Outcome.IGNORED, None
        try:
            category = ErrorCategory(self._classifier(exc))
        except Exception:
            logger.exception("classifier failed on %s; treating it as UNKNOWN_ERROR", type(exc))
            category = ErrorCategory.UNKNOWN_ERROR
        outcome = self._policy[category]
        if (
            category is ErrorCategory.DATABASE_ERROR
            and not self._db_override
            and _sqlstate_of(exc) in TRANSACTION_SQLSTATES
        ):
            outcome = Outcome.IGNORED
        if (outcome is Outcome.FAILURE or outcome is Outcome.TRIP) and not isinstance(
            exc, self._record
        ):
            outcome = Outcome.SUCCESS
        return outcome, category

    def judge_and_mark(self, exc: BaseException) -> tuple[Outcome, ErrorCategory | None]:
        """Like calling the judge, and note the outcome on ``exc`` if none is there yet."""
        verdict = self(exc)
        if getattr(exc, _OUTCOME_ATTR, None) is None:
            try:
                setattr(exc, _OUTCOME_ATTR, verdict[0])
            except (AttributeError, TypeError):
                pass  # an exception type that takes no attributes: outer layers re-judge
        return verdict


DEFAULT_JUDGE: Final = Judge()

_judges: dict[tuple[object, ...], Judge] = {}


def judge_for(config: object, classifier: Callable[[BaseException], ErrorCategory] | None) -> Judge:
    """A judge for a config's ``ignore``/``record``/``category_policy``, shared
    between breakers with the same settings (most breakers use the defaults)."""
    ignore = getattr(config, "ignore")  # noqa: B009 - avoids importing _config here
    record = getattr(config, "record")  # noqa: B009
    policy = getattr(config, "category_policy")  # noqa: B009
    key = (ignore, record, tuple(policy.items()), classifier)
    judge = _judges.get(key)
    if judge is None:
        judge = Judge(ignore=ignore, record=record, policy=policy, classifier=classifier)
        if len(_judges) < 1024:  # bounded: unusual settings simply get their own
            _judges[key] = judge
    return judge


_TRANSIENT_CATEGORIES: Final = frozenset(
    {ErrorCategory.CONNECTION_ERROR, ErrorCategory.TIMEOUT_ERROR, ErrorCategory.RESOURCE_ERROR}
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying: the default rule of ``@retry``.

    True for connection, timeout and resource errors (``classify``) and for
    per-transaction database errors (SQLSTATE 40001 serialization failure,
    40P01 deadlock). False for everything else: ``CircuitOpenError`` and
    ``BulkheadFullError`` (the library shedding load; retrying defeats it),
    authentication and query errors (they fail the same way every time),
    other database and unknown errors, and anything not an ``Exception``
    (cancellation included).
    """
    if not isinstance(exc, Exception) or isinstance(exc, _rejections()):
        return False
    category = classify(exc)
    if category in _TRANSIENT_CATEGORIES:
        return True
    return category is ErrorCategory.DATABASE_ERROR and _sqlstate_of(exc) in TRANSACTION_SQLSTATES


def outcome_of(exc: BaseException) -> Outcome:
    """The outcome the innermost breaker gave ``exc``; without one, the default policy's."""
    marked = getattr(exc, _OUTCOME_ATTR, None)
    if isinstance(marked, Outcome):
        return marked
    return DEFAULT_JUDGE(exc)[0]
