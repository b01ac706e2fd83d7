"""A SQLAlchemy (async) repository class with ``@circuit`` and ``@fallback``, on a real PostgreSQL.

``UserRepository`` reads users through an ``AsyncEngine`` (asyncpg driver);
every method goes through one breaker, ``users-db``, and the reads fall back
to a cache of their last good answers. ``resilience.classify`` sees through
SQLAlchemy's wrappers to the server's SQLSTATE, so:

- a unique violation, a misspelt column: the caller's mistakes, raised at
  once, and the circuit stays CLOSED;
- a database that refuses connections (a ``FaultProxy`` in front of it):
  connection errors, 2 of them open the circuit, and the fallback serves
  what was read before.

Run: ``python cookbook/sqlalchemy_repository.py`` (``RESILIENCE_PG_DSN``)
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from resilience import CircuitOpenError, circuit, degradation_scope, fallback, is_degraded
from resilience.integrations.aiocache import memory_cache
from resilience.testing import FaultProxy

DSN = os.environ.get("RESILIENCE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
PG = urlsplit(DSN)
TABLE = f"cookbook_users_{uuid.uuid4().hex[:12]}"  # private to this run, dropped at the end
cache = memory_cache()


def engine_url(host: str, port: int) -> str:
    """The recipe's DSN, for SQLAlchemy's asyncpg driver, at ``host:port``."""
    user = PG.username or "postgres"
    auth = f"{user}:{PG.password}" if PG.password else user
    return f"postgresql+asyncpg://{auth}@{host}:{port}{PG.path or '/test'}"


class UserRepository:
    """Users in PostgreSQL, behind the ``users-db`` breaker."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @fallback(cache, ttl=300)  # outermost: serves the last good answer
    @circuit("users-db", failure_threshold=2, recovery_timeout=300)
    async def get(self, user_id: int) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = await conn.execute(
                sa.text(f"SELECT id, name FROM {TABLE} WHERE id = :id"), {"id": user_id}
            )
            found = row.mappings().first()
            return dict(found) if found is not None else None

    @circuit("users-db")  # the same breaker: one database, one circuit
    async def add(self, user_id: int, name: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.text(f"INSERT INTO {TABLE} (id, name) VALUES (:id, :name)"),
                {"id": user_id, "name": name},
            )

    @circuit("users-db")
    async def search(self, where: str) -> list[Any]:
        async with self.engine.connect() as conn:
            return list(await conn.execute(sa.text(f"SELECT id FROM {TABLE} WHERE {where}")))


async def mistakes(users: UserRepository) -> None:
    print("-- the caller's mistakes: raised, never counted against the database --")
    for attempt in range(3):
        try:
            await users.add(1, "Ada again")  # 23505 unique_violation
        except sa.exc.IntegrityError as exc:
            code = getattr(exc.orig, "sqlstate", None)
            print(f"add(1) again:       {type(exc).__name__} (SQLSTATE {code})")
        try:
            await users.search("nme = 'Ada'")  # 42703 undefined_column
        except sa.exc.ProgrammingError as exc:
            print(f"search(typo) #{attempt + 1}:   {type(exc).__name__}")
    state = UserRepository.get.breaker.state.value  # type: ignore[attr-defined]
    print(f"circuit after 6 mistakes: {state}")
    assert state == "closed"


async def outage(users: UserRepository, proxy: FaultProxy) -> None:
    print("-- the database refuses connections --")
    proxy.refuse()
    await users.engine.dispose()  # drop pooled connections, as a restart would
    for attempt in (1, 2, 3):
        with degradation_scope():
            user = await users.get(1)
            state = UserRepository.get.breaker.state.value  # type: ignore[attr-defined]
            print(f"get(1) #{attempt}: {user} degraded={is_degraded()} (circuit {state})")
            assert user == {"id": 1, "name": "Ada"} and is_degraded()
    assert state == "open"
    try:
        await users.add(3, "Edsger")  # nothing to fall back on for a write
    except CircuitOpenError as exc:
        print(f"add(3):    CircuitOpenError, retry in {exc.retry_after:.0f} s")
    else:
        raise AssertionError("the write should be rejected while the circuit is open")


async def main() -> None:
    admin = create_async_engine(engine_url(PG.hostname or "127.0.0.1", PG.port or 5432))
    async with admin.begin() as conn:
        await conn.execute(sa.text(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, name text)"))
    try:
        async with FaultProxy(PG.hostname or "127.0.0.1", PG.port or 5432) as proxy:
            engine = create_async_engine(
                engine_url(proxy.host, proxy.port),  # through the proxy, so the recipe can cut it
                connect_args={"timeout": 2},
            )
            users = UserRepository(engine)
            try:
                await users.add(1, "Ada")
                await users.add(2, "Grace")
                print(f"get(1): {await users.get(1)} (read, and cached)")
                await mistakes(users)
                await outage(users, proxy)
            finally:
                await engine.dispose()
    finally:
        async with admin.begin() as conn:
            await conn.execute(sa.text(f"DROP TABLE {TABLE}"))
        await admin.dispose()


if __name__ == "__main__":
    asyncio.run(main())
