"""create/mailbox/single, create/mailbox/bulk, list/mailbox and the task results."""

import asyncio

from service.core import passwords
from service.core.settings import Settings
from tests.conftest import url

JOHN = {"Email_fullname": "john", "single_bulk": "single", "Domain": "example.com",
        "Params": {"display_name": "John Doe", "quota_mb": 1024}}


async def test_single_mailbox_with_generated_password(make, client, db, redis, settings):
    account_id, key = await make.account()
    await make.domain(key)
    r = await make.post("create_mailbox_single", JOHN, key)
    assert r.status == 200, await r.text()
    created = await r.json()
    assert created["status"] == "success" and isinstance(created["task_id"], int)
    assert set(created) == {"status", "task_id"}

    status, queued = await make.task(key, created["task_id"], "get_mailbox_single")
    assert status == 200
    assert queued["status"] == "queued"
    assert queued["progress"] == {"done": 0, "total": 1}

    await make.run_worker()
    status, done = await make.task(key, created["task_id"], "get_mailbox_single")
    assert status == 200
    password = done["results"]["john@example.com"]["password"]
    assert done == {"Task_id": created["task_id"], "total_email": 1, "domain": "example.com",
                    "results": {"john@example.com": {"status": "Created successfully.",
                                                     "password": password}},
                    "status": "completed", "task_id": str(created["task_id"])}
    row = await db.pool.fetchrow("SELECT * FROM mailboxes WHERE address = 'john@example.com'")
    assert row["password_hash"].startswith("{ARGON2ID}$argon2id$")
    assert passwords.verify(row["password_hash"], password)
    assert row["display_name"] == "John Doe" and row["quota_mb"] == 1024
    assert row["quota_rule"] == "*:storage=1024M" and row["active"]
    # the plaintext is in Redis only, never in Postgres
    dump = await db.pool.fetchval("SELECT payload::text || results::text FROM tasks WHERE id=$1",
                                  created["task_id"])
    assert password not in dump

    listing = await client.get(url(client, "list_mailbox"),
                               params={"key": key, "caller_id": account_id,
                                       "domain": "example.com"})
    assert listing.status == 200
    body = await listing.json()
    assert body["user_id"] == str(account_id) and body["domain"] == "example.com"
    assert body["status"] == "success"
    entry = body["results"]["john@example.com"]
    assert entry["provisioning_status"] == "active"
    assert entry["mailbox_quota"] == "1024MB"
    assert entry["imap_credentials"] is None


async def test_generated_password_becomes_null_after_its_ttl(make, client, settings: Settings,
                                                             run_worker):
    _, key = await make.account()
    await make.domain(key)
    r = await make.post("create_mailbox_single", {**JOHN, "Params": {}}, key)
    task_id = (await r.json())["task_id"]
    await run_worker(settings=settings.replace(password_ttl_s=1))
    _, shown = await make.task(key, task_id, "get_mailbox_single")
    assert isinstance(shown["results"]["john@example.com"]["password"], str)
    await asyncio.sleep(1.2)
    _, later = await make.task(key, task_id, "get_mailbox_single")
    assert later["results"]["john@example.com"] == {"status": "Created successfully.",
                                                    "password": None}


async def test_supplied_password_and_hash_are_stored_hashed(make, db):
    _, key = await make.account()
    await make.domain(key)
    given_hash = passwords.hash_password("migrated-secret", 1, 1024)
    r1 = await make.post("create_mailbox_single",
                         {**JOHN, "Params": {"password": "a-long-secret"}}, key)
    r2 = await make.post("create_mailbox_single",
                         {**JOHN, "Email_fullname": "jane@example.com",
                          "Params": {"password_hash": given_hash}}, key)
    assert r1.status == r2.status == 200
    await make.run_worker()
    stored = dict(await db.pool.fetch("SELECT address, password_hash FROM mailboxes"))
    assert passwords.verify(stored["john@example.com"], "a-long-secret")
    assert stored["jane@example.com"] == given_hash
    payloads = await db.pool.fetchval("SELECT string_agg(payload::text, '') FROM tasks")
    assert "a-long-secret" not in payloads
    _, task = await make.task(key, (await r1.json())["task_id"], "get_mailbox_single")
    assert task["results"] == {"john@example.com": {"status": "Created successfully."}}


