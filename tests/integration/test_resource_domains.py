"""/api/v1/domains end to end (api-resources.md, "Domains"), and what the MailAPI and the
mail stack see of a domain's lifecycle."""

from __future__ import annotations

from tests.conftest import url


async def _mailapi_domains(make, key: str, account_id: int) -> dict:
    r = await make.client.get(url(make.client, "list_domain"),
                              params={"key": key, "caller_id": account_id})
    assert r.status == 200
    return (await r.json())["results"]


async def test_create_read_and_change_a_domain_with_seed_003s_fields(make, db):
    account_id, key = await make.account()
    body = {"domain": "Example.COM", "active": True, "aliases": 400, "backupmx": False,
            "defquota": 3072, "description": "Example domain", "mailboxes": 10,
            "maxquota": 10240, "quota": 30720}
    made = await make.rest("POST", "domain_create", key, body)
    assert made.status == 202 and made.body["task_id"] > 0
    pending = await make.rest("GET", "domain", key, domain="example.com")
    assert pending.body["status"] == "pending"
    task = await make.done(key, made)
    assert task["type"] == "domain" and task["status"] == "completed"
    domain = (await make.rest("GET", "domain", key, domain="example.com")).body
    assert {k: domain[k] for k in body} == {**body, "domain": "example.com"}
    assert domain["status"] == "active" and domain["parent"] is None
    assert domain["mailbox_count"] == domain["alias_count"] == domain["quota_used"] == 0
    # the MailAPI's names for the same numbers
    listed = (await _mailapi_domains(make, key, account_id))["example.com"]
    assert listed["domain_quota"] == "30GB" and listed["status"] == "active"

    changed = await make.done(key, await make.rest("PUT", "domain_update", key, {
        "description": None, "backupmx": True, "mailboxes": 20}, domain="example.com"))
    assert changed["results"] == {"example.com": {"status": "Updated successfully."}}
    domain = (await make.rest("GET", "domain", key, domain="example.com")).body
    assert domain["description"] is None and domain["backupmx"] and domain["mailboxes"] == 20
    assert domain["updated_at"] >= domain["created_at"]

    # hosted once per installation: another account, or the same, gets 409
    _, other = await make.account("other")
    for who in (key, other):
        again = await make.rest("POST", "domain_create", who, {"domain": "example.com"})
        assert again.status == 409 and again.body == {"type": "error",
                                                      "msg": "Domain already exists."}
    renamed = await make.rest("PUT", "domain_update", key, {"domain": "x.example"},
                              domain="example.com")
    assert renamed.status == 422 and renamed.body["errors"] == {"domain": ["Unknown field."]}


async def test_defaults_hold_their_own_number_of_default_mailboxes(make, db):
    _, key = await make.account()
    made = await make.rest("POST", "domain_create", key, {"domain": "example.com"})
    await make.done(key, made)
    domain = (await make.rest("GET", "domain", key, domain="example.com")).body
    assert (domain["quota"], domain["mailboxes"], domain["defquota"], domain["maxquota"],
            domain["aliases"]) == (102400, 100, 1024, 102400, 400)
    # 100 default mailboxes, through both faces' defaults
    r = await make.post("create_mailbox_bulk", {
        "Email_fullname": "u", "single_bulk": "bulk", "Domain": "example.com",
        "Params": {"count": 100}}, key)
    await make.run_worker()
    status, task = await make.task(key, (await r.json())["task_id"], "get_mailbox_bulk")
    assert status == 200
    assert {v["status"] for v in task["results"].values()} == {"Created successfully."}
    full = (await make.rest("GET", "domain", key, domain="example.com")).body
    assert full["mailbox_count"] == 100 and full["quota_used"] == 102400


