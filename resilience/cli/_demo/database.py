"""The demo's PostgreSQL: a throwaway server or the one given, and its data.

The demo works in a schema of its own (``resilience_demo_<random>``), created
and seeded here and dropped afterwards, so it never touches anything else in a
database it is pointed at.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ._dsn import dsn_host_port

__all__ = ("Database", "N_PRODUCTS", "N_USERS", "connect_database", "seeded_schema")

N_USERS = 500
N_PRODUCTS = 40
N_ORDERS = 4000

_FIRST = [
    "Ada",
    "Alan",
    "Barbara",
    "Claude",
    "Donald",
    "Edsger",
    "Frances",
    "Grace",
    "Guido",
    "Hedy",
    "Ivan",
    "John",
    "Ken",
    "Leslie",
    "Margaret",
    "Niklaus",
    "Radia",
    "Sophie",
    "Tim",
    "Vint",
    "Whitfield",
    "Yukihiro",
]
_LAST = [
    "Lovelace",
    "Turing",
    "Liskov",
    "Shannon",
    "Knuth",
    "Dijkstra",
    "Allen",
    "Hopper",
    "Rossum",
    "Lamarr",
    "Sutherland",
    "Backus",
    "Thompson",
    "Lamport",
    "Hamilton",
    "Wirth",
    "Perlman",
    "Wilson",
    "Berners-Lee",
    "Cerf",
    "Diffie",
    "Matsumoto",
]
_CITIES = [
    "Lisbon",
    "Oslo",
    "Kyoto",
    "Austin",
    "Nairobi",
    "Lima",
    "Perth",
    "Tallinn",
    "Montreal",
    "Seoul",
]
_ADJECTIVES = [
    "Red",
    "Quiet",
    "Rapid",
    "Sturdy",
    "Tiny",
    "Grand",
    "Smart",
    "Cosy",
    "Bright",
    "Classic",
]
_THINGS = ["Kettle", "Lamp", "Backpack", "Notebook", "Bicycle", "Teapot", "Keyboard", "Umbrella"]


@dataclass(frozen=True, slots=True)
class Database:
    """Where the demo's data lives."""

    dsn: str
    host: str
    port: int
    throwaway: bool
    """the demo started this server and stops it afterwards."""


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


@asynccontextmanager
async def connect_database(dsn: str | None) -> AsyncIterator[Database]:
    """The server at ``dsn``, or a throwaway one started (and stopped) here."""
    if dsn is not None:
        try:
            host, port = dsn_host_port(dsn)
        except ValueError as exc:
            raise RuntimeError(f"--dsn: {exc}") from None
        await _check_reachable(dsn)
        yield Database(dsn, host, port, throwaway=False)
        return

    from resilience.testing import ThrowawayPostgres

    server = ThrowawayPostgres()
    # Starting may block for seconds (initdb): it runs off the event loop, and
    # is let finish even when the demo is interrupted, so that stop() finds
    # what it has to stop.
    start = asyncio.ensure_future(_call(server.start))
    try:
        await asyncio.shield(start)
        host, port = dsn_host_port(server.dsn)
        yield Database(server.dsn, host, port, throwaway=True)
    finally:
        if not start.done():
            await asyncio.wait([start])
        await asyncio.shield(_call(server.stop))


async def _call(fn: Any) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn()
    return await _maybe_await(await asyncio.to_thread(fn))


async def _check_reachable(dsn: str) -> None:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except Exception as exc:
        raise RuntimeError(f"cannot connect to the PostgreSQL given by --dsn: {exc}") from exc
    await conn.close()


def _schema_name() -> str:
    return f"resilience_demo_{secrets.token_hex(4)}"


@asynccontextmanager
async def seeded_schema(dsn: str, *, seed: int = 1) -> AsyncIterator[str]:
    """Create and fill a schema of the demo's own; drop it on the way out."""
    import asyncpg

    schema = _schema_name()
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await _create(conn, schema, random.Random(seed))
    except BaseException:
        await _drop(conn, schema)
        await conn.close()
        raise
    await conn.close()
    try:
        yield schema
    finally:
        try:
            conn = await asyncpg.connect(dsn, timeout=10)
            try:
                await _drop(conn, schema)
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError) as exc:
            # A throwaway server may already be gone (Ctrl-C reaches its
            # process group too); a given one keeps the schema: say so.
            print(f"resilience demo: could not drop schema {schema}: {exc}", file=sys.stderr)


async def _drop(conn: Any, schema: str) -> None:
    await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def _create(conn: Any, schema: str, rng: random.Random) -> None:
    await conn.execute(
        f"""
        CREATE SCHEMA {schema};
        CREATE TABLE {schema}.users (
            id integer PRIMARY KEY,
            name text NOT NULL,
            email text NOT NULL UNIQUE,
            city text NOT NULL,
            created_at timestamptz NOT NULL
        );
        CREATE TABLE {schema}.products (
            id integer PRIMARY KEY,
            name text NOT NULL,
            price_cents integer NOT NULL CHECK (price_cents > 0),
            stock integer NOT NULL
        );
        CREATE TABLE {schema}.orders (
            id integer PRIMARY KEY,
            customer_id integer NOT NULL REFERENCES {schema}.users (id),
            product_id integer NOT NULL REFERENCES {schema}.products (id),
            quantity integer NOT NULL,
            total_cents integer NOT NULL,
            created_at timestamptz NOT NULL
        );
        CREATE INDEX ON {schema}.orders (customer_id, created_at DESC);
        """
    )
    now = datetime(2024, 6, 1, tzinfo=UTC)
    users = []
    for i in range(1, N_USERS + 1):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        email = f"{first}.{last}.{i}@example.com".lower()
        joined = now - timedelta(hours=rng.randrange(24 * 700))
        users.append((i, f"{first} {last}", email, rng.choice(_CITIES), joined))
    products = []
    for i in range(1, N_PRODUCTS + 1):
        name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_THINGS)}"
        products.append((i, name, rng.randrange(500, 20000), rng.randrange(0, 300)))
    orders = []
    for i in range(1, N_ORDERS + 1):
        product = rng.choice(products)
        quantity = rng.randint(1, 4)
        created = now - timedelta(minutes=rng.randrange(60 * 24 * 365))
        orders.append(
            (i, rng.randint(1, N_USERS), product[0], quantity, quantity * product[2], created)
        )
    await conn.copy_records_to_table("users", records=users, schema_name=schema)
    await conn.copy_records_to_table("products", records=products, schema_name=schema)
    await conn.copy_records_to_table("orders", records=orders, schema_name=schema)
    await conn.execute(f"ANALYZE {schema}.users, {schema}.products, {schema}.orders")
