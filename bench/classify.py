"""What classifying an error costs, next to what raising it costs, in one run.

    python bench/classify.py [--calls N] [--rounds R]

``classify`` runs only when a call fails (the breaker's judge, ``@retry``,
``@fallback``); the success path never calls it. Each row: nanoseconds per
``classify(exc)`` (median of R rounds, rows interleaved so drift hits all
alike), and, as the baseline from the same run, raising and catching a
fresh exception. Needs the dev extras (httpx, SQLAlchemy, asyncpg). Never
asserted in tests.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable

import asyncpg.exceptions
import httpx
import redis.exceptions
import sqlalchemy.exc

from resilience import classify


def _raise_and_catch() -> None:
    try:
        raise ConnectionRefusedError
    except ConnectionRefusedError:
        pass


def _cases() -> dict[str, Callable[[], object]]:
    request = httpx.Request("GET", "http://upstream.test/")
    status_404 = httpx.HTTPStatusError(
        "404", request=request, response=httpx.Response(404, request=request)
    )
    orig = asyncpg.exceptions.PostgresSyntaxError("syntax error")
    wrapped = sqlalchemy.exc.ProgrammingError.instance("SELEC 1", None, orig, Exception)
    try:
        try:
            raise ConnectionRefusedError
        except ConnectionRefusedError as cause:
            raise RuntimeError("repository failed") from cause
    except RuntimeError as exc:
        chained = exc
    errors: dict[str, BaseException] = {
        "ConnectionRefusedError": ConnectionRefusedError(),
        "asyncpg PostgresSyntaxError (42601)": orig,
        "KeyError (unknown)": KeyError("k"),
        "httpx.ConnectError": httpx.ConnectError("refused"),
        "httpx HTTPStatusError 404": status_404,
        "redis ResponseError": redis.exceptions.ResponseError("ERR unknown command"),
        "SQLAlchemy ProgrammingError (.orig 42601)": wrapped,
        "RuntimeError from ConnectionRefusedError": chained,
    }
    cases: dict[str, Callable[[], object]] = {
        "baseline: raise + except (no classify)": _raise_and_catch
    }
    for name, exc in errors.items():
        cases[name] = lambda exc=exc: classify(exc)  # type: ignore[misc]
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    cases = _cases()
    for fn in cases.values():
        fn()  # warm the per-type caches
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            for _ in range(args.calls):
                fn()
            samples[name].append((time.perf_counter() - start) / args.calls * 1e9)
    print(
        f"python {sys.version.split()[0]} on {platform.machine()}, {args.calls} calls x "
        f"{args.rounds} rounds (median); the machine may be shared: compare rows, not runs"
    )
    print(f"{'case':<45} {'ns/call':>8}")
    for name, values in samples.items():
        print(f"{name:<45} {statistics.median(values):>8.0f}")


if __name__ == "__main__":
    main()
