"""`mailprov migrate`: bring a database to this release's schema, creating it if needed."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import asyncpg

from service.core.sql import SCHEMA
from service.core.store import Store
from service.core.tasks import TASK_TYPES

# one migrator at a time: two `release` processes must not interleave DDL
MIGRATION_LOCK = 7235811


async def apply_schema(dsn: str) -> None:
    """Create the database if it is missing, then apply schema.sql (idempotent) and record
    this release's task types."""
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        await _create_database(dsn)
        conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(SCHEMA)
            await Store(conn).add_task_types(names=TASK_TYPES)
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
