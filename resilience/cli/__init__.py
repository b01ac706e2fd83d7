"""The ``resilience`` command line: ``resilience demo`` and ``resilience status URL``.

Only the standard library is imported here, so ``resilience --help`` works
without any extra installed; each subcommand imports what it needs when it
runs (the demo needs the ``demo`` extra: ``pip install 'resilience-patterns[demo]'``).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ("main",)

DEMO_EPILOG = """\
The demo starts a throwaway PostgreSQL (the `pgserver` package from the demo
extra, or initdb/pg_ctl on PATH) unless --dsn is given, seeds a small schema in
a schema of its own (dropped afterwards), serves a small Starlette app on
127.0.0.1 and drives it with HTTP load through an outage injected by
resilience.testing.FaultProxy: first with circuit breakers, fallbacks and
failover, then with a plain app. It writes report.md, report.html,
report.json and timeline.png to --out and exits 0 after a clean run.
"""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or not value > 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (no usage block): the line
    names the option and the bad value; exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``resilience`` command."""
    from .. import __version__

    parser = _Parser(
        prog="resilience",
        description="resilience-patterns: circuit breakers, fallbacks and failover for asyncio.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run a web app under load through a database outage, with and without breakers",
        description="Run a real web app backed by PostgreSQL under HTTP load through an "
        "injected outage, once with breakers and once without, live in the terminal, "
        "and save a report.",
        epilog=DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--duration",
        type=_positive_float,
        default=60.0,
        metavar="SECONDS",
        help="bound on the whole run, setup and report included (default: 60; at least 12)",
    )
    demo.add_argument(
        "--dsn",
        default=None,
        help="an existing PostgreSQL to use (default: start a throwaway one); the demo "
        "works in a schema of its own and drops it afterwards",
    )
    demo.add_argument(
        "--redis-url",
        default=None,
        metavar="URL",
        help="use this Redis as the fallback cache (default: an in-memory cache)",
    )
    demo.add_argument(
        "--out",
        default="demo-report",
        metavar="DIR",
        help="where the report goes (default: ./demo-report)",
    )
    demo.add_argument(
        "--rate",
        type=_positive_float,
        default=200.0,
        metavar="RPS",
        help="requests per second sent to the app, open loop (default: 200)",
    )
    demo.add_argument(
        "--concurrency",
        type=_positive_int,
        default=256,
        metavar="N",
        help="most requests in flight at once (default: 256)",
    )
    demo.add_argument("--seed", type=int, default=1, help="random seed of the load (default: 1)")
    demo.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="with N >= 2, the fleet act instead: N worker processes through the same "
        "outage, with breaker state shared through Redis (--redis-url, the local one, or a "
        "throwaway one) and without (default: 1, the single-process demo)",
    )
    live = demo.add_mutually_exclusive_group()
    live.add_argument(
        "--no-live",
        dest="live",
        action="store_false",
        default=None,
        help="plain line output instead of the live view (the default when stdout "
        "is not a terminal)",
    )
    live.add_argument("--live", dest="live", action="store_true", help="force the live view")

    status = commands.add_parser(
        "status",
        help="print the circuits of a running app from its status endpoint",
        description="Fetch URL (a JSON list of breaker status dicts, as "
        "registry.snapshot() returns) and print it as a table.",
    )
    status.add_argument("url", metavar="URL", help="the app's status endpoint")
    status.add_argument(
        "--timeout",
        type=_positive_float,
        default=5.0,
        metavar="SECONDS",
        help="bound on the whole request, body included (default: 5)",
    )
    status.add_argument("--json", action="store_true", help="print the JSON as received")
    status.add_argument(
        "--token",
        default=None,
        help="send 'Authorization: Bearer TOKEN' (the middleware's status_guard); default "
        "the RESILIENCE_STATUS_TOKEN environment variable",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``resilience`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        return run_demo(args)
    if args.command == "status":
        from ._status import run_status

        return run_status(args.url, timeout=args.timeout, raw=args.json, token=args.token)
    parser.print_help(sys.stderr)
    return 2
