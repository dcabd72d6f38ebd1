"""The resource API's conventions (api-resources.md, "Conventions" and "Tasks"): Bearer
keys, its error shape everywhere under its paths, pages with filters and sorts, 202 with
Location, Idempotency-Key, and tasks of either face."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.conftest import url


async def _fill(make, key: str, db, n: int, domain: str = "example.com") -> None:
    """n mailboxes, u0..u{n-1}, through the MailAPI's bulk create."""
    await make.domain(key, domain, max_mailboxes=10**5, quota_mb=10**6)
    r = await make.post("create_mailbox_bulk", {
        "Email_fullname": "batch", "single_bulk": "bulk", "Domain": domain,
        "Params": {"mailboxes": [{"local_part": f"u{i}", "password_hash": "{SSHA}abc"}
                                 for i in range(n)]}}, key)
    assert r.status == 200, await r.text()
    await make.run_worker()


async def _walk(make, key: str, params: dict[str, str]) -> list[list[str]]:
    """Every page, following `next` links from the first."""
    pages = []
    r = await make.rest("GET", "mailboxes", key, params=params)
    while True:
        assert r.status == 200, r.body
        pages.append([m["email"] for m in r.body["data"]])
        following = r.body["links"]["next"]
        if following is None:
            return pages
        parts = urlsplit(following)
        r = await make.rest_url(key, f"{parts.path}?{parts.query}")


async def test_pages_are_walked_by_number_and_by_links(make, db):
    _, key = await make.account()
    await _fill(make, key, db, 230)
    # in the database's own collation, whatever the machine's is
    addresses = [r["address"] for r in await db.pool.fetch(
        "SELECT address FROM mailboxes ORDER BY address")]
    first = await make.rest("GET", "mailboxes", key, params={"page[size]": "50"})
    assert first.status == 200
    assert first.body["meta"] == {"current_page": 1, "last_page": 5, "per_page": 50,
                                  "total": 230}
    assert [m["email"] for m in first.body["data"]] == addresses[:50]
    assert first.body["links"]["prev"] is None
    assert "page%5Bnumber%5D=5" in first.body["links"]["last"]
    # by number, from the start, the middle and the end
    for number in (2, 3, 5, 6):
        page = await make.rest("GET", "mailboxes", key,
                               params={"page[size]": "50", "page[number]": str(number)})
        assert [m["email"] for m in page.body["data"]] == addresses[50 * (number - 1):
                                                                    50 * number], number
        assert page.body["meta"]["current_page"] == number
        assert (page.body["links"]["next"] is None) == (number >= 5)
    # far past the end, with the largest pages: empty, not an overflow (found by fuzzing)
    for listing in ("mailboxes", "domains", "tasks", "aliases", "alias_domains"):
        far = await make.rest("GET", listing, key, params={"page[size]": "1000",
                                                          "page[number]": str(10**9)})
        assert far.status == 200 and far.body["data"] == [], (listing, far.body)
    # by links, both ways, in both orders, with the filters kept
    pages = await _walk(make, key, {"page[size]": "50", "filter[domain]": "example.com"})
    assert pages == [addresses[i:i + 50] for i in range(0, 230, 50)]
    backwards = await _walk(make, key, {"page[size]": "64", "sort": "-email"})
    assert [a for page in backwards for a in page] == addresses[::-1]
    last = await make.rest("GET", "mailboxes", key, params={"page[size]": "64",
                                                            "page[number]": "4"})
    r = last
    walked = [[m["email"] for m in r.body["data"]]]
    while r.body["links"]["prev"] is not None:
        parts = urlsplit(r.body["links"]["prev"])
        r = await make.rest_url(key, f"{parts.path}?{parts.query}")
        walked.insert(0, [m["email"] for m in r.body["data"]])
    assert walked == [addresses[i:i + 64] for i in range(0, 230, 64)]
    assert r.body["meta"]["current_page"] == 1

    # created_at, newest first, then a filter on the address
    newest = await make.rest("GET", "mailboxes", key, params={"sort": "-created_at",
                                                              "page[size]": "1000"})
    stamps = [m["created_at"] for m in newest.body["data"]]
    assert stamps == sorted(stamps, reverse=True) and len(stamps) == 230
    found = await make.rest("GET", "mailboxes", key, params={"filter[search]": "u22"})
    assert [m["email"] for m in found.body["data"]] == [a for a in addresses if "u22" in a]
    assert found.body["meta"]["total"] == 11


