"""schema.sql upgrades a database made by the previous release in place, without losing a
row, and stays idempotent.

tests/fixtures/schema_before_lifecycle.sql is schema.sql as it was before the lifecycle
(aliases, soft delete, seed 003's fields): the database is made by it and filled the way
that release wrote, then migrated with `mailprov migrate`'s own function.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import asyncpg
import pytest

from service.core import accounts
from service.core.db import Database
from service.core.migrate import apply_schema
from service.core.sql import SCHEMA
from service.web.ops.probes import SCHEMA_OBJECTS

OLD_SCHEMA = (Path(__file__).parents[1] / "fixtures" / "schema_before_lifecycle.sql").read_text()
TABLES = ("accounts", "api_keys", "task_types", "tasks", "domains", "mailboxes",
          "idempotency_keys")


@pytest.fixture
async def old_dsn(backends):
    name = f"mailprov_upgrade_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(backends.admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield backends.dsn(name)
    admin = await asyncpg.connect(backends.admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _fill(conn: asyncpg.Connection) -> None:
    """What the previous release wrote: two accounts with keys, domains (one with a
    sub-domain), mailboxes with their counters, tasks of each type, an idempotency key."""
    await conn.execute(OLD_SCHEMA)
    await conn.execute("INSERT INTO task_types (name) VALUES ('domain'), ('sub_domain'), "
                       "('mailbox_single'), ('mailbox_bulk')")
    for account_id, name in ((1, "acme"), (2, "other")):
        await conn.execute("INSERT INTO accounts (id, name) VALUES ($1, $2)", account_id, name)
        await conn.execute("INSERT INTO api_keys (account_id, key_hash, prefix) "
                           "VALUES ($1, $2, $3)", account_id,
                           accounts.digest(f"k{account_id}" * 16), f"k{account_id}k{account_id}")
    await conn.execute("""
        INSERT INTO tasks (id, account_id, type, status, domain, payload, results,
                           progress_done, progress_total, finished_at)
        VALUES (1, 1, 'domain', 'completed', 'a.test', '{"domain": "a.test"}',
                '{"a.test": {"status": "Created successfully."}}', 1, 1, now()),
               (2, 1, 'sub_domain', 'completed', 'a.test', '{"names": ["x.a.test"]}',
                '{"x.a.test": {"status": "Created successfully."}}', 1, 1, now()),
               (3, 1, 'mailbox_bulk', 'completed', 'a.test', '{"items": []}', '{}', 3, 3, now()),
               (4, 2, 'mailbox_single', 'queued', 'b.test', '{"items": []}', '{}', 0, 1, NULL)
    """)
    await conn.execute("""
        INSERT INTO domains (id, account_id, name, parent_id, status, quota_mb, max_mailboxes,
                             default_mailbox_quota_mb, description, task_id)
        VALUES (1, 1, 'a.test', NULL, 'active', 10240, 100, 1024, 'first', 1),
               (2, 1, 'x.a.test', 1, 'active', 10240, 100, 1024, NULL, 2),
               (3, 2, 'b.test', NULL, 'pending', 5000, 10, 500, NULL, NULL)
    """)
    await conn.execute("""
        INSERT INTO mailboxes (domain_id, local_part, address, password_hash, display_name,
                               quota_mb, active, task_id)
        VALUES (1, 'ann', 'ann@a.test', '{ARGON2ID}$argon2id$v=19$m=1024,t=1,p=1$x$y', 'Ann',
                1024, true, 3),
               (1, 'bob', 'bob@a.test', '{SHA512-CRYPT}$6$x$y', NULL, 2048, false, 3),
               (3, 'cy', 'cy@b.test', '{SSHA}abc', NULL, 500, true, NULL)
    """)
    await conn.execute("""
        UPDATE domains d SET mailbox_count = c.n, quota_used_mb = c.q
        FROM (SELECT domain_id, count(*) AS n, sum(quota_mb) AS q FROM mailboxes
              GROUP BY domain_id) c WHERE c.domain_id = d.id
    """)
    await conn.execute("INSERT INTO idempotency_keys (account_id, key, fingerprint, status, "
                       "body, task_id) VALUES (1, 'k-1', 'f', 200, '{}', 1)")
    for table in ("tasks", "domains", "mailboxes", "accounts", "api_keys"):
        await conn.execute(f"SELECT setval('{table}_id_seq', "  # noqa: S608 - our tables
                           f"(SELECT max(id) FROM {table}))")


async def _snapshot(conn: asyncpg.Connection) -> dict[str, list[dict]]:
    """Every row of the old tables, in the old columns only."""
    found = {}
    for table in TABLES:
        columns = [r["column_name"] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
            "AND table_schema = current_schema() ORDER BY ordinal_position", table)]
        found[table] = await _rows(conn, table, columns)
    return found


async def _rows(conn: asyncpg.Connection, table: str, columns: list[str]) -> list[dict]:
    order = ", ".join(str(i) for i in range(1, len(columns) + 1))
    return [dict(r) for r in await conn.fetch(
        f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")]  # noqa: S608 - ours


async def test_the_schema_upgrades_a_filled_database_in_place(old_dsn):
    conn = await asyncpg.connect(old_dsn)
    try:
        await _fill(conn)
        before = await _snapshot(conn)
    finally:
        await conn.close()
    assert sum(len(rows) for rows in before.values()) == 19

    await apply_schema(old_dsn)
    await apply_schema(old_dsn)  # idempotent: a second release's migrate changes nothing

    conn = await asyncpg.connect(old_dsn)
    try:
        after = await conn.fetch("SELECT * FROM mailboxes ORDER BY id")
        for table, rows in before.items():
            now = await _rows(conn, table, list(rows[0]))
            # every row kept as it was; only task_types gains this release's types
            assert (now == rows if table != "task_types"
                    else [r for r in now if r in rows] == rows), table
        # the new columns, filled in for the old rows
        domains = {r["name"]: r for r in await conn.fetch("SELECT * FROM domains")}
        assert domains["a.test"]["max_mailbox_quota_mb"] == 10240
        assert domains["b.test"]["max_mailbox_quota_mb"] == 5000
        assert all(d["max_aliases"] == 400 and d["alias_count"] == 0 and not d["backupmx"]
                   and d["deleted_at"] is None for d in domains.values())
        assert [m["account_id"] for m in after] == [1, 1, 2]
        assert len({m["home"] for m in after}) == 3 and all(m["home"] for m in after)
        assert all(m["deleted_at"] is None and not m["force_pw_update"] for m in after)
        assert {r["name"] for r in await conn.fetch("SELECT name FROM task_types")} >= {
            "mailbox_update", "alias", "domain_delete"}
        missing = await conn.fetch("SELECT name FROM unnest($1::text[]) AS name "
                                   "WHERE to_regclass(name) IS NULL", SCHEMA_OBJECTS)
        assert missing == []
        # the mail stack sees the old rows as before: active mailboxes of active domains
        seen = await conn.fetch("SELECT address FROM mail_mailboxes ORDER BY address")
        assert [r["address"] for r in seen] == ["ann@a.test"]
    finally:
        await conn.close()

    # and the new code works on it: the upgraded domain takes an alias and a new mailbox
    async with Database.opened(old_dsn) as db, db.transaction() as store:
        domain = await store.lock_domain(domain_id=1)
        assert domain is not None and domain["mailbox_count"] == 2
        assert domain["quota_used_mb"] == 3072
        row = await store.create_alias_task(account_id=1, domain="a.test",
                                            payload={"address": "sales@a.test"})
        assert await store.insert_alias(alias_id=row["alias_id"], domain_id=1,
                                        address="sales@a.test", goto=["ann@a.test"],
                                        active=True, task_id=row["id"])
        assert row["id"] == 5  # the tasks sequence carried on


def test_the_fixture_is_the_previous_release():
    # what the upgrade test starts from is older than today's schema, not a copy of it
    assert "CREATE TABLE IF NOT EXISTS aliases" not in OLD_SCHEMA
    assert "CREATE TABLE IF NOT EXISTS aliases" in SCHEMA
