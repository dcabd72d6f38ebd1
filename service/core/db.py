"""Connections to Postgres: the pool, transactions, and the one way a command opens a
database. What runs on a connection is the store's business (service/core/store.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from service.core.store import Store


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads,
                                  schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's reset on release (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL):
    mailprov leaves no session state behind (only transaction-scoped locks, no cursors,
    LISTEN or SET), and the reset was a second round trip for every query."""


class Database(Store):
    """The pool, with the store's queries on it and transactions that hand out a store
    bound to one connection."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.pool = pool

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 2, max_size: int = 10) -> Database:
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size,
                                         init=_init_connection, reset=_keep_session)
        return cls(pool)

    @classmethod
    @asynccontextmanager
    async def opened(cls, dsn: str, *, size: int = 2) -> AsyncIterator[Database]:
        """A small pool for the length of a command or a test."""
        db = await cls.connect(dsn, min_size=1, max_size=size)
        try:
            yield db
        finally:
            await db.close()

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Store]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield Store(conn)