async def test_existing_single_mailbox_fails_the_task(make):
    _, key = await make.account()
    await make.domain(key)
    first = await (await make.post("create_mailbox_single", JOHN, key)).json()
    second = await (await make.post("create_mailbox_single", JOHN, key)).json()
    await make.run_worker()
    # the two jobs run concurrently: either may be the one that creates the mailbox
    outcomes = {}
    for task in (first, second):
        status, body = await make.task(key, task["task_id"], "get_mailbox_single")
        outcomes[status] = (task["task_id"], body)
    assert sorted(outcomes) == [200, 422]
    failed_id, failed = outcomes[422]
    assert failed == {"status": "error", "reason": "Mailbox already exists.",
                      "Task_id": failed_id, "task_id": str(failed_id),
                      "domain": "example.com",
                      "results": {"john@example.com": {"status": "Already exists."}}}


async def test_single_mailbox_request_errors(make):
    _, key = await make.account()
    await make.domain(key, quota_mb=2048)
    cases = [
        ({**JOHN, "Domain": "nowhere.com"}, 404),
        ({**JOHN, "single_bulk": "bulk"}, 422),
        ({**JOHN, "Email_fullname": "john@other.com"}, 422),
        ({**JOHN, "Email_fullname": "jo..hn"}, 422),
        ({**JOHN, "Params": {"quota_mb": 4096}}, 422),
        ({**JOHN, "Params": {"password": "short"}}, 422),
        ({**JOHN, "Params": {"password_hash": "{PLAIN}secret"}}, 422),
        ({**JOHN, "Params": {"password": "long-enough", "password_hash": "{SHA}x"}}, 422),
        ({k: v for k, v in JOHN.items() if k != "Params"}, 422),
    ]
    for body, expected in cases:
        r = await make.post("create_mailbox_single", body, key)
        assert r.status == expected, (body, await r.text())


async def test_bulk_of_1000_with_existing_addresses(make, db):
    _, key = await make.account()
    await make.domain(key, quota_mb=10 * 1024 * 1024, max_mailboxes=5000)
    early = {"Email_fullname": "team", "single_bulk": "bulk", "Domain": "example.com",
             "Params": {"count": 10, "start": 100, "quota_mb": 10}}
    assert (await make.post("create_mailbox_bulk", early, key)).status == 200
    await make.run_worker()

    big = {**early, "Params": {"count": 1000, "quota_mb": 10}}
    r = await make.post("create_mailbox_bulk", big, key)
    assert r.status == 200, await r.text()
    task_id = (await r.json())["task_id"]
    await make.run_worker()
    status, task = await make.task(key, task_id, "get_mailbox_bulk")
    assert status == 200 and task["status"] == "completed"
    assert task["total_email"] == 1000 and len(task["results"]) == 1000
    existing = {f"team{n}@example.com" for n in range(100, 110)}
    for address, result in task["results"].items():
        if address in existing:
            assert result == {"status": "Already exists."}
        else:
            assert result["status"] == "Created successfully."
            assert isinstance(result["password"], str)
    assert await db.pool.fetchval("SELECT count(*) FROM mailboxes") == 1000
    # one statement per chunk, not per row: the rows of a chunk share a creation instant
    instants = await db.pool.fetchval(
        "SELECT count(DISTINCT created_at) FROM mailboxes WHERE task_id = $1", task_id)
    assert instants <= 1000 // 100


async def test_bulk_list_form_and_limits(make, db):
    _, key = await make.account()
    await make.domain(key, quota_mb=1000, max_mailboxes=3, default_mailbox_quota_mb=100)
    body = {"Email_fullname": "batch-1", "single_bulk": "bulk", "Domain": "example.com",
            "Params": {"mailboxes": [
                {"local_part": "a", "password": "password-a"},
                {"local_part": "b", "quota_mb": 700},
                {"local_part": "c", "quota_mb": 300},
                {"local_part": "d"},
                {"local_part": "e"},
            ]}}
    r = await make.post("create_mailbox_bulk", body, key)
    assert r.status == 200, await r.text()
    await make.run_worker()
    status, task = await make.task(key, (await r.json())["task_id"], "get_mailbox_bulk")
    assert status == 200
    outcome = {a: v["status"] for a, v in task["results"].items()}
    assert outcome == {"a@example.com": "Created successfully.",
                       "b@example.com": "Created successfully.",
                       "c@example.com": "Domain quota exceeded.",
                       "d@example.com": "Created successfully.",
                       "e@example.com": "Mailbox limit reached."}
    assert "password" not in task["results"]["a@example.com"]
    assert task["results"]["b@example.com"]["password"]
    stored = await db.pool.fetchval(
        "SELECT password_hash FROM mailboxes WHERE address = 'a@example.com'")
    assert passwords.verify(stored, "password-a")


