"""/api/v1/mailboxes end to end (api-resources.md, "Mailboxes"): real Postgres, Redis and
worker, driven through HTTP; and the MailAPI and the resource API agreeing on mailboxes."""

from __future__ import annotations

import logging

from service.core import passwords
from tests.conftest import url

JOHN = {"Email_fullname": "john", "single_bulk": "single", "Domain": "example.com",
        "Params": {"display_name": "John Doe", "quota_mb": 1024}}


async def _listed(make, key: str, account_id: int, domain: str = "example.com") -> dict:
    """list/mailbox's results (the MailAPI)."""
    r = await make.client.get(url(make.client, "list_mailbox"),
                              params={"key": key, "caller_id": account_id, "domain": domain})
    assert r.status == 200, await r.text()
    return (await r.json())["results"]


async def test_a_mailbox_made_by_either_face_is_seen_and_changed_by_the_other(make, db):
    account_id, key = await make.account()
    await make.domain(key)

    # made by the MailAPI, read and changed through the resource API
    r = await make.post("create_mailbox_single", JOHN, key)
    mailapi_task = (await r.json())["task_id"]
    await make.run_worker()
    read = await make.rest("GET", "mailbox", key, email="john@example.com")
    assert read.status == 200, read.body
    assert read.body["email"] == "john@example.com" and read.body["name"] == "John Doe"
    assert read.body["quota"] == 1024 and read.body["status"] == "active"
    assert "password" not in read.body and "password_hash" not in read.body
    changed = await make.done(key, await make.rest("PUT", "mailbox_update", key,
                                                   {"quota": 2048, "name": "J. Doe"},
                                                   email="john@example.com"))
    assert changed["status"] == "completed", changed
    assert changed["results"] == {"john@example.com": {"status": "Updated successfully."}}
    assert (await _listed(make, key, account_id))["john@example.com"]["mailbox_quota"] == "2048MB"

    # made by the resource API, listed and polled by the MailAPI
    made = await make.rest("POST", "mailbox_create", key,
                           {"domain": "example.com", "local_part": "Jane", "quota": 512})
    assert made.status == 202, made.body
    assert made.body["type"] == "success" and made.headers["Location"] == url(
        make.client, "task", task_id=made.body["task_id"])
    status, polled = await make.task(key, made.body["task_id"], "get_mailbox_single")
    assert status == 200 and polled["status"] == "queued"
    await make.run_worker()
    status, polled = await make.task(key, made.body["task_id"], "get_mailbox_single")
    assert polled["results"]["jane@example.com"]["status"] == "Created successfully."
    generated = polled["results"]["jane@example.com"]["password"]
    # ... and the resource API shows the same generated password in its task
    task = (await make.rest("GET", "task", key, task_id=made.body["task_id"])).body
    assert task["results"]["jane@example.com"] == {"status": "Created successfully.",
                                                   "password": generated}
    # every task of either face, by either face
    mailapi_seen = (await make.rest("GET", "task", key, task_id=mailapi_task)).body
    assert mailapi_seen["type"] == "mailbox_single" and mailapi_seen["status"] == "completed"
    assert set(await _listed(make, key, account_id)) == {"john@example.com", "jane@example.com"}
    row = await db.pool.fetchrow("SELECT * FROM mailboxes WHERE address = 'jane@example.com'")
    assert passwords.verify(row["password_hash"], generated) and row["quota_mb"] == 512

    # deleted through the resource API: gone from the MailAPI's list and the mail stack
    deleted = await make.done(key, await make.rest("DELETE", "mailbox_delete", key,
                                                   email="john@example.com"))
    assert deleted["results"] == {"john@example.com": {"status": "Deleted successfully."}}
    assert set(await _listed(make, key, account_id)) == {"jane@example.com"}
    seen = await db.pool.fetch("SELECT address FROM mail_mailboxes")
    assert [r["address"] for r in seen] == ["jane@example.com"]
    assert (await make.rest("GET", "mailbox", key, email="john@example.com")).body[
        "status"] == "deleted"