async def test_a_limit_below_what_is_in_use_is_refused_and_changes_nothing(make, db):
    _, key = await make.account()
    await make.done(key, await make.rest("POST", "domain_create", key, {
        "domain": "example.com", "quota": 4096, "mailboxes": 5, "aliases": 5}))
    for local, quota in (("a", 1024), ("b", 2048)):
        await make.done(key, await make.rest("POST", "mailbox_create", key, {
            "domain": "example.com", "local_part": local, "quota": quota}))
    await make.done(key, await make.rest("POST", "alias_create", key, {
        "address": "sales@example.com", "goto": ["a@example.com"]}))
    tasks = await db.pool.fetchval("SELECT count(*) FROM tasks")
    for change, field, message in (
            ({"mailboxes": 1}, "mailboxes", "Cannot be lower than what is in use: 2 mailboxes."),
            ({"aliases": 0}, "aliases", "Cannot be lower than what is in use: 1 aliases."),
            ({"quota": 3000}, "quota",
             "Cannot be lower than what is in use: 3072 MB given to mailboxes."),
            ({"maxquota": 2000}, "maxquota",
             "Cannot be lower than what is in use: 2048 MB, the largest mailbox quota."),
            ({"defquota": 5000}, "defquota", "Cannot be larger than maxquota."),
            # maxquota defaulted to the old quota, 4096: above the new one
            ({"quota": 4000}, "maxquota", "Cannot be larger than quota.")):
        refused = await make.rest("PUT", "domain_update", key, change, domain="example.com")
        assert refused.status == 422, (change, refused.body)
        assert refused.body["errors"] == {field: [message]}, refused.body
    empty = await make.rest("PUT", "domain_update", key, {}, domain="example.com")
    assert empty.status == 422
    assert await db.pool.fetchval("SELECT count(*) FROM tasks") == tasks
    # exactly what is in use is fine
    ok = await make.done(key, await make.rest("PUT", "domain_update", key, {
        "mailboxes": 2, "aliases": 1, "quota": 3072, "maxquota": 2048, "defquota": 1024},
        domain="example.com"))
    assert ok["status"] == "completed"


async def test_delete_takes_sub_domains_mailboxes_and_aliases_and_restore_brings_them_back(
        make, db):
    account_id, key = await make.account()
    await make.domain(key)
    r = await make.post("create_sub_domain", {"Domain": "example.com",
                                              "Params": {"sub_domains": ["team"]}}, key)
    assert r.status == 200
    await make.run_worker()
    for domain, local in (("example.com", "a"), ("example.com", "b"), ("team.example.com", "c")):
        await make.done(key, await make.rest("POST", "mailbox_create", key,
                                             {"domain": domain, "local_part": local}))
    await make.done(key, await make.rest("POST", "alias_create", key, {
        "address": "@example.com", "goto": ["a@example.com"]}))
    # b was deleted on its own before the domain: the domain's restore leaves it deleted
    await make.done(key, await make.rest("DELETE", "mailbox_delete", key, email="b@example.com"))

    deleted = await make.done(key, await make.rest("DELETE", "domain_delete", key,
                                                   domain="example.com"))
    assert deleted["results"] == {"example.com": {"status": "Deleted successfully."}}
    assert await _mailapi_domains(make, key, account_id) == {}
    for view in ("mail_domains", "mail_mailboxes", "mail_aliases"):
        assert await db.pool.fetchval(f"SELECT count(*) FROM {view}") == 0, view  # noqa: S608
    sub = (await make.rest("GET", "domain", key, domain="team.example.com")).body
    assert sub["status"] == "deleted" and sub["mailbox_count"] == 0
    # the names stay taken; the MailAPI no longer sees the domain
    assert (await make.rest("POST", "domain_create", key, {"domain": "example.com"})).status \
        == 409
    r = await make.post("create_mailbox_single", {"Email_fullname": "z", "single_bulk": "single",
                                                  "Domain": "example.com", "Params": {}}, key)
    assert r.status == 404
    sub_restore = await make.rest("POST", "domain_restore", key, domain="team.example.com")
    assert sub_restore.status == 409 and sub_restore.body["msg"] == (
        "The parent domain is deleted; restore it first.")
    twice = await make.rest("DELETE", "domain_delete", key, domain="example.com")
    assert twice.status == 409

    restored = await make.done(key, await make.rest("POST", "domain_restore", key,
                                                    domain="example.com"))
    assert restored["results"] == {"example.com": {"status": "Restored successfully."}}
    live = {r["address"] for r in await db.pool.fetch("SELECT address FROM mail_mailboxes")}
    assert live == {"a@example.com", "c@team.example.com"}
    assert await db.pool.fetchval("SELECT count(*) FROM mail_aliases") == 1
    counts = {r["name"]: (r["mailbox_count"], r["alias_count"], r["quota_used_mb"])
              for r in await db.pool.fetch("SELECT * FROM domains")}
    assert counts == {"example.com": (1, 1, 1024), "team.example.com": (1, 0, 1024)}
    assert set(await _mailapi_domains(make, key, account_id)) == {"example.com",
                                                                  "team.example.com"}