async def test_max_mailboxes_on_a_single_mailbox(make):
    _, key = await make.account()
    await make.domain(key, max_mailboxes=1)
    r1 = await make.post("create_mailbox_single", JOHN, key)
    r2 = await make.post("create_mailbox_single", {**JOHN, "Email_fullname": "jane"}, key)
    await make.run_worker()
    # the two jobs run concurrently: either takes the one slot, the other is refused
    outcomes = {}
    for r in (r1, r2):
        status, task = await make.task(key, (await r.json())["task_id"], "get_mailbox_single")
        outcomes[status] = task
    assert sorted(outcomes) == [200, 422]
    refused = outcomes[422]
    assert refused["reason"] == "Mailbox limit reached."
    assert list(refused["results"].values()) == [{"status": "Mailbox limit reached."}]


async def test_bulk_request_errors(make):
    _, key = await make.account()
    await make.domain(key)
    base = {"Email_fullname": "team", "single_bulk": "bulk", "Domain": "example.com"}
    cases = [
        {**base, "Params": {"count": 1001}},
        {**base, "Params": {"count": 0}},
        {**base, "Params": {}},
        {**base, "Params": {"count": 2, "mailboxes": [{"local_part": "a"}]}},
        {**base, "Params": {"mailboxes": [{"local_part": "a"}, {"local_part": "A"}]}},
        {**base, "Params": {"mailboxes": []}},
        {**base, "Params": {"mailboxes": [{"local_part": "a", "colour": 1}]}},
        {**base, "single_bulk": "single", "Params": {"count": 2}},
        {**base, "Email_fullname": "bad prefix", "Params": {"count": 2}},
        {**base, "Params": {"count": 2, "quota_mb": 999999}},
    ]
    for body in cases:
        r = await make.post("create_mailbox_bulk", body, key)
        assert r.status == 422, (body, await r.text())
    r = await make.post("create_mailbox_bulk", {**base, "Domain": "nope.com",
                                                "Params": {"count": 2}}, key)
    assert r.status == 404


async def test_concurrent_bulks_never_exceed_the_domain_limits(make, db):
    _, key = await make.account()
    await make.domain(key, quota_mb=100000, max_mailboxes=150, default_mailbox_quota_mb=10)
    bodies = [{"Email_fullname": prefix, "single_bulk": "bulk", "Domain": "example.com",
               "Params": {"count": 100}} for prefix in ("a", "b", "c")]
    task_ids = [(await (await make.post("create_mailbox_bulk", b, key)).json())["task_id"]
                for b in bodies]
    # three workers at once, each taking jobs concurrently
    await asyncio.gather(*(make.run_worker() for _ in range(3)))
    assert await db.pool.fetchval("SELECT count(*) FROM mailboxes") == 150
    # the domain's counters agree with its rows
    assert tuple(await db.pool.fetchrow(
        "SELECT mailbox_count, quota_used_mb FROM domains WHERE name = 'example.com'")) == (
        150, 1500)
    created = 0
    for task_id in task_ids:
        _, task = await make.task(key, task_id)
        statuses = [v["status"] for v in task["results"].values()]
        assert set(statuses) <= {"Created successfully.", "Mailbox limit reached."}
        created += statuses.count("Created successfully.")
    assert created == 150


async def test_list_mailbox_errors_and_isolation(make, client, settings):
    a_id, a_key = await make.account("a")
    b_id, b_key = await make.account("b")
    await make.domain(a_key)
    params = {"key": b_key, "caller_id": b_id, "domain": "example.com"}
    r = await client.get(url(client, "list_mailbox"), params=params)
    assert r.status == 404
    assert (await r.json())["reason"] == "Domain not found for this account."
    r = await client.get(url(client, "list_mailbox"), params={**params, "caller_id": a_id})
    assert r.status == 403
    r = await client.get(url(client, "list_mailbox"),
                         params={"key": a_key, "caller_id": a_id, "domain": "not a domain"})
    assert r.status == 422


async def test_imap_credentials_when_a_host_is_configured(make, settings, run_worker):
    from aiohttp.test_utils import TestClient, TestServer

    from service.web.app import create_app

    account_id, key = await make.account()
    await make.domain(key)
    await make.post("create_mailbox_single", JOHN, key)
    await run_worker()
    with_imap = settings.replace(imap_host="imap.example.net")
    async with TestClient(TestServer(create_app(with_imap))) as other:
        r = await other.get(url(other, "list_mailbox"),
                            params={"key": key, "caller_id": account_id, "domain": "example.com"})
        entry = (await r.json())["results"]["john@example.com"]
    assert entry["imap_credentials"] == {"host": "imap.example.net", "port": 993,
                                         "username": "john@example.com"}