async def test_password_changes_are_hashed_as_creates_do_and_never_kept_plain(make, db, caplog):
    _, key = await make.account()
    await make.domain(key)
    await make.done(key, await make.rest("POST", "mailbox_create", key,
                                         {"domain": "example.com", "local_part": "john"}))
    caplog.set_level(logging.DEBUG)
    secret = "a-new-long-secret-9"
    answer = await make.rest("PUT", "mailbox_update", key, {"password": secret},
                             email="john@example.com")
    payload = await db.pool.fetchval("SELECT payload::text FROM tasks WHERE id = $1",
                                     answer.body["task_id"])
    # the password waits sealed in its task until the worker hashes it
    assert secret not in payload and '"password_sealed": "v1.' in payload
    task = await make.done(key, answer)
    assert task["status"] == "completed"
    stored = await db.pool.fetchval(
        "SELECT password_hash FROM mailboxes WHERE address = 'john@example.com'")
    assert stored.startswith("{ARGON2ID}$argon2id$v=19$") and passwords.verify(stored, secret)
    dump = await db.pool.fetchval("SELECT string_agg(payload::text || results::text, '') "
                                  "FROM tasks")
    assert secret not in dump and "password_sealed" not in dump
    assert secret not in caplog.text

    # a hash from elsewhere is taken as given
    given = "{SHA512-CRYPT}$6$saltsalt$abcdefghijklmnopqrstuvwxyz"
    await make.done(key, await make.rest("PUT", "mailbox_update", key,
                                         {"password_hash": given}, email="john@example.com"))
    assert await db.pool.fetchval("SELECT password_hash FROM mailboxes") == given
    both = await make.rest("PUT", "mailbox_update", key,
                           {"password": secret, "password_hash": given},
                           email="john@example.com")
    assert both.status == 422 and "password_hash" in both.body["errors"]
    plain = await make.rest("PUT", "mailbox_update", key, {"password_hash": "{PLAIN}x"},
                            email="john@example.com")
    assert plain.status == 422 and plain.body["type"] == "error"


async def test_quota_changes_stay_within_the_domains_limits(make, db):
    _, key = await make.account()
    await make.done(key, await make.rest("POST", "domain_create", key, {
        "domain": "example.com", "quota": 2500, "maxquota": 2000, "defquota": 1000}))
    for local in ("a", "b"):
        await make.done(key, await make.rest("POST", "mailbox_create", key,
                                             {"domain": "example.com", "local_part": local}))
    over_max = await make.rest("PUT", "mailbox_update", key, {"quota": 2001},
                               email="a@example.com")
    assert over_max.status == 422
    assert over_max.body["errors"] == {"quota": ["Mailbox quota above the domain's maximum."]}
    over_total = await make.rest("PUT", "mailbox_update", key, {"quota": 2000},
                                 email="a@example.com")
    assert over_total.status == 422 and over_total.body["msg"] == (
        "quota: Domain quota exceeded.")
    # within what the total has left once a's own quota is given back
    task = await make.done(key, await make.rest("PUT", "mailbox_update", key, {"quota": 1499},
                                                email="a@example.com"))
    assert task["status"] == "completed"
    domain = await db.pool.fetchrow("SELECT * FROM domains")
    assert domain["quota_used_mb"] == 2499 and domain["mailbox_count"] == 2
    new = await make.rest("POST", "mailbox_create", key,
                          {"domain": "example.com", "local_part": "c", "quota": 2})
    assert new.status == 422 and new.body["errors"]["quota"] == ["Domain quota exceeded."]