async def test_purge_and_bulk_delete(make, db):
    _, key = await make.account()
    _, other = await make.account("other")
    for name in ("a.example", "b.example", "c.example"):
        await make.domain(key, name)
    await make.domain(other, "theirs.example")
    await make.done(key, await make.rest("POST", "mailbox_create", key,
                                         {"domain": "a.example", "local_part": "x"}))
    await make.done(key, await make.rest("POST", "alias_domain_create", key, {
        "alias_domain": "alias.example", "target_domain": "a.example"}))

    bulk = await make.rest("POST", "domain_bulk_delete", key, {
        "domains": ["b.example", "c.example", "theirs.example", "nowhere.example"]})
    assert bulk.status == 202
    assert bulk.body["msg"] == "Successfully scheduled to delete these 4 domains"
    task = await make.done(key, bulk)
    assert task["type"] == "domain_bulk_delete" and task["status"] == "completed"
    assert task["results"] == {"b.example": {"status": "Deleted successfully."},
                               "c.example": {"status": "Deleted successfully."},
                               "theirs.example": {"status": "Not found."},
                               "nowhere.example": {"status": "Not found."}}
    theirs = await db.pool.fetchval("SELECT deleted_at FROM domains WHERE name = 'theirs.example'")
    assert theirs is None

    purged = await make.done(key, await make.rest("DELETE", "domain_delete", key,
                                                  params={"purge": "true"}, domain="a.example"))
    assert purged["results"] == {"a.example": {"status": "Deleted for good."}}
    left = {r["name"] for r in await db.pool.fetch("SELECT name FROM domains")}
    assert left == {"b.example", "c.example", "theirs.example"}
    assert await db.pool.fetchval("SELECT count(*) FROM mailboxes") == 0
    assert await db.pool.fetchval("SELECT count(*) FROM alias_domains") == 0
    after = await make.rest("POST", "domain_restore", key, domain="a.example")
    assert after.status == 404 and after.body["msg"] == "Domain not found for this account."
    # a deleted domain can still be purged; its name is free afterwards
    await make.done(key, await make.rest("DELETE", "domain_delete", key,
                                         params={"purge": "true"}, domain="b.example"))
    await make.done(other, await make.rest("POST", "domain_create", other,
                                           {"domain": "b.example"}))

    for bad in ({"domains": []}, {"domains": ["x"]}, {"domains": ["a.example"] * 2},
                {"domains": [f"d{n}.example" for n in range(101)]}, {}):
        refused = await make.rest("POST", "domain_bulk_delete", key, bad)
        assert refused.status == 422, (bad, refused.body)


async def test_another_accounts_domain_is_a_404_on_every_route(make, db):
    _, key = await make.account()
    _, other = await make.account("other")
    await make.domain(key)
    tasks = await db.pool.fetchval("SELECT count(*) FROM tasks")
    for method, route, body in (("GET", "domain", None),
                                ("PUT", "domain_update", {"active": False}),
                                ("DELETE", "domain_delete", None),
                                ("POST", "domain_restore", None)):
        for name in ("example.com", "nowhere.example", "not a domain"):
            r = await make.rest(method, route, other, body, domain=name)
            assert r.status == 404 and r.body == {
                "type": "error", "msg": "Domain not found for this account."}, (route, name)
    assert await db.pool.fetchval("SELECT count(*) FROM tasks") == tasks
    listed = await make.rest("GET", "domains", other)
    assert listed.body["data"] == [] and listed.body["meta"]["total"] == 0
