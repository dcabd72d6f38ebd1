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
