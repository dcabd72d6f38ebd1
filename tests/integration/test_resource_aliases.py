"""/api/v1/aliases and /api/v1/alias-domains end to end (api-resources.md, "Aliases" and
"Alias domains"), and what the mail stack's views serve of them."""

from __future__ import annotations

SALES = {"address": "Sales@Example.com", "goto": ["a@example.com", "Boss@Elsewhere.org"]}


async def _mail_aliases(db) -> dict[str, str]:
    return {r["address"]: r["goto"] for r in await db.pool.fetch("SELECT * FROM mail_aliases")}


async def test_create_change_delete_restore_and_forget_an_alias(make, db):
    _, key = await make.account()
    await make.domain(key, max_mailboxes=5)
    made = await make.rest("POST", "alias_create", key, SALES)
    assert made.status == 202 and isinstance(made.body["id"], int)
    alias_id = made.body["id"]
    # not there until its task has made it
    assert (await make.rest("GET", "alias", key, id=alias_id)).status == 404
    task = await make.done(key, made)
    assert task["type"] == "alias" and task["results"] == {
        str(alias_id): {"status": "Created successfully."}}
    alias = (await make.rest("GET", "alias", key, id=alias_id)).body
    assert alias["address"] == "sales@example.com" and alias["status"] == "active"
    assert alias["goto"] == ["a@example.com", "boss@elsewhere.org"]
    assert await _mail_aliases(db) == {"sales@example.com": "a@example.com,boss@elsewhere.org"}
    assert await db.pool.fetchval("SELECT alias_count FROM domains") == 1

    await make.done(key, await make.rest("PUT", "alias_update", key,
                                         {"goto": ["c@example.com"], "active": False},
                                         id=alias_id))
    alias = (await make.rest("GET", "alias", key, id=alias_id)).body
    assert alias["goto"] == ["c@example.com"] and alias["status"] == "inactive"
    assert await _mail_aliases(db) == {}
    await make.done(key, await make.rest("PUT", "alias_update", key, {"active": True},
                                         id=alias_id))

    deleted = await make.done(key, await make.rest("DELETE", "alias_delete", key, id=alias_id))
    assert deleted["results"] == {str(alias_id): {"status": "Deleted successfully."}}
    assert await _mail_aliases(db) == {} and await db.pool.fetchval(
        "SELECT alias_count FROM domains") == 0
    # the address stays taken by the deleted alias
    again = await make.rest("POST", "alias_create", key, SALES)
    assert again.status == 409 and again.body["msg"] == "Alias already exists."
    assert (await make.rest("PUT", "alias_update", key, {"active": False}, id=alias_id)).status \
        == 409
    await make.done(key, await make.rest("POST", "alias_restore", key, id=alias_id))
    assert await _mail_aliases(db) == {"sales@example.com": "c@example.com"}

    forgot = await make.done(key, await make.rest("DELETE", "alias_forget", key, id=alias_id))
    assert forgot["results"] == {str(alias_id): {"status": "Deleted for good."}}
    assert await db.pool.fetchval("SELECT count(*) FROM aliases") == 0
    assert await db.pool.fetchval("SELECT alias_count FROM domains") == 0
    assert (await make.rest("POST", "alias_restore", key, id=alias_id)).status == 404
    await make.done(key, await make.rest("POST", "alias_create", key, SALES))


