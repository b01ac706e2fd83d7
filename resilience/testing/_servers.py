"""Throwaway PostgreSQL and Redis servers, for test runs and the demo.

Each one runs as a child process on a free loopback port, with its files in a
private temporary directory; ``stop()`` kills it and removes the directory.
Nothing here touches a server it did not start.

- :class:`ThrowawayPostgres` needs ``initdb``, ``pg_ctl`` and ``postgres``:
  on ``PATH``, under ``/usr/lib/postgresql/*/bin``, or from the optional
  ``pgserver`` package (which bundles them).
- :class:`ThrowawayRedis` needs ``redis-server`` on ``PATH``.
- :func:`postgres_available` / :func:`redis_available` tell whether a server
  answers; :func:`ensure_postgres` / :func:`ensure_redis` use a server if it
  answers and start a throwaway one otherwise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

__all__ = (
    "ThrowawayPostgres",
    "ThrowawayRedis",
    "ensure_postgres",
    "ensure_redis",
    "postgres_available",
    "redis_available",
)

# Where distributions put versioned PostgreSQL binaries (Debian/Ubuntu, then RHEL).
_PG_BIN_GLOBS: tuple[str, ...] = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin")
_LOOPBACK = "127.0.0.1"
_BIND_ATTEMPTS = 3  # a free port can be taken between probing and binding


class _Failed(RuntimeError):
    """A start attempt failed; ``port_taken`` says whether another port may help."""

    def __init__(self, message: str, *, port_taken: bool = False) -> None:
        super().__init__(message)
        self.port_taken = port_taken


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Wait up to ``grace`` seconds for ``proc`` to exit, then SIGKILL it."""
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class _ChildServer:
    """A server process we own, in a temp dir, with a bounded start and a sure stop."""

    _kind = "server"

    def __init__(self, *, start_timeout: float) -> None:
        if not start_timeout > 0:
            raise ValueError(
                f"{type(self).__name__}: start_timeout must be > 0, got {start_timeout!r}"
            )
        self._start_timeout = float(start_timeout)
        self._port: int | None = None
        self._tmpdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        # Also runs at interpreter exit, so a crashed test run leaves no server behind.
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @property
    def host(self) -> str:
        """The loopback address the server listens on."""
        return _LOOPBACK

    @property
    def port(self) -> int:
        """The server's TCP port.

        Raises:
            RuntimeError: the server is not running.
        """
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not running; call start() first")
        return self._port

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server and wait until it answers (at most ``start_timeout``).

        Raises:
            RuntimeError: the binaries are missing, or the server did not come
                up in time (the message carries the end of its log).
        """
        if self._finalizer is not None and self._finalizer.alive:
            raise RuntimeError(f"{type(self).__name__} is already running")
        deadline = time.monotonic() + self._start_timeout
        command = self._resolve()  # before making any directory: fail fast and clean
        for attempt in range(1, _BIND_ATTEMPTS + 1):
            tmpdir = Path(
                tempfile.mkdtemp(prefix=f"resilience-{self._kind}-", dir=self._tmp_base())
            )
            self._tmpdir = tmpdir
            # Until _launch has a process to own, the finalizer only removes the directory.
            self._finalizer = weakref.finalize(self, shutil.rmtree, tmpdir, True)
            try:
                self._launch(command, tmpdir, _free_port(), deadline)
                return
            except _Failed as error:
                self.stop()
                if not error.port_taken or attempt == _BIND_ATTEMPTS:
                    raise RuntimeError(str(error)) from None
            except BaseException:
                self.stop()
                raise

    def stop(self) -> None:
        """Kill the server and remove its directory; safe to call more than once."""
        if self._finalizer is not None:
            self._finalizer()
        self._proc = None
        self._port = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        # start() blocks, so it runs in a thread, which a cancellation cannot stop:
        # whoever comes last (the thread, or the cancelled caller) stops the server.
        abandoned = threading.Event()
        busy = threading.Lock()

        def start_unless_abandoned() -> None:
            with busy:
                self.start()
                if abandoned.is_set():
                    self.stop()

        try:
            await asyncio.to_thread(start_unless_abandoned)
        except asyncio.CancelledError:
            abandoned.set()
            if busy.acquire(blocking=False):
                try:
                    self.stop()
                finally:
                    busy.release()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        state = f"port={self._port}" if self.running else "stopped"
        return f"{type(self).__name__}({state})"

    # -- for subclasses --------------------------------------------------------

    def _resolve(self) -> Any:
        """Find the binaries, or raise RuntimeError saying what is missing."""
        raise NotImplementedError

    def _tmp_base(self) -> str | None:
        return None

    def _launch(self, command: Any, tmpdir: Path, port: int, deadline: float) -> None:
        raise NotImplementedError

    def _own(self, cleanup: Callable[..., None], *args: Any) -> None:
        """Replace the directory-only finalizer by one that also stops the process."""
        assert self._finalizer is not None
        self._finalizer.detach()
        # The arguments must not reference self, or the finalizer would keep it alive.
        self._finalizer = weakref.finalize(self, cleanup, *args)

    def _wait_until(self, ready: Callable[[], bool], deadline: float, log: Path, what: str) -> None:
        proc = self._proc
        assert proc is not None
        while True:
            if proc.poll() is not None:
                text = _tail(log)
                taken = bool(re.search(r"address already in use|could not bind", text, re.I))
                raise _Failed(
                    f"{what} exited with code {proc.returncode} while starting:\n{text}",
                    port_taken=taken,
                )
            if ready():
                return
            if time.monotonic() >= deadline:
                raise _Failed(
                    f"{what} did not answer within {self._start_timeout:g} s:\n{_tail(log)}"
                )
            time.sleep(0.05)


# -- PostgreSQL -------------------------------------------------------------------


class _PgCommand:
    __slots__ = ("bindir", "run_as")

    def __init__(self, bindir: Path, run_as: tuple[str, int, int] | None) -> None:
        self.bindir = bindir
        self.run_as = run_as  # (name, uid, gid) when we are root

    def popen_kwargs(self) -> dict[str, Any]:
        if self.run_as is None:
            return {}
        _, uid, gid = self.run_as
        return {"user": uid, "group": gid, "extra_groups": []}

    def exe(self, name: str) -> str:
        return str(self.bindir / name)


def _pgserver_bindir() -> Path | None:
    """The binaries bundled by the optional ``pgserver`` package, if installed.

    Imported only when no system PostgreSQL is found; its import-time warnings
    (platformdirs complaining about XDG_RUNTIME_DIR) are not the user's concern.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH  # optional dependency
    except Exception:  # not installed, or its layout changed
        return None
    return Path(POSTGRES_BIN_PATH)


