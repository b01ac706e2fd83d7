"""One way to hide secrets in connection strings, for the whole project.

Everything that prints, logs or reports a DSN or a URL (the asyncpg pool, the
Redis store, the CLI) goes through :func:`redact_url`, so a password never
reaches a terminal, a log line, a status endpoint or a metrics label.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ("redact_url",)

_QUERY_SECRET = re.compile(
    r"(?i)((?:^|[?&;])(?:ssl)?(?:password|passwd|pass|pwd|secret|token|key)=)[^&;#]*"
)
_KV_SECRET = re.compile(r"(?i)(\b(?:ssl)?(?:password|passwd)\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)")
_MASK: Final = "***"


def redact_url(url: str | None) -> str:
    """``url`` with every password replaced by ``***``.

    Handles URLs (``postgresql://user:secret@host/db`` becomes
    ``postgresql://user:***@host/db``; ``redis://:secret@host`` becomes
    ``redis://:***@host``; ``?password=``, ``sslpassword=`` and similar
    query parameters are masked too) and libpq ``key=value`` strings.
    ``None`` gives ``""``.
    """
    if not url:
        return ""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _KV_SECRET.sub(rf"\g<1>{_MASK}", url)
    # The authority ends at the first '?' (a password may hold '/' or '@').
    head, qmark, query = rest.partition("?")
    userinfo, at, hostpart = head.rpartition("@")
    if at:
        user, colon, _secret = userinfo.partition(":")
        head = f"{user}:{_MASK}@{hostpart}" if colon else f"{user}@{hostpart}"
    if qmark:
        query = _QUERY_SECRET.sub(rf"\g<1>{_MASK}", query)
    return f"{scheme}://{head}{qmark}{query}"