async def test_a_catch_all_and_the_rules_an_address_follows(make, db):
    _, key = await make.account()
    await make.domain(key)
    await make.done(key, await make.rest("POST", "mailbox_create", key,
                                         {"domain": "example.com", "local_part": "john"}))
    catch_all = await make.done(key, await make.rest("POST", "alias_create", key, {
        "address": "@example.com", "goto": ["john@example.com"]}))
    assert catch_all["status"] == "completed"
    assert await _mail_aliases(db) == {"@example.com": "john@example.com"}

    shadow = await make.rest("POST", "alias_create", key,
                             {"address": "john@example.com", "goto": ["x@example.org"]})
    assert shadow.status == 409 and shadow.body["msg"] == (
        "A mailbox has this address; an alias cannot shadow it.")
    await make.done(key, await make.rest("POST", "alias_create", key, SALES))
    # nor a mailbox over an alias, by either face
    over = await make.rest("POST", "mailbox_create", key,
                           {"domain": "example.com", "local_part": "sales"})
    assert over.status == 409 and over.body["msg"] == "An alias has this address already."
    r = await make.post("create_mailbox_single", {
        "Email_fullname": "sales", "single_bulk": "single", "Domain": "example.com",
        "Params": {}}, key)
    await make.run_worker()
    status, failed = await make.task(key, (await r.json())["task_id"], "get_mailbox_single")
    assert status == 422 and failed["results"] == {"sales@example.com": {
        "status": "Already exists."}}
    assert await db.pool.fetchval("SELECT count(*) FROM mailboxes") == 1

    tasks = await db.pool.fetchval("SELECT count(*) FROM tasks")
    for bad, field in (({"address": "x@example.com", "goto": ["not an address"]}, "goto.0"),
                       ({"address": "x@example.com", "goto": []}, "goto"),
                       ({"address": "x@example.com", "goto": [f"u{n}@a.org" for n in range(51)]},
                        "goto"),
                       ({"address": "x@example.com", "goto": ["x@example.com"]}, "goto"),
                       ({"address": "x@example.com"}, "goto"),
                       ({"address": "nobody", "goto": ["a@b.org"]}, "address"),
                       ({"address": "x@example.com", "goto": ["a@b.org"], "active": "yes"},
                        "active")):
        refused = await make.rest("POST", "alias_create", key, bad)
        assert refused.status == 422, (bad, refused.body)
        assert field in refused.body["errors"], (bad, refused.body)
    elsewhere = await make.rest("POST", "alias_create", key,
                                {"address": "x@nowhere.example", "goto": ["a@b.org"]})
    assert elsewhere.status == 404 and elsewhere.body["msg"] == (
        "Domain not found for this account.")
    assert await db.pool.fetchval("SELECT count(*) FROM tasks") == tasks


async def test_the_aliases_limit_holds(make, db):
    _, key = await make.account()
    await make.done(key, await make.rest("POST", "domain_create", key,
                                         {"domain": "example.com", "aliases": 1}))
    first = await make.done(key, await make.rest("POST", "alias_create", key, SALES))
    full = await make.rest("POST", "alias_create", key,
                           {"address": "info@example.com", "goto": ["a@b.org"]})
    assert full.status == 422 and full.body["msg"] == "Alias limit reached."
    alias_id = int(next(iter(first["results"])))
    await make.done(key, await make.rest("DELETE", "alias_delete", key, id=alias_id))
    await make.done(key, await make.rest("POST", "alias_create", key,
                                         {"address": "info@example.com", "goto": ["a@b.org"]}))
    refused = await make.rest("POST", "alias_restore", key, id=alias_id)
    assert refused.status == 422 and refused.body["msg"] == "Alias limit reached."


