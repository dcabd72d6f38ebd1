"""Creates, deletes, restores, forgets and quota changes racing on one domain: whatever the
interleaving, the domain's counters equal what its rows add up to, and no limit is
broken.

Two real workers run the tasks at once (20 jobs each), in chunks of 3 items, so many
transactions of many tasks interleave on the domain. The mix is random; its seed is in
the assertion messages, so a failure can be run again as it was.
"""

from __future__ import annotations

import asyncio
import random
import secrets

from service.core.settings import Settings

LIMITS = {"quota": 4000, "mailboxes": 30, "aliases": 12, "maxquota": 300,
          "defquota": 100}


async def _counted(db) -> dict[str, int]:
    """The domain's counters and what its rows say they should be."""
    return dict(await db.pool.fetchrow("""
        SELECT d.mailbox_count, d.quota_used_mb, d.alias_count,
               (SELECT count(*) FROM mailboxes m WHERE m.domain_id = d.id
                AND m.deleted_at IS NULL)::int AS live_mailboxes,
               (SELECT coalesce(sum(quota_mb), 0) FROM mailboxes m WHERE m.domain_id = d.id
                AND m.deleted_at IS NULL)::int AS live_quota,
               (SELECT count(*) FROM aliases a WHERE a.domain_id = d.id
                AND a.deleted_at IS NULL)::int AS live_aliases
        FROM domains d WHERE d.name = 'race.example'"""))


async def test_counters_hold_under_racing_creates_deletes_and_restores(make, db, settings,
                                                                      run_worker):
    seed = secrets.randbelow(2**32)
    rng = random.Random(seed)
    _, key = await make.account()
    made = await make.rest("POST", "domain_create", key, {"domain": "race.example", **LIMITS})
    await make.done(key, made)
    names = [f"m{i}@race.example" for i in range(40)]
    aliases = [f"a{i}@race.example" for i in range(16)]
    # some of everything exists before the race
    r = await make.post("create_mailbox_bulk", {
        "Email_fullname": "seed", "single_bulk": "bulk", "Domain": "race.example",
        "Params": {"mailboxes": [{"local_part": n.split("@")[0], "quota_mb": rng.choice(
            (50, 100, 200)), "password_hash": "{SSHA}x"} for n in names[:20]]}}, key)
    assert r.status == 200
    alias_ids = []
    for address in aliases[:8]:
        answer = await make.rest("POST", "alias_create", key,
                                 {"address": address, "goto": ["x@elsewhere.org"]})
        alias_ids.append(answer.body["id"])
    await run_worker()
    await make.done(key, await make.rest("POST", "mailbox_bulk_action", key,
                                         {"action": "delete", "emails": names[15:20]}))

    accepted = 0
    for _ in range(70):
        kind = rng.randrange(9)
        some = rng.sample(names, rng.randint(1, 12))
        if kind == 0:
            r = await make.post("create_mailbox_bulk", {
                "Email_fullname": "race", "single_bulk": "bulk", "Domain": "race.example",
                "Params": {"mailboxes": [{"local_part": n.split("@")[0], "quota_mb": rng.choice(
                    (50, 100, 200)), "password_hash": "{SSHA}x"} for n in some]}}, key)
            status = r.status
        elif kind == 1:
            r = await make.post("create_mailbox_single", {
                "Email_fullname": rng.choice(names), "single_bulk": "single",
                "Domain": "race.example", "Params": {"password_hash": "{SSHA}x"}}, key)
            status = r.status
        elif kind in (2, 3, 4):
            action = {2: "delete", 3: "restore", 4: rng.choice(("forget", "restore",
                                                                "deactivate"))}[kind]
            status = (await make.rest("POST", "mailbox_bulk_action", key,
                                      {"action": action, "emails": some})).status
        elif kind == 5:
            # single routes refuse at once what they can see would fail; the rest race
            for method, route, kwargs in (("DELETE", "mailbox_delete", {}),
                                          ("POST", "mailbox_restore", {}),
                                          ("PUT", "mailbox_update", {"json": {
                                              "quota": rng.choice((50, 150, 250))}})):
                answer = await make.rest(method, route, key, email=rng.choice(names), **kwargs)
                accepted += answer.status == 202
            status = 202
        elif kind == 6:
            address = rng.choice(aliases)
            answer = await make.rest("POST", "alias_create", key,
                                     {"address": address, "goto": ["x@elsewhere.org"]})
            if answer.status == 202:
                alias_ids.append(answer.body["id"])
            status = 202
        else:
            status = (await make.rest("POST", "alias_bulk_action", key, {
                "action": rng.choice(("delete", "restore", "forget", "restore")),
                "ids": rng.sample(alias_ids, min(len(alias_ids), rng.randint(1, 5)))})).status
        assert status in (200, 202, 404, 409, 422), (seed, kind, status)
        accepted += status in (200, 202)
    assert accepted > 50, seed

    # two workers at once, small chunks: many short transactions of many tasks interleave
    racing: Settings = settings.replace(bulk_chunk_size=3)
    await asyncio.gather(run_worker(settings=racing, max_jobs=20),
                         run_worker(settings=racing, max_jobs=20))
    await run_worker()  # anything a retry deferred

    unfinished = await db.pool.fetchval(
        "SELECT count(*) FROM tasks WHERE status IN ('queued', 'processing')")
    assert unfinished == 0, seed
    internal = await db.pool.fetch(
        "SELECT id, type, error FROM tasks WHERE error LIKE 'Internal error%'")
    assert internal == [], (seed, internal)
    counted = await _counted(db)
    assert counted["mailbox_count"] == counted["live_mailboxes"], (seed, counted)
    assert counted["quota_used_mb"] == counted["live_quota"], (seed, counted)
    assert counted["alias_count"] == counted["live_aliases"], (seed, counted)
    assert counted["mailbox_count"] <= LIMITS["mailboxes"], (seed, counted)
    assert counted["quota_used_mb"] <= LIMITS["quota"], (seed, counted)
    assert counted["alias_count"] <= LIMITS["aliases"], (seed, counted)
    largest = await db.pool.fetchval("SELECT max(quota_mb) FROM mailboxes "
                                     "WHERE deleted_at IS NULL")
    assert largest is None or largest <= LIMITS["maxquota"], seed
    # an address is a mailbox or an alias, never both
    both = await db.pool.fetchval("SELECT count(*) FROM mailboxes m JOIN aliases a "
                                  "USING (address)")
    assert both == 0, seed
    # and every item a task says it created or restored is there (unless a later task
    # deleted or forgot it)
    created = await db.pool.fetch("""
        SELECT r.key FROM tasks t, jsonb_each(t.results) AS r
        WHERE t.type IN ('mailbox_single', 'mailbox_bulk')
          AND r.value ->> 'status' = 'Created successfully.'""")
    rows = {r["address"] for r in await db.pool.fetch("SELECT address FROM mailboxes")}
    forgotten = await db.pool.fetchval("""
        SELECT count(*) FROM tasks t, jsonb_each(t.results) AS r
        WHERE r.value ->> 'status' = 'Deleted for good.' AND t.type LIKE 'mailbox%'""")
    missing = {r["key"] for r in created} - rows
    assert len(missing) <= forgotten, (seed, missing)
