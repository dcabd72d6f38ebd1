"""The data-access layer: the only code that runs SQL.

Statements live in `queries.sql` under `-- name: <name>` headers and are called by name.
Driver errors that mean something to a client are turned into domain exceptions here, by
constraint name, so callers never look at asyncpg's exceptions.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

from service import errors

QUERIES_FILE = Path(__file__).with_name("queries.sql")
SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.sql"

# unique constraint name -> what a client is told
CONSTRAINT_ERRORS: dict[str, type[errors.ApiError]] = {
    "domains_name_key": errors.DomainExists,
}


def parse_queries(text: str) -> dict[str, str]:
    """Split a .sql file on `-- name: x` headers into {name: statement}."""
    queries: dict[str, str] = {}
    for chunk in re.split(r"^--\s*name:\s*", text, flags=re.MULTILINE)[1:]:
        name, _, body = chunk.partition("\n")
        name = name.strip()
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"bad query name {name!r}")
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        statement = "\n".join(
            line for line in body.splitlines() if not line.lstrip().startswith("--")
        ).strip()
        if not statement:
            raise ValueError(f"query {name!r} is empty")
        queries[name] = statement
    return queries


QUERIES = parse_queries(QUERIES_FILE.read_text())


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads,
                                  schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's reset on release (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL):
    mailprov leaves no session state behind (only transaction-scoped locks, no cursors,
    LISTEN or SET), and the reset was a second round trip for every query."""


class Queries:
    """Named queries bound to a pool or to one connection (inside a transaction)."""

    def __init__(self, executor: asyncpg.Pool | asyncpg.Connection) -> None:
        self._ex = executor

    async def fetch(self, name: str, *args: Any) -> list[asyncpg.Record]:
        with _mapped_errors():
            return await self._ex.fetch(QUERIES[name], *args)

    async def fetchrow(self, name: str, *args: Any) -> asyncpg.Record | None:
        with _mapped_errors():
            return await self._ex.fetchrow(QUERIES[name], *args)

    async def fetchval(self, name: str, *args: Any) -> Any:
        with _mapped_errors():
            return await self._ex.fetchval(QUERIES[name], *args)

    async def execute(self, name: str, *args: Any) -> str:
        with _mapped_errors():
            return await self._ex.execute(QUERIES[name], *args)


class _mapped_errors:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, asyncpg.UniqueViolationError):
            mapped = CONSTRAINT_ERRORS.get(exc.constraint_name or "")
            if mapped is not None:
                raise mapped() from exc


class Database(Queries):
    """The pool, with named queries on it and transactions that hand out bound queries."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.pool = pool

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 2, max_size: int = 10) -> Database:
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size,
                                         init=_init_connection, reset=_keep_session)
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Queries]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield Queries(conn)


async def apply_schema(dsn: str) -> None:
    """Create the database if it is missing, then apply schema.sql (idempotent)."""
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        await _create_database(dsn)
        conn = await asyncpg.connect(dsn)
    try:
        # one migrator at a time: two `release` processes must not interleave DDL
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7235811)")
            await conn.execute(SCHEMA_FILE.read_text())
    finally:
        await conn.close()


async def _create_database(dsn: str) -> None:
    name = unquote(urlsplit(dsn).path.lstrip("/"))
    conn = await asyncpg.connect(dsn, database="postgres")
    try:
        # an identifier cannot be a parameter: quote it the way Postgres does
        await conn.execute('CREATE DATABASE "{}"'.format(name.replace('"', '""')))
    except asyncpg.DuplicateDatabaseError:
        pass
    finally:
        await conn.close()
