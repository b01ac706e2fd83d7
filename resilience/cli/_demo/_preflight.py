"""Checks of ``resilience demo``'s options made before anything starts: a
bad value is one line naming it, not a traceback after a full run."""

from __future__ import annotations

import math
import os
import socket
import tempfile
import urllib.parse
from pathlib import Path

from ..._redact import redact_url
from ._dsn import dsn_host_port
from ._plan import MIN_DURATION, DemoOptions

__all__ = (
    "MAX_CONCURRENCY",
    "MAX_DURATION",
    "MAX_RATE",
    "MAX_WORKERS",
    "OptionError",
    "check_options",
)

MAX_DURATION = 3600.0
"""The longest run the demo accepts (seconds): it is a demo, not a soak test."""
MAX_RATE = 5000.0
"""Requests per second at most: more only measures the load generator."""
MAX_CONCURRENCY = 10_000
MAX_WORKERS = 16
REDIS_TIMEOUT = 2.0
"""Seconds allowed to reach --redis-url and hear PONG."""


class OptionError(ValueError):
    """A demo option that cannot work; the message names it and its value."""


def check_options(options: DemoOptions) -> None:
    """Raise :class:`OptionError` for the first option that cannot work."""
    _check_number("--duration", options.duration, MIN_DURATION, MAX_DURATION)
    _check_number("--rate", options.rate, 0.0, MAX_RATE, above=True)
    if not 1 <= options.concurrency <= MAX_CONCURRENCY:
        raise OptionError(
            f"--concurrency must be between 1 and {MAX_CONCURRENCY:,}, got {options.concurrency}"
        )
    if not 1 <= options.workers <= MAX_WORKERS:
        raise OptionError(f"--workers must be between 1 and {MAX_WORKERS}, got {options.workers}")
    if options.dsn is not None:
        try:
            dsn_host_port(options.dsn)
        except ValueError as exc:
            raise OptionError(f"--dsn {redact_url(options.dsn)}: {exc}") from None
    check_out(options.out)
    if options.redis_url is not None:
        check_redis(options.redis_url)


def _check_number(flag: str, value: float, low: float, high: float, *, above: bool = False) -> None:
    if not math.isfinite(value):
        raise OptionError(f"{flag} must be a finite number, got {value}")
    if value > high or (value <= low if above else value < low):
        bound = f"> {low:g}" if above else f">= {low:g}"
        raise OptionError(f"{flag} must be {bound} and <= {high:g}, got {value:g}")


def check_out(out: Path) -> None:
    """``out`` is (or can be made) a directory this process can write in."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OptionError(f"--out {out}: cannot create it: {exc.strerror or exc}") from None
    if not out.is_dir():
        raise OptionError(f"--out {out}: not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=out, prefix=".resilience-demo-")
    except OSError as exc:
        raise OptionError(f"--out {out}: cannot write there: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


def check_redis(url: str) -> None:
    """``url`` is a Redis URL, and a Redis answers PING there (after AUTH if
    the URL has a password) within :data:`REDIS_TIMEOUT` seconds."""
    shown = redact_url(url)
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or 6379
    except ValueError as exc:
        raise OptionError(f"--redis-url {shown}: not a valid URL ({exc})") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise OptionError(f"--redis-url {shown}: expected redis://HOST[:PORT][/DB]")
    if parts.scheme == "rediss":
        raise OptionError(f"--redis-url {shown}: TLS (rediss://) is not supported by the demo")
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise OptionError(f"--redis-url {shown}: the database must be a number, got {db!r}")
    commands = []
    if parts.password:
        auth = [parts.username, parts.password] if parts.username else [parts.password]
        commands.append(["AUTH", *auth])
    commands.append(["PING"])
    try:
        with socket.create_connection((parts.hostname, port), timeout=REDIS_TIMEOUT) as sock:
            sock.settimeout(REDIS_TIMEOUT)
            reader = sock.makefile("rb")
            for command in commands:
                sock.sendall(_resp(command))
                line = reader.readline(512).rstrip(b"\r\n")
                if not line.startswith((b"+OK", b"+PONG")):
                    reason = line.decode("utf-8", "replace")[:80] or "no answer"
                    raise OptionError(f"--redis-url {shown}: Redis said {reason}")
    except TimeoutError:
        raise OptionError(f"--redis-url {shown}: no answer within {REDIS_TIMEOUT:g} s") from None
    except OSError as exc:
        raise OptionError(f"--redis-url {shown}: cannot connect: {exc.strerror or exc}") from None


def _resp(command: list[str]) -> bytes:
    out = [f"*{len(command)}\r\n".encode()]
    for word in command:
        data = word.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)
