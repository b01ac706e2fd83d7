"""Reading and rewriting PostgreSQL DSNs (URL or ``key=value`` form)."""

from __future__ import annotations

import re
import urllib.parse

__all__ = ("dsn_host_port", "dsn_with_host_port", "plain_tcp")

_KV = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def _is_url(dsn: str) -> bool:
    return dsn.startswith(("postgres://", "postgresql://"))


def _kv(dsn: str) -> dict[str, str]:
    return {k: v.strip("'") for k, v in _KV.findall(dsn)}


def dsn_host_port(dsn: str) -> tuple[str, int]:
    """The TCP host and port a DSN points at (default ``127.0.0.1:5432``).

    Raises:
        ValueError: the DSN names a Unix socket, which a TCP proxy cannot front.
    """
    if _is_url(dsn):
        parts = urllib.parse.urlsplit(dsn)
        query = urllib.parse.parse_qs(parts.query)
        host = query.get("host", [parts.hostname or ""])[0]
        port = int(query.get("port", [str(parts.port or 5432)])[0])
    else:
        kv = _kv(dsn)
        host = kv.get("host", "")
        port = int(kv.get("port", "5432"))
    if host.startswith("/"):
        raise ValueError(f"the DSN names a Unix socket ({host}); the demo needs TCP")
    return host or "127.0.0.1", port


def dsn_with_host_port(dsn: str, host: str, port: int) -> str:
    """The same DSN pointing at ``host:port`` (credentials and options kept)."""
    if _is_url(dsn):
        parts = urllib.parse.urlsplit(dsn)
        query = [
            (k, v)
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            if k not in ("host", "port")
        ]
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
        return urllib.parse.urlunsplit(
            (parts.scheme, netloc, parts.path, urllib.parse.urlencode(query), "")
        )
    kv = _kv(dsn)
    kv["host"] = host
    kv["port"] = str(port)
    user = urllib.parse.quote(kv.pop("user", ""), safe="")
    password = urllib.parse.quote(kv.pop("password", ""), safe="")
    database = urllib.parse.quote(kv.pop("dbname", ""), safe="")
    kv.pop("host")
    kv.pop("port")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    options = urllib.parse.urlencode(kv)
    return f"postgresql://{auth}{host}:{port}/{database}" + (f"?{options}" if options else "")


def plain_tcp(dsn: str) -> str:
    """The URL DSN with ``sslmode=disable`` unless it names an ``sslmode``.

    The demo's pools talk to the server over loopback through a proxy; with
    the default ``prefer``, every connect attempt starts with a TLS request,
    and asyncpg leaves an unretrieved future behind when such an attempt is
    cut off by a black hole.
    """
    parts = urllib.parse.urlsplit(dsn)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "sslmode" for k, _ in query):
        return dsn
    query.append(("sslmode", "disable"))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