async def test_delete_keeps_the_address_taken_until_purged_and_restore_brings_it_back(make, db):
    account_id, key = await make.account()
    await make.domain(key, max_mailboxes=2)
    await make.done(key, await make.rest("POST", "mailbox_create", key, {
        "domain": "example.com", "local_part": "john", "name": "John", "tls_enforce_in": True}))
    before = await db.pool.fetchrow("SELECT * FROM mailboxes")
    await make.done(key, await make.rest("DELETE", "mailbox_delete", key,
                                         email="john@example.com"))
    assert (await db.pool.fetchval("SELECT mailbox_count FROM domains")) == 0

    # taken: both faces refuse a new mailbox at the address
    again = await make.rest("POST", "mailbox_create", key,
                            {"domain": "example.com", "local_part": "john"})
    assert again.status == 409 and again.body["msg"] == "Mailbox already exists."
    r = await make.post("create_mailbox_single", {**JOHN, "Params": {}}, key)
    await make.run_worker()
    status, failed = await make.task(key, (await r.json())["task_id"], "get_mailbox_single")
    assert status == 422 and failed["reason"] == "Mailbox already exists."
    twice = await make.rest("DELETE", "mailbox_delete", key, email="john@example.com")
    assert twice.status == 409 and "purge=true" in twice.body["msg"]
    changed = await make.rest("PUT", "mailbox_update", key, {"active": False},
                              email="john@example.com")
    assert changed.status == 409 and changed.body["msg"] == (
        "The mailbox is deleted; restore it first.")

    restored = await make.done(key, await make.rest("POST", "mailbox_restore", key,
                                                    email="john@example.com"))
    assert restored["results"] == {"john@example.com": {"status": "Restored successfully."}}
    after = await db.pool.fetchrow("SELECT * FROM mailboxes")
    # as it was: the same row, password, home and flags
    for column in ("id", "password_hash", "home", "display_name", "tls_enforce_in", "quota_mb"):
        assert after[column] == before[column], column
    assert after["deleted_at"] is None
    assert (await db.pool.fetchval("SELECT mailbox_count FROM domains")) == 1
    assert "john@example.com" in await _listed(make, key, account_id)
    not_deleted = await make.rest("POST", "mailbox_restore", key, email="john@example.com")
    assert not_deleted.status == 409

    # forgotten at once with ?purge=true: the address is free again, restore is a 404
    purged = await make.done(key, await make.rest("DELETE", "mailbox_delete", key,
                                                  params={"purge": "true"},
                                                  email="john@example.com"))
    assert purged["results"] == {"john@example.com": {"status": "Deleted for good."}}
    assert await db.pool.fetchval("SELECT count(*) FROM mailboxes") == 0
    assert (await db.pool.fetchval("SELECT mailbox_count FROM domains")) == 0
    gone = await make.rest("POST", "mailbox_restore", key, email="john@example.com")
    assert gone.status == 404 and gone.body == {"type": "error",
                                                "msg": "Mailbox not found for this account."}
    await make.done(key, await make.rest("POST", "mailbox_create", key,
                                         {"domain": "example.com", "local_part": "john"}))
    assert (await db.pool.fetchval("SELECT home FROM mailboxes")) != before["home"]


async def test_restore_past_a_limit_is_refused_and_changes_nothing(make, db):
    _, key = await make.account()
    await make.domain(key, max_mailboxes=1)
    await make.done(key, await make.rest("POST", "mailbox_create", key,
                                         {"domain": "example.com", "local_part": "a"}))
    await make.done(key, await make.rest("DELETE", "mailbox_delete", key, email="a@example.com"))
    await make.done(key, await make.rest("POST", "mailbox_create", key,
                                         {"domain": "example.com", "local_part": "b"}))
    refused = await make.rest("POST", "mailbox_restore", key, email="a@example.com")
    assert refused.status == 422 and refused.body["msg"] == "Mailbox limit reached."
    tasks = await db.pool.fetchval("SELECT count(*) FROM tasks")
    # the bulk action reports it per item instead
    bulk = await make.done(key, await make.rest("POST", "mailbox_bulk_action", key, {
        "action": "restore", "emails": ["a@example.com", "b@example.com", "x@example.com"]}))
    assert bulk["status"] == "completed" and bulk["results"] == {
        "a@example.com": {"status": "Mailbox limit reached."},
        "b@example.com": {"status": "Not deleted."},
        "x@example.com": {"status": "Not found."}}
    assert await db.pool.fetchval("SELECT count(*) FROM tasks") == tasks + 1
    assert await db.pool.fetchval(
        "SELECT count(*) FROM mailboxes WHERE deleted_at IS NULL") == 1


