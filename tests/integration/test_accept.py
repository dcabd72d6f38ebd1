"""The accept path in one round trip to each backend: a key's next create/mailbox builds
on the domain its last one read, and the task's insert checks that read again. Whatever
changed in between (the key, the domain's limits, the domain itself) is seen at once."""

from service.core import accounts


async def create(make, key, local, **params):
    r = await make.post("create_mailbox_single", {
        "Email_fullname": local, "single_bulk": "single", "Domain": "reuse.example",
        "Params": params}, key)
    return r.status, await r.json()


async def test_a_reused_read_is_checked_as_the_task_is_recorded(make, db):
    _, key = await make.account()
    await make.domain(key, "reuse.example", quota_mb=1000, default_mailbox_quota_mb=100)
    assert (await create(make, key, "a", quota_mb=600))[0] == 200
    # the same key again: no lookup of its own, one insert that checks it
    status, body = await create(make, key, "b", quota_mb=600)
    assert status == 200
    row = await db.pool.fetchrow("SELECT payload FROM tasks WHERE id = $1", body["task_id"])
    assert row["payload"]["items"][0]["quota_mb"] == 600

    # the domain's total shrinks behind the process's back: the next request is checked
    # against it, not against what was read before
    await db.pool.execute("UPDATE domains SET quota_mb = 500, max_mailbox_quota_mb = 500 "
                          "WHERE name = 'reuse.example'")
    status, body = await create(make, key, "c", quota_mb=600)
    assert status == 422 and "500 MB" in body["reason"]
    # and its default is the new one
    await db.pool.execute("UPDATE domains SET default_mailbox_quota_mb = 123 "
                          "WHERE name = 'reuse.example'")
    status, body = await create(make, key, "d")
    assert status == 200
    row = await db.pool.fetchrow("SELECT payload FROM tasks WHERE id = $1", body["task_id"])
    assert row["payload"]["items"][0]["quota_mb"] == 123

    # deleted: not found
    await db.pool.execute("UPDATE domains SET deleted_at = now() WHERE name = 'reuse.example'")
    status, body = await create(make, key, "e")
    assert status == 404 and body["status"] == "error"


async def test_a_revoked_key_stops_working_at_once(make, db):
    _, key = await make.account()
    await make.domain(key, "reuse.example")
    assert (await create(make, key, "a"))[0] == 200
    before = await db.pool.fetchval("SELECT count(*) FROM tasks")
    await accounts.revoke_key(db, key)
    status, body = await create(make, key, "b")
    assert status == 401 and body["status"] == "error"
    assert await db.pool.fetchval("SELECT count(*) FROM tasks") == before


async def test_requests_recording_together_each_get_their_own_task(make, db, redis, settings):
    """Creates arriving together share one insert and one enqueue (service/web/
    accepts.py): each still gets its own task, built from its own body, and a stale one
    among them (a key revoked meanwhile) is refused alone."""
    import asyncio

    _, key_a = await make.account("a")
    _, key_b = await make.account("b")
    await make.domain(key_a, "reuse.example")
    await make.domain(key_b, "other.example")
    assert (await create(make, key_a, "first"))[0] == 200
    r = await make.post("create_mailbox_single", {
        "Email_fullname": "first", "single_bulk": "single", "Domain": "other.example",
        "Params": {}}, key_b)
    assert r.status == 200
    await accounts.revoke_key(db, key_b)

    async def b(n):
        r = await make.post("create_mailbox_single", {
            "Email_fullname": f"b{n}", "single_bulk": "single", "Domain": "other.example",
            "Params": {}}, key_b)
        return r.status, await r.json()

    answers = await asyncio.gather(*(create(make, key_a, f"a{n}") for n in range(20)),
                                   *(b(n) for n in range(5)))
    a_answers, b_answers = answers[:20], answers[20:]
    assert all(status == 401 for status, _ in b_answers)
    assert all(status == 200 for status, _ in a_answers)
    ids = [body["task_id"] for _, body in a_answers]
    assert len(set(ids)) == 20
    rows = await db.pool.fetch("SELECT id, payload FROM tasks WHERE id = ANY($1::bigint[])",
                               ids)
    made = {row["id"]: row["payload"]["items"][0]["local_part"] for row in rows}
    assert made == {task_id: f"a{n}" for n, task_id in enumerate(ids)}
    queued = {int(j) for j in await redis.zrange(settings.queue_name, 0, -1)}
    assert set(ids) <= queued
    assert not await db.pool.fetchval(
        "SELECT count(*) FROM tasks WHERE domain = 'other.example' AND type = "
        "'mailbox_single' AND payload->'items'->0->>'local_part' LIKE 'b%'")