async def test_bulk_alias_actions(make, db):
    _, key = await make.account()
    _, other = await make.account("other")
    await make.domain(key)
    await make.domain(other, "other.example")
    ids = [(await make.done(key, await make.rest("POST", "alias_create", key, {
        "address": f"a{n}@example.com", "goto": ["x@example.org"]}))) for n in range(3)]
    mine = [int(next(iter(t["results"]))) for t in ids]
    theirs = await make.rest("POST", "alias_create", other,
                             {"address": "t@other.example", "goto": ["x@example.org"]})
    await make.run_worker()
    off = await make.done(key, await make.rest("POST", "alias_bulk_action", key, {
        "action": "deactivate", "ids": [*mine, theirs.body["id"]]}))
    assert off["results"] == {**{str(i): {"status": "Deactivated successfully."} for i in mine},
                              str(theirs.body["id"]): {"status": "Not found."}}
    assert await db.pool.fetchval("SELECT active FROM aliases WHERE id = $1", theirs.body["id"])
    gone = await make.done(key, await make.rest("POST", "alias_bulk_action", key,
                                                {"action": "delete", "ids": mine}))
    assert {v["status"] for v in gone["results"].values()} == {"Deleted successfully."}
    back = await make.done(key, await make.rest("POST", "alias_bulk_action", key,
                                                {"action": "restore", "ids": mine[:2]}))
    assert {v["status"] for v in back["results"].values()} == {"Restored successfully."}
    assert await db.pool.fetchval("SELECT alias_count FROM domains WHERE name = 'example.com'") \
        == 2
    for bad in ({"action": "delete", "ids": list(range(1, 27))},
                {"action": "delete", "ids": ["1"]}, {"action": "delete", "ids": [0]},
                {"action": "nothing", "ids": mine}):
        refused = await make.rest("POST", "alias_bulk_action", key, bad)
        assert refused.status == 422, (bad, refused.body)
    assert (await make.rest("POST", "alias_bulk_action", key, {
        "action": "delete", "ids": list(range(1, 26))})).status == 202


async def test_alias_domains(make, db):
    _, key = await make.account()
    _, other = await make.account("other")
    await make.domain(key)
    await make.domain(other, "theirs.example")
    await make.done(key, await make.rest("POST", "mailbox_create", key,
                                         {"domain": "example.com", "local_part": "john"}))
    made = await make.done(key, await make.rest("POST", "alias_domain_create", key, {
        "alias_domain": "Example.NET", "target_domain": "example.com"}))
    assert made["type"] == "alias_domain" and made["status"] == "completed"
    read = (await make.rest("GET", "alias_domain", key, alias_domain="example.net")).body
    assert read["alias_domain"] == "example.net" and read["target_domain"] == "example.com"
    assert read["active"] is True
    seen = await db.pool.fetch("SELECT * FROM mail_alias_domains")
    assert [(r["alias_domain"], r["target_domain"]) for r in seen] == [
        ("example.net", "example.com")]

    # hosted once per installation, as a domain or as an alias domain, by anyone
    for who, name in ((key, "example.net"), (other, "example.net"), (key, "theirs.example"),
                      (key, "example.com")):
        target = "example.com" if who == key else "theirs.example"
        taken = await make.rest("POST", "alias_domain_create", who,
                                {"alias_domain": name, "target_domain": target})
        assert taken.status == 409, (name, taken.body)
        assert taken.body["msg"] == (
            "This name is hosted already, as a domain or as an alias domain.")
    as_domain = await make.rest("POST", "domain_create", other, {"domain": "example.net"})
    assert as_domain.status == 409 and as_domain.body["msg"] == "Domain already exists."
    r = await make.post("create_domain", {"Domain": "example.net"}, other)
    assert r.status == 409
    not_mine = await make.rest("POST", "alias_domain_create", key, {
        "alias_domain": "x.example", "target_domain": "theirs.example"})
    assert not_mine.status == 404 and not_mine.body["msg"] == "Domain not found for this account."

    await make.done(key, await make.rest("PUT", "alias_domain_update", key, {"active": False},
                                         alias_domain="example.net"))
    assert await db.pool.fetchval("SELECT count(*) FROM mail_alias_domains") == 0
    assert (await make.rest("GET", "alias_domain", other, alias_domain="example.net")).status \
        == 404
    assert (await make.rest("PUT", "alias_domain_update", key, {},
                            alias_domain="example.net")).status == 422
    listed = (await make.rest("GET", "alias_domains", key)).body
    assert [a["alias_domain"] for a in listed["data"]] == ["example.net"]
    gone = await make.done(key, await make.rest("DELETE", "alias_domain_delete", key,
                                                alias_domain="example.net"))
    assert gone["results"] == {"example.net": {"status": "Deleted for good."}}
    assert await db.pool.fetchval("SELECT count(*) FROM alias_domains") == 0
    # free again, for anyone
    await make.done(other, await make.rest("POST", "domain_create", other,
                                           {"domain": "example.net"}))