async def test_filters_deleted_and_active(make, db):
    _, key = await make.account()
    await _fill(make, key, db, 6)
    await make.done(key, await make.rest("POST", "mailbox_bulk_action", key, {
        "action": "delete", "emails": ["u0@example.com", "u1@example.com"]}))
    await make.done(key, await make.rest("POST", "mailbox_bulk_action", key, {
        "action": "deactivate", "emails": ["u2@example.com"]}))

    async def listed(**params: str) -> list[str]:
        r = await make.rest("GET", "mailboxes", key, params=params)
        assert r.status == 200, r.body
        return [m["email"].split("@")[0] for m in r.body["data"]]

    assert await listed() == ["u2", "u3", "u4", "u5"]
    assert await listed(**{"filter[deleted]": "only"}) == ["u0", "u1"]
    assert await listed(**{"filter[deleted]": "with"}) == [f"u{i}" for i in range(6)]
    assert await listed(**{"filter[active]": "false"}) == ["u2"]
    assert await listed(**{"filter[active]": "true", "filter[deleted]": "with"}) == [
        "u0", "u1", "u3", "u4", "u5"]
    assert await listed(**{"filter[domain]": "nowhere.example"}) == []
    domains = await make.rest("GET", "domains", key, params={"filter[search]": "exam"})
    assert [d["domain"] for d in domains.body["data"]] == ["example.com"]


@pytest.mark.parametrize("params", [
    {"page[size]": "1001"}, {"page[size]": "0"}, {"page[number]": "0"},
    {"page[number]": "x"}, {"sort": "password"}, {"sort": "-quota"},
    {"filter[nothing]": "x"}, {"filter[domian]": "example.com"}, {"key": "x"},
    {"filter[active]": "yes"}, {"filter[deleted]": "all"}, {"page[cursor]": "garbage"},
    {"filter[domain]": "not a domain"},
])
async def test_a_bad_list_parameter_is_a_422(make, params):
    _, key = await make.account()
    r = await make.rest("GET", "mailboxes", key, params=params)
    assert r.status == 422, (params, r.body)
    assert r.body["type"] == "error" and r.body["errors"], r.body


async def test_a_cursor_belongs_to_its_sort(make, db):
    _, key = await make.account()
    await _fill(make, key, db, 3)
    page = await make.rest("GET", "mailboxes", key, params={"page[size]": "1"})
    cursor = dict(p.split("=", 1) for p in urlsplit(page.body["links"]["next"]).query.split("&"))
    r = await make.rest("GET", "mailboxes", key, params={
        "sort": "created_at", "page[cursor]": cursor["page%5Bcursor%5D"]})
    assert r.status == 422 and r.body["errors"] == {
        "page[cursor]": ["This cursor belongs to another sort."]}


async def test_the_key_is_a_bearer_header_and_errors_have_the_resource_shape(make, client):
    _, key = await make.account()
    for method, path in (("GET", "/api/v1/mailboxes"), ("POST", "/api/v1/aliases")):
        r = await client.request(method, path, params={"key": key},
                                 json={} if method == "POST" else None)
        assert r.status == 401
        assert await r.json() == {"type": "error", "msg": "Invalid API key."}
    r = await client.post("/api/v1/domains", json={"domain": "a.example", "key": key})
    assert r.status == 401
    # with a header, a `key` field is just an unknown field
    r = await make.rest("POST", "domain_create", key, {"domain": "a.example", "key": key})
    assert r.status == 422 and r.body["errors"] == {"key": ["Unknown field."]}
    # what matches no route under the resource API still answers in its shape
    for method, path, status in (("GET", "/api/v1/mailboxes/a@b.example/nothing", 404),
                                 ("GET", "/api/v1/aliases/not-a-number", 404),
                                 ("PATCH", "/api/v1/domains/example.com", 405),
                                 ("DELETE", "/api/v1/tasks", 405)):
        r = await client.request(method, path, headers={"Authorization": f"Bearer {key}"})
        assert r.status == status, path
        body = await r.json()
        assert body["type"] == "error" and "msg" in body and "status" not in body, body
    # ... and the MailAPI's in its own
    r = await client.get("/api/v1/list/nothing")
    assert r.status == 404 and (await r.json())["status"] == "error"
    bad_json = await client.post("/api/v1/mailboxes", data=b"[1]",
                                 headers={"Authorization": f"Bearer {key}",
                                          "Content-Type": "application/json"})
    assert bad_json.status == 400 and (await bad_json.json()) == {
        "type": "error", "msg": "The request body must be a JSON object."}


