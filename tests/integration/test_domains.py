"""create/domain, create/sub-domain and list/domain, end to end with the real worker."""

import asyncio

from tests.conftest import url


async def test_create_domain_lists_pending_then_active(make, client):
    account_id, key = await make.account()
    r = await make.post("create_domain", {"Domain": "Example.COM", "Params": {}}, key)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["status"] == "success" and body["domain"] == "example.com"
    assert isinstance(body["task_id"], int)

    listing = await client.get(url(client, "list_domain"),
                               params={"key": key, "caller_id": account_id})
    pending = await listing.json()
    assert pending["results"]["example.com"]["status"] == "pending"

    await make.run_worker()
    listing = await client.get(url(client, "list_domain"),
                               params={"key": key, "caller_id": str(account_id)})
    assert listing.status == 200
    data = await listing.json()
    assert data["user_id"] == str(account_id)
    assert data["total_domain"] == 1
    assert data["status"] == "success"
    entry = data["results"]["example.com"]
    assert entry["status"] == "active"
    assert entry["domain_quota"] == "100GB"  # 100 default mailboxes of 1024 MB fit
    assert entry["mailbox_count"] == "0"
    assert len(entry["created_at"]) == 10 and entry["created_at"][2] == "-"
    status, task = await make.task(key, body["task_id"])
    assert status == 200 and task["status"] == "completed" and task["type"] == "domain"
    assert task["results"] == {"example.com": {"status": "Created successfully."}}


async def test_a_domain_is_hosted_once_per_installation(make):
    _, key = await make.account("a")
    _, other = await make.account("b")
    await make.domain(key)
    for k in (key, other):
        r = await make.post("create_domain", {"Domain": "example.com"}, k)
        assert r.status == 409, await r.text()
        assert await r.json() == {"status": "error", "reason": "Domain already exists."}


async def test_domain_params_are_validated(make):
    _, key = await make.account()
    bad = [{"quota_mb": "10"}, {"quota_mb": 0}, {"colour": "red"},
           {"quota_mb": 100, "default_mailbox_quota_mb": 200}, {"description": "x" * 256}]
    for params in bad:
        r = await make.post("create_domain", {"Domain": "example.com", "Params": params}, key)
        assert r.status == 422, (params, await r.text())
        body = await r.json()
        assert body["status"] == "error" and body["errors"]


async def test_list_domain_checks_the_caller(make, client):
    account_id, key = await make.account()
    r = await client.get(url(client, "list_domain"), params={"key": key,
                                                             "caller_id": account_id + 1})
    assert r.status == 403
    assert (await r.json())["reason"] == "Unauthorized caller."
    for caller in ("", "abc", "1.5"):
        r = await client.get(url(client, "list_domain"), params={"key": key, "caller_id": caller})
        assert r.status == 422, caller
    r = await client.get(url(client, "list_domain"), params={"key": key})
    assert r.status == 422


async def test_accounts_see_only_their_domains(make, client):
    _a_id, a_key = await make.account("a")
    b_id, b_key = await make.account("b")
    await make.domain(a_key, "a.example")
    await make.domain(b_key, "b.example")
    r = await client.get(url(client, "list_domain"), params={"key": b_key, "caller_id": b_id})
    assert list((await r.json())["results"]) == ["b.example"]


async def test_sub_domains_are_created_once_per_hour(make, client):
    account_id, key = await make.account()
    await make.domain(key, "example.com", quota_mb=20480, max_mailboxes=50)
    body = {"Domain": "example.com", "Params": {"sub_domains": ["team", "Support"]}}
    r = await make.post("create_sub_domain", body, key)
    assert r.status == 200, await r.text()
    assert r.headers["X-RateLimit-Limit"] == "1"
    assert r.headers["X-RateLimit-Remaining"] == "0"
    created = await r.json()
    assert created["domain"] == "example.com"
    await make.run_worker()
    status, task = await make.task(key, created["task_id"])
    assert status == 200 and task["status"] == "completed"
    assert task["results"] == {"team.example.com": {"status": "Created successfully."},
                               "support.example.com": {"status": "Created successfully."}}

    r = await make.post("create_sub_domain", body, key)
    assert r.status == 429
    assert (await r.json())["reason"] == (
        "Sub-domain requests are limited to once per hour for this domain.")
    assert 3500 <= int(r.headers["Retry-After"]) <= 3600
    assert "X-RateLimit-Reset" in r.headers

    listing = await (await client.get(url(client, "list_domain"),
                                      params={"key": key, "caller_id": account_id})).json()
    team = listing["results"]["team.example.com"]
    assert team["parent"] == "example.com"
    assert team["domain_quota"] == "20GB"
    assert "parent" not in listing["results"]["example.com"]


async def test_refused_sub_domain_requests_do_not_use_up_the_hour(make):
    _, key = await make.account()
    await make.domain(key, "example.com")
    r = await make.post("create_sub_domain",
                        {"Domain": "missing.com", "Params": {"sub_domains": ["a"]}}, key)
    assert r.status == 404
    assert (await r.json())["reason"] == "Parent domain was not found."
    eleven = [f"s{i}" for i in range(11)]
    r = await make.post("create_sub_domain",
                        {"Domain": "example.com", "Params": {"sub_domains": eleven}}, key)
    assert r.status == 422
    assert "Maximum 10 sub-domains" in (await r.json())["reason"]
    for labels in ([], ["a", "A"], ["bad_label"], ["-a"]):
        r = await make.post("create_sub_domain",
                            {"Domain": "example.com", "Params": {"sub_domains": labels}}, key)
        assert r.status == 422, labels
    r = await make.post("create_sub_domain",
                        {"Domain": "example.com", "Params": {"sub_domains": ["ok"]}}, key)
    assert r.status == 200, await r.text()


async def test_concurrent_sub_domain_requests_give_exactly_one_success(make):
    _, key = await make.account()
    await make.domain(key, "example.com")
    body = {"Domain": "example.com", "Params": {"sub_domains": ["team"]}}
    responses = await asyncio.gather(*(make.post("create_sub_domain", body, key)
                                       for _ in range(20)))
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] + [429] * 19


async def test_existing_sub_domains_are_reported_per_item(make):
    _, key = await make.account("a")
    _, other = await make.account("b")
    await make.domain(key, "example.com")
    await make.domain(other, "taken.example.com")
    r = await make.post("create_sub_domain",
                        {"Domain": "example.com", "Params": {"sub_domains": ["taken", "new"]}},
                        key)
    task_id = (await r.json())["task_id"]
    await make.run_worker()
    _, task = await make.task(key, task_id)
    assert task["results"] == {"taken.example.com": {"status": "Already exists."},
                               "new.example.com": {"status": "Created successfully."}}


async def test_another_accounts_parent_domain_is_not_found(make):
    _, key = await make.account("a")
    _, other = await make.account("b")
    await make.domain(key, "example.com")
    r = await make.post("create_sub_domain",
                        {"Domain": "example.com", "Params": {"sub_domains": ["x"]}}, other)
    assert r.status == 404