async def test_bulk_actions_give_a_result_per_address(make, db):
    _, key = await make.account()
    other_id, other = await make.account("other")
    await make.domain(key)
    await make.domain(other, "other.example")
    r = await make.post("create_mailbox_bulk", {
        "Email_fullname": "u", "single_bulk": "bulk", "Domain": "example.com",
        "Params": {"count": 5}}, key)
    assert r.status == 200
    await make.post("create_mailbox_single", {**JOHN, "Domain": "other.example",
                                              "Params": {}}, other)
    await make.run_worker()
    emails = [f"u{n}@example.com" for n in range(1, 6)]
    off = await make.done(key, await make.rest("POST", "mailbox_bulk_action", key, {
        "action": "deactivate", "emails": [*emails[:3], "john@other.example"]}))
    # another account's mailbox is reported as one that does not exist
    assert off["results"] == {**{e: {"status": "Deactivated successfully."} for e in emails[:3]},
                              "john@other.example": {"status": "Not found."}}
    assert off["progress"] == {"done": 4, "total": 4}
    assert await db.pool.fetchval(
        "SELECT count(*) FROM mailboxes m JOIN domains d ON d.id = m.domain_id "
        "WHERE d.name = 'other.example' AND m.active") == 1
    gone = await make.done(key, await make.rest("POST", "mailbox_bulk_action", key, {
        "action": "delete", "emails": emails}))
    assert {v["status"] for v in gone["results"].values()} == {"Deleted successfully."}
    on = await make.done(key, await make.rest("POST", "mailbox_bulk_action", key, {
        "action": "activate", "emails": emails[:1]}))
    assert on["results"] == {emails[0]: {"status": "Deleted; restore it first."}}
    forgot = await make.done(key, await make.rest("POST", "mailbox_bulk_action", key, {
        "action": "forget", "emails": emails[:2]}))
    assert {v["status"] for v in forgot["results"].values()} == {"Deleted for good."}
    assert await db.pool.fetchval("SELECT count(*) FROM mailboxes m JOIN domains d "
                                  "ON d.id = m.domain_id WHERE d.name = 'example.com'") == 3

    too_many = await make.rest("POST", "mailbox_bulk_action", key, {
        "action": "delete", "emails": [f"x{n}@example.com" for n in range(1001)]})
    assert too_many.status == 422 and too_many.body["errors"] == {
        "emails": ["Give 1 to 1000 items."]}
    for bad in ({"action": "explode", "emails": emails}, {"action": "delete", "emails": []},
                {"action": "delete", "emails": ["not-an-address"]},
                {"action": "delete", "emails": [emails[0], emails[0]]}):
        refused = await make.rest("POST", "mailbox_bulk_action", key, bad)
        assert refused.status == 422, (bad, refused.body)
    assert other_id


async def test_another_accounts_mailbox_is_a_404_on_every_route(make, db):
    _, key = await make.account()
    _, other = await make.account("other")
    await make.domain(key)
    await make.done(key, await make.rest("POST", "mailbox_create", key,
                                         {"domain": "example.com", "local_part": "john"}))
    tasks = await db.pool.fetchval("SELECT count(*) FROM tasks")
    for method, route, body in (("GET", "mailbox", None), ("PUT", "mailbox_update",
                                                           {"active": False}),
                                ("DELETE", "mailbox_delete", None),
                                ("POST", "mailbox_restore", None)):
        for email in ("john@example.com", "nobody@example.com"):
            r = await make.rest(method, route, other, body, email=email)
            assert r.status == 404, (route, r.body)
            assert r.body == {"type": "error", "msg": "Mailbox not found for this account."}
    created = await make.rest("POST", "mailbox_create", other,
                              {"domain": "example.com", "local_part": "x"})
    assert created.status == 404 and created.body["msg"] == "Domain not found for this account."
    assert await db.pool.fetchval("SELECT count(*) FROM tasks") == tasks
