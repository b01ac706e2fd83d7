"""``resilience demo``: a real web app under load through a database outage,
with breakers and without, live in the terminal and as a saved report.

Everything here imports the demo's third-party packages (the ``demo`` extra)
only when the demo runs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ._plan import DemoOptions
from ._preflight import OptionError, check_options

__all__ = ("DEMO_PACKAGES", "missing_packages", "run_demo")

DEMO_PACKAGES = ("asyncpg", "aiocache", "starlette", "uvicorn", "rich", "matplotlib")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def missing_packages() -> list[str]:
    """The demo's packages that are not installed."""
    return [name for name in DEMO_PACKAGES if importlib.util.find_spec(name) is None]


def _options(args: argparse.Namespace) -> DemoOptions:
    return DemoOptions(
        duration=args.duration,
        dsn=args.dsn,
        redis_url=args.redis_url,
        out=Path(args.out),
        rate=args.rate,
        concurrency=args.concurrency,
        seed=args.seed,
        live=sys.stdout.isatty() if args.live is None else args.live,
        workers=getattr(args, "workers", 1),
    )


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit status (0 after a clean run)."""
    missing = missing_packages()
    if missing:
        print(
            f"resilience demo needs {', '.join(missing)}: "
            "install resilience-patterns[demo] (pip install 'resilience-patterns[demo]')",
            file=sys.stderr,
        )
        return EXIT_USAGE
    options = _options(args)
    try:
        check_options(options)
    except OptionError as bad:
        print(f"resilience demo: {bad}", file=sys.stderr)
        return EXIT_USAGE

    from .live import make_view

    view = make_view(options.live)
    # --duration counts from the command's start: the interpreter's start-up
    # and imports so far, measured by their CPU time (they are CPU-bound).
    began = time.monotonic() - time.process_time()
    try:
        return asyncio.run(_main(options, view, began))
    except KeyboardInterrupt:
        view.close()
        print(
            "resilience demo: interrupted; everything it started has been stopped", file=sys.stderr
        )
        return EXIT_INTERRUPTED
    except asyncio.CancelledError:  # SIGTERM
        view.close()
        print(
            "resilience demo: terminated; everything it started has been stopped", file=sys.stderr
        )
        return 128 + signal.SIGTERM
    except Exception as exc:
        view.close()
        if not isinstance(exc, RuntimeError | OSError):
            traceback.print_exc()  # a bug: show where
        print(f"resilience demo: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        view.close()


async def _fleet_main(options: DemoOptions, view: Any, began: float) -> int:
    from .fleet import rows, run_fleet

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        report = await run_fleet(options, view, began)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
    view.close()
    table = rows(report)
    width = max(len(r[0]) for r in table)
    print(f"fleet act, {options.workers} workers:")
    print(f"  {'':{width}}  {'shared through Redis':>20}  each process on its own")
    for name, fleet, local in table:
        print(f"  {name:{width}}  {fleet:>20}  {local}")
    print(f"report: {options.out / 'fleet-report.md'}, {options.out / 'fleet-report.json'}")
    print(f"finished in {time.monotonic() - began:.1f} s; everything the demo started is stopped")
    return EXIT_OK


async def _main(options: DemoOptions, view: Any, began: float) -> int:
    if options.workers > 1:
        return await _fleet_main(options, view, began)
    from .report import build_report, summary_rows, write_report
    from .scenario import run_scenario

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        records, plan, settings = await run_scenario(options, view, began)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
    view.close()
    report = build_report(records, plan=plan, settings=settings)
    report["settings"]["elapsed_before_report_seconds"] = round(time.monotonic() - began, 2)
    # matplotlib takes a second or so to draw: in a thread, so Ctrl-C still
    # reaches the event loop meanwhile.
    paths = await asyncio.to_thread(write_report, report, records, options.out)
    _print_summary(summary_rows(report), options.live)
    print(f"report: {', '.join(str(p) for p in paths)}")
    elapsed = time.monotonic() - began
    print(f"finished in {elapsed:.1f} s; everything the demo started is stopped")
    return EXIT_OK


def _print_summary(rows: list[tuple[str, str, str]], live: bool) -> None:
    if live:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="resilience demo: summary", title_justify="left")
        table.add_column("")
        table.add_column("with breakers", justify="right", style="green")
        table.add_column("without breakers", justify="right", style="red")
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    width = max(len(r[0]) for r in rows)
    w1 = max(len("with breakers"), *(len(r[1]) for r in rows))
    print("summary:")
    print(f"  {'':{width}}  {'with breakers':>{w1}}  without breakers")
    for name, with_, without in rows:
        print(f"  {name:{width}}  {with_:>{w1}}  {without}")