async def test_idempotency_key_on_writes(make, db):
    _, key = await make.account()
    await make.domain(key)
    body = {"domain": "example.com", "local_part": "john"}
    first = await make.rest("POST", "mailbox_create", key, body,
                            headers={"Idempotency-Key": "create-john"})
    again = await make.rest("POST", "mailbox_create", key, body,
                            headers={"Idempotency-Key": "create-john"})
    assert first.status == again.status == 202
    assert again.body == first.body and again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert await db.pool.fetchval("SELECT count(*) FROM tasks WHERE type = 'mailbox_single'") == 1
    await make.run_worker()
    # a DELETE's query is part of what makes two requests the same
    soft = await make.rest("DELETE", "mailbox_delete", key, email="john@example.com",
                           headers={"Idempotency-Key": "del"})
    purge = await make.rest("DELETE", "mailbox_delete", key, params={"purge": "true"},
                            email="john@example.com", headers={"Idempotency-Key": "del"})
    assert soft.status == 202 and purge.status == 422
    for bad in ("", "x" * 256, "caf\u00e9"):
        r = await make.client.post(url(make.client, "mailbox_create"), json=body, headers={
            "Authorization": f"Bearer {key}", "Idempotency-Key": bad.encode().decode("latin-1")})
        assert r.status == 422, bad
        assert (await r.json())["errors"] == {
            "Idempotency-Key": ["Idempotency-Key must be 1 to 255 printable ASCII characters."]}


async def test_tasks_of_either_face_are_listed_and_read(make, db):
    _, key = await make.account()
    _, other = await make.account("other")
    domain_task = await make.domain(key)
    await make.done(key, await make.rest("POST", "mailbox_create", key,
                                         {"domain": "example.com", "local_part": "a"}))
    await make.rest("PUT", "mailbox_update", key, {"quota": 2}, email="a@example.com")
    listed = (await make.rest("GET", "tasks", key)).body
    assert [t["type"] for t in listed["data"]] == ["mailbox_update", "mailbox_single", "domain"]
    assert listed["data"][0]["status"] == "queued" and listed["data"][2]["id"] == domain_task
    assert listed["data"][0]["progress"] == {"done": 0, "total": 1}
    oldest = (await make.rest("GET", "tasks", key, params={"sort": "created_at"})).body
    assert [t["id"] for t in oldest["data"]] == [t["id"] for t in listed["data"]][::-1]
    queued = (await make.rest("GET", "tasks", key, params={"filter[status]": "queued"})).body
    assert [t["type"] for t in queued["data"]] == ["mailbox_update"]
    typed = (await make.rest("GET", "tasks", key, params={"filter[type]": "domain"})).body
    assert [t["id"] for t in typed["data"]] == [domain_task]
    await make.run_worker()
    done = (await make.rest("GET", "task", key, task_id=listed["data"][0]["id"])).body
    assert done["status"] == "completed" and done["finished_at"] >= done["created_at"]
    assert done["error"] is None and done["started_at"] is not None
    # the MailAPI polls the resource API's task, in its own shape
    status, seen = await make.task(key, done["id"])
    assert status == 200 and seen["type"] == "mailbox_update" and seen["Task_id"] == done["id"]
    assert (await make.rest("GET", "task", other, task_id=done["id"])).status == 404
    assert (await make.rest("GET", "tasks", other)).body["data"] == []
    missing = await make.rest("GET", "task", key, task_id=10**18 - 1)
    assert missing.status == 404
    assert missing.body["msg"] == "Task ID was not found for this API key."
    huge = await make.client.get(f"/api/v1/tasks/{2**63}",
                                 headers={"Authorization": f"Bearer {key}"})
    assert huge.status == 404 and (await huge.json())["type"] == "error"


async def test_a_failed_task_reads_as_a_resource(make, db):
    _, key = await make.account()
    await make.domain(key)
    made = await make.rest("POST", "alias_create", key,
                           {"address": "a@example.com", "goto": ["x@y.org"]})
    assert made.status == 202
    # the address is taken after the alias was accepted, before its task runs
    await db.pool.execute(
        "INSERT INTO mailboxes (domain_id, account_id, local_part, address, password_hash, "
        "quota_mb) SELECT id, account_id, 'a', 'a@example.com', '{SSHA}x', 1 FROM domains")
    task = await make.done(key, made)
    assert task["status"] == "failed" and task["error"] == "A mailbox has this address."
    assert task["results"] == {str(made.body["id"]): {"status": "A mailbox has this address."}}
    assert await db.pool.fetchval("SELECT count(*) FROM aliases") == 0
    assert await db.pool.fetchval("SELECT alias_count FROM domains") == 0
    # polled by the MailAPI, a failed task is its 422
    status, seen = await make.task(key, made.body["task_id"])
    assert status == 422 and seen["reason"] == "A mailbox has this address."