def _pg_bindir() -> Path:
    """The directory holding initdb, pg_ctl and postgres, or RuntimeError."""
    needed = ("initdb", "pg_ctl", "postgres")
    candidates: list[Path] = []
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).resolve().parent)
    found: list[str] = []
    for pattern in _PG_BIN_GLOBS:
        found.extend(glob.glob(pattern))

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path))

    candidates.extend(Path(p) for p in sorted(found, key=version, reverse=True))
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in needed):
            return bindir
    bundled = _pgserver_bindir()
    if bundled is not None and all(os.access(bundled / name, os.X_OK) for name in needed):
        return bundled
    raise RuntimeError(
        "ThrowawayPostgres needs the PostgreSQL server binaries (initdb, pg_ctl, postgres): "
        "none found on PATH, under " + ", ".join(_PG_BIN_GLOBS) + ", or from the 'pgserver' "
        "package. Install PostgreSQL (e.g. apt-get install postgresql) or "
        "'pip install pgserver', or point the tests at a server with a DSN."
    )


def _unprivileged_user() -> tuple[str, int, int] | None:
    """The user to run PostgreSQL as when we are root (it refuses root), else None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return name, entry.pw_uid, entry.pw_gid
    raise RuntimeError(
        "ThrowawayPostgres is running as root and PostgreSQL refuses root, but there is "
        "no 'postgres' or 'nobody' user to run it as"
    )


def _stop_postgres(proc: subprocess.Popen[bytes], command: _PgCommand, data: Path) -> None:
    if proc.poll() is None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [
                    command.exe("pg_ctl"),
                    "stop",
                    "-D",
                    str(data),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    "10",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
                check=False,
                **command.popen_kwargs(),
            )
        _terminate(proc, grace=5)


class ThrowawayPostgres(_ChildServer):
    """A private PostgreSQL server for one test session or demo run.

    It runs ``postgres`` from the first of: ``PATH``, ``/usr/lib/postgresql/*/bin``
    (newest version first), the ``pgserver`` package. Authentication is
    ``trust`` for the superuser ``postgres``; a database (``test`` by default)
    is created. As root, the server runs as the ``postgres`` (or ``nobody``)
    user, since PostgreSQL refuses to run as root. It is tuned for tests
    (``fsync=off``): never keep data in it.

    Args:
        database: the database to create, default ``"test"``.
        start_timeout: seconds ``start()`` may take before it gives up,
            default 30.0, > 0.

    Example:
        >>> with ThrowawayPostgres() as pg:  # doctest: +SKIP
        ...     pool = await asyncpg.create_pool(pg.dsn)
    """

    _kind = "pg"

    def __init__(self, *, database: str = "test", start_timeout: float = 30.0) -> None:
        super().__init__(start_timeout=start_timeout)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
            raise ValueError(f"ThrowawayPostgres: database must be a plain name, got {database!r}")
        self._database = database
        self._command: _PgCommand | None = None

    @property
    def dsn(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/DATABASE``.

        Raises:
            RuntimeError: the server is not running.
        """
        return f"postgresql://postgres@{self.host}:{self.port}/{self._database}"

    def _resolve(self) -> _PgCommand:
        return _PgCommand(_pg_bindir(), _unprivileged_user())

    def _tmp_base(self) -> str | None:
        # As root the server runs as another user, who must be able to reach the
        # directory: a private TMPDIR (under /root, say) would not do.
        if _unprivileged_user() is not None and os.path.isdir("/tmp"):
            return "/tmp"
        return None

    def _launch(self, command: _PgCommand, tmpdir: Path, port: int, deadline: float) -> None:
        self._command = command
        data = tmpdir / "data"
        log = tmpdir / "postgres.log"
        if command.run_as is not None:
            _, uid, gid = command.run_as
            os.chown(tmpdir, uid, gid)
        as_user = command.popen_kwargs()

        def run(argv: Sequence[str], stdin: bytes | None, what: str) -> None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Failed(f"PostgreSQL did not start within {self._start_timeout:g} s")
            try:
                done = subprocess.run(
                    argv,
                    input=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    cwd=tmpdir,
                    timeout=remaining,
                    check=False,
                    **as_user,
                )
            except subprocess.TimeoutExpired:
                raise _Failed(f"{what} took longer than {self._start_timeout:g} s") from None
            output: str = done.stdout.decode(errors="replace")
            if done.returncode != 0 or "ERROR:" in output or "FATAL:" in output:
                raise _Failed(f"{what} failed (exit code {done.returncode}):\n{output[-2000:]}")

        if not (data / "PG_VERSION").exists():
            run(
                [
                    command.exe("initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
                None,
                "initdb",
            )
            # Single-user mode creates the database without any client tool.
            run(
                [command.exe("postgres"), "--single", "-D", str(data), "-F", "postgres"],
                f"CREATE DATABASE {self._database};\n".encode(),
                f"creating database {self._database!r}",
            )

        with open(log, "wb") as log_file:
            self._proc = subprocess.Popen(
                [
                    command.exe("postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-c",
                    f"listen_addresses={_LOOPBACK}",
                    "-c",
                    f"unix_socket_directories={tmpdir}",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=tmpdir,
                # Its own session: a terminal's Ctrl-C reaches the demo or the
                # test run, which then stops the server in order.
                start_new_session=True,
                **as_user,
            )
        self._port = port
        self._own(_cleanup_postgres, self._proc, command, data, tmpdir)
        pid_file = data / "postmaster.pid"

        def ready() -> bool:
            # Line 8 of postmaster.pid reads "ready" once the listen sockets are open
            # and connections are accepted: what pg_ctl -w waits for.
            try:
                lines = pid_file.read_text().splitlines()
            except OSError:
                return False
            return len(lines) >= 8 and lines[7].strip() == "ready"

        self._wait_until(ready, deadline, log, "PostgreSQL")


def _cleanup_postgres(
    proc: subprocess.Popen[bytes], command: _PgCommand, data: Path, tmpdir: Path
) -> None:
    try:
        _stop_postgres(proc, command, data)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


# -- Redis ------------------------------------------------------------------------


class ThrowawayRedis(_ChildServer):
    """A private Redis server for one test session or demo run.

    It runs ``redis-server`` from ``PATH`` on a free loopback port, with
    persistence off (no RDB, no AOF) and its working directory in a temp dir.

    Args:
        start_timeout: seconds ``start()`` may take before it gives up,
            default 30.0, > 0.

    Example:
        >>> with ThrowawayRedis() as server:  # doctest: +SKIP
        ...     client = redis.asyncio.from_url(server.url)
    """

    _kind = "redis"

    def __init__(self, *, start_timeout: float = 30.0) -> None:
        super().__init__(start_timeout=start_timeout)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``.

        Raises:
            RuntimeError: the server is not running.
        """
        return f"redis://{self.host}:{self.port}/0"

    def _resolve(self) -> str:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError(
                "ThrowawayRedis needs 'redis-server' on PATH: install Redis "
                "(e.g. apt-get install redis-server), or point the tests at a server with a URL."
            )
        return exe

    def _launch(self, command: str, tmpdir: Path, port: int, deadline: float) -> None:
        log = tmpdir / "redis.log"
        with open(log, "wb") as log_file:
            self._proc = subprocess.Popen(
                [
                    command,
                    "--port",
                    str(port),
                    "--bind",
                    _LOOPBACK,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(tmpdir),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=tmpdir,
                start_new_session=True,  # as for PostgreSQL: Ctrl-C goes to us
            )
        self._port = port
        self._own(_cleanup_redis, self._proc, tmpdir)
        self._wait_until(lambda: _redis_ping_sync(port), deadline, log, "redis-server")


def _cleanup_redis(proc: subprocess.Popen[bytes], tmpdir: Path) -> None:
    try:
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: redis exits at once (nothing to save)
        _terminate(proc, grace=5)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _redis_ping_sync(port: int) -> bool:
    try:
        with socket.create_connection((_LOOPBACK, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


# -- availability probes -------------------------------------------------------------


async def postgres_available(dsn: str, timeout: float = 2.0) -> bool:  # noqa: ASYNC109
    """Whether a PostgreSQL server answers at ``dsn``.

    With asyncpg installed this is a real login (so a wrong password or a
    missing database reads as unavailable); without it, a TCP connect to the
    DSN's host and port.

    Args:
        dsn: a ``postgresql://`` URL.
        timeout: seconds the whole check may take, default 2.0.

    Returns:
        True if the server answered within ``timeout``; never raises.
    """
    try:
        import asyncpg
    except ImportError:
        host, port = _host_port(dsn, 5432)
        return await _tcp_connects(host, port, timeout)
    try:
        async with asyncio.timeout(timeout):
            connection = await asyncpg.connect(dsn, timeout=timeout)
            try:
                await connection.fetchval("SELECT 1")
            finally:
                try:
                    await connection.close()
                except BaseException:
                    connection.terminate()
                    raise
    except Exception:
        return False
    return True


async def redis_available(url: str, timeout: float = 2.0) -> bool:  # noqa: ASYNC109
    """Whether a Redis server answers ``PING`` at ``url``, without the redis package.

    Args:
        url: a ``redis://`` or ``rediss://`` URL; its password (and user), if
            any, are sent with ``AUTH`` first.
        timeout: seconds the whole check may take, default 2.0.

    Returns:
        True if the server answered ``+PONG`` within ``timeout``; never raises.
    """
    try:
        parts = urlsplit(url)
        host, port = _host_port(url, 6379)
        commands: list[list[str]] = []
        if parts.password is not None:
            auth = [unquote(parts.password)]
            if parts.username:
                auth.insert(0, unquote(parts.username))
            commands.append(["AUTH", *auth])
        commands.append(["PING"])
        tls: Any = None
        if parts.scheme == "rediss":
            import ssl

            tls = ssl.create_default_context()
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, ssl=tls)
            try:
                reply = b""
                for command in commands:
                    writer.write(_resp(command))
                    await writer.drain()
                    reply = await reader.readline()
                    if reply.startswith(b"-"):
                        return False
                return reply.startswith(b"+PONG")
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
    except Exception:
        return False


def _resp(command: Sequence[str]) -> bytes:
    out = [f"*{len(command)}\r\n".encode()]
    for arg in command:
        raw = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or _LOOPBACK, parts.port or default_port


async def _tcp_connects(host: str, port: int, timeout: float) -> bool:  # noqa: ASYNC109
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    except Exception:
        return False
    return True


# -- use a server if it answers, else start one ---------------------------------------


def _probe(check: Callable[[], Coroutine[Any, Any, bool]]) -> bool:
    # A private thread and loop: callable from sync code, from a pytest fixture,
    # even from inside a running event loop, without touching that loop.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="resilience-probe") as pool:
        return pool.submit(lambda: asyncio.run(check())).result()


@contextlib.contextmanager
def ensure_postgres(dsn: str, *, timeout: float = 2.0) -> Iterator[str]:
    """Yield ``dsn`` if a PostgreSQL answers there, else a throwaway server's DSN.

    The throwaway server (if any) is stopped when the block exits. Blocking:
    call it from sync code (or through ``asyncio.to_thread``).

    Args:
        dsn: the server to try first.
        timeout: seconds to wait for it to answer, default 2.0.

    Raises:
        RuntimeError: nothing answers at ``dsn`` and no server can be started.
    """
    if _probe(lambda: postgres_available(dsn, timeout)):
        yield dsn
        return
    with ThrowawayPostgres() as server:
        yield server.dsn


@contextlib.contextmanager
def ensure_redis(url: str, *, timeout: float = 2.0) -> Iterator[str]:
    """Yield ``url`` if a Redis answers there, else a throwaway server's URL.

    The throwaway server (if any) is stopped when the block exits. Blocking:
    call it from sync code (or through ``asyncio.to_thread``).

    Args:
        url: the server to try first.
        timeout: seconds to wait for it to answer, default 2.0.

    Raises:
        RuntimeError: nothing answers at ``url`` and no server can be started.
    """
    if _probe(lambda: redis_available(url, timeout)):
        yield url
        return
    with ThrowawayRedis() as server:
        yield server.url
