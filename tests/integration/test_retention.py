"""Retention (api-resources.md, "Soft delete and retention"): rows soft-deleted longer than
MAILPROV_RETENTION_DAYS are removed for good by the workers' cron job, in batches, safely
with several at once; until then they can be restored and their names stay taken."""

from __future__ import annotations

import asyncio
from typing import Any

from arq.connections import ArqRedis

from service.core.db import Database
from worker import retention
from worker.context import KEY, JobContext
from worker.metrics import WorkerMetrics


def _ctx(settings: Any, db: Database, hasher: Any) -> dict[str, Any]:
    """What arq hands the cron job: the worker's resources under its key."""
    redis = ArqRedis.from_url(settings.redis_url)
    return {KEY: JobContext(settings, db, redis, hasher, WorkerMetrics())}


async def _age(db: Database, table: str, days: int, where: str = "true") -> None:
    """Make the deleted rows of `table` look deleted `days` ago."""
    await db.pool.execute(
        f"UPDATE {table} SET deleted_at = deleted_at - make_interval(days => $1) "  # noqa: S608
        f"WHERE deleted_at IS NOT NULL AND {where}", days)


async def test_rows_past_the_retention_are_removed_and_the_rest_kept(make, db, settings,
                                                                     hasher):
    _, key = await make.account()
    await make.domain(key, "old.example")
    await make.domain(key, "kept.example")
    for domain in ("old.example", "kept.example"):
        for local in ("a", "b"):
            await make.done(key, await make.rest("POST", "mailbox_create", key,
                                                 {"domain": domain, "local_part": local}))
    alias = await make.rest("POST", "alias_create", key,
                            {"address": "sales@kept.example", "goto": ["a@kept.example"]})
    await make.run_worker()
    r = await make.post("create_sub_domain", {"Domain": "old.example",
                                              "Params": {"sub_domains": ["team"]}}, key)
    assert r.status == 200
    await make.run_worker()
    await make.done(key, await make.rest("POST", "alias_domain_create", key, {
        "alias_domain": "old-alias.example", "target_domain": "old.example"}))
    await make.done(key, await make.rest("DELETE", "domain_delete", key, domain="old.example"))
    await make.done(key, await make.rest("DELETE", "mailbox_delete", key,
                                         email="a@kept.example"))
    await make.done(key, await make.rest("DELETE", "alias_delete", key, id=alias.body["id"]))
    await make.done(key, await make.rest("DELETE", "mailbox_delete", key,
                                         email="b@kept.example"))

    ctx = _ctx(settings, db, hasher)
    # nothing is old enough yet
    assert await retention.purge_expired(ctx) == 0
    # old.example (with its sub-domain, mailboxes) and a@ and the alias: past 30 days;
    # b@ only 29 days: still restorable
    await _age(db, "domains", 31)
    await _age(db, "mailboxes", 31, "address <> 'b@kept.example'")
    await _age(db, "mailboxes", 29, "address = 'b@kept.example'")
    await _age(db, "aliases", 31)
    # past the retention, a restore is refused by its task, before the purge runs
    late = await make.done(key, await make.rest("POST", "mailbox_restore", key,
                                                email="a@kept.example"))
    assert late["status"] == "failed" and late["error"] == "Past the retention period."
    late = await make.done(key, await make.rest("POST", "domain_restore", key,
                                                domain="old.example"))
    assert late["status"] == "failed" and late["error"] == "Past the retention period."

    # two workers' runs at once share the work
    removed = await asyncio.gather(retention.purge_expired(ctx), retention.purge_expired(ctx))
    # mailboxes a@ b@ of old.example, a@kept.example, the alias, team. and old.example
    assert sum(removed) == 6, removed
    left = {r["name"] for r in await db.pool.fetch("SELECT name FROM domains")}
    assert left == {"kept.example"}
    boxes = {r["address"]: r["deleted_at"] for r in await db.pool.fetch(
        "SELECT address, deleted_at FROM mailboxes")}
    assert set(boxes) == {"b@kept.example"} and boxes["b@kept.example"] is not None
    assert await db.pool.fetchval("SELECT count(*) FROM aliases") == 0
    assert await db.pool.fetchval("SELECT count(*) FROM alias_domains") == 0
    # the names are free again
    await make.done(key, await make.rest("POST", "domain_create", key, {"domain": "old.example"}))
    await make.done(key, await make.rest("POST", "mailbox_create", key,
                                         {"domain": "kept.example", "local_part": "a"}))
    # within the retention, restore still works
    back = await make.done(key, await make.rest("POST", "mailbox_restore", key,
                                                email="b@kept.example"))
    assert back["status"] == "completed"
    await ctx[KEY].redis.aclose()


async def test_a_backlog_is_purged_in_batches(make, db, settings, hasher, monkeypatch):
    _, key = await make.account()
    await make.domain(key, max_mailboxes=10**4, quota_mb=10**6)
    r = await make.post("create_mailbox_bulk", {
        "Email_fullname": "u", "single_bulk": "bulk", "Domain": "example.com",
        "Params": {"count": 250, "password_hash": "{SSHA}x", "quota_mb": 1}}, key)
    assert r.status == 200
    await make.run_worker()
    await db.pool.execute("UPDATE mailboxes SET deleted_at = now() - interval '40 days'")
    monkeypatch.setattr(retention, "BATCH", 20)
    monkeypatch.setattr(retention, "ROUNDS", 5)
    ctx = _ctx(settings, db, hasher)
    # a run takes at most ROUNDS batches: the backlog is worked off over several runs
    assert await retention.purge_expired(ctx) == 100
    assert await db.pool.fetchval("SELECT count(*) FROM mailboxes") == 150
    # two workers' runs at once: each row is removed by one of them, none is left over
    both = await asyncio.gather(retention.purge_expired(ctx), retention.purge_expired(ctx))
    assert sum(both) == 150 and all(n > 0 for n in both), both
    assert await db.pool.fetchval("SELECT count(*) FROM mailboxes") == 0
    assert await retention.purge_expired(ctx) == 0
    await ctx[KEY].redis.aclose()
