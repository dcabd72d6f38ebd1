"""Polling tasks, auth, and what happens to bad input."""

import io
import json

from tests.conftest import url

JOHN = {"Email_fullname": "john", "single_bulk": "single", "Domain": "example.com",
        "Params": {}}


async def test_task_lookups_are_scoped_and_typed(make):
    _, key = await make.account("a")
    _, other = await make.account("b")
    await make.domain(key)
    single = (await (await make.post("create_mailbox_single", JOHN, key)).json())["task_id"]
    bulk_body = {**JOHN, "single_bulk": "bulk", "Email_fullname": "t", "Params": {"count": 2}}
    bulk = (await (await make.post("create_mailbox_bulk", bulk_body, key)).json())["task_id"]
    await make.run_worker()

    status, body = await make.task(other, single, "get_mailbox_single")
    assert status == 404
    assert body == {"status": "error", "reason": "Task ID was not found for this API key."}
    assert (await make.task(key, single + 10**6, "get_mailbox_single"))[0] == 404

    status, body = await make.task(key, bulk, "get_mailbox_single")
    assert status == 422 and body["reason"] == "Task type does not match this endpoint."
    assert (await make.task(key, single, "get_mailbox_bulk"))[0] == 422
    status, body = await make.task(key, bulk, "get_mailbox_bulk")
    assert status == 200 and body["total_email"] == 2
    status, body = await make.task(key, bulk, "get_task")
    assert status == 200 and body["type"] == "mailbox_bulk"

    for bad in ("0", "-1", "abc", "1.5", str(2**63), ""):
        assert (await make.task(key, bad, "get_mailbox_single"))[0] == 422, bad


async def test_keys_come_from_body_query_or_bearer_header(make, client):
    account_id, key = await make.account()
    r = await client.get(url(client, "list_domain"), params={"caller_id": account_id},
                         headers={"Authorization": f"Bearer {key}"})
    assert r.status == 200
    r = await client.post(url(client, "create_domain"), json={"Domain": "example.com"},
                          headers={"Authorization": f"Bearer {key}"})
    assert r.status == 200
    for bad in (None, "short", "x" * 32, key[:-1] + "!", 12345):
        body = {"Domain": "example.org"} if bad is None else {"Domain": "example.org", "key": bad}
        r = await client.post(url(client, "create_domain"), json=body)
        assert r.status == 401, bad
        assert await r.json() == {"status": "error", "reason": "Invalid API key."}
    r = await client.get(url(client, "list_domain"), params={"caller_id": account_id,
                                                             "key": "A" * 32})
    assert r.status == 401


async def test_revoked_keys_stop_working(make, client, settings, monkeypatch, capsys):
    from service.cli import main as cli

    account_id, key = await make.account()
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    await_args = ["--json", "key", "revoke", key[:8]]
    # the CLI runs its own event loop, so run it in a thread
    import asyncio
    await asyncio.to_thread(cli.main, await_args)
    out = json.loads(capsys.readouterr().out)
    assert out["revoked"] == [{"prefix": key[:8], "user_id": account_id}]
    r = await client.get(url(client, "list_domain"), params={"key": key, "caller_id": account_id})
    assert r.status == 401


async def test_every_response_has_a_request_id(make, client):
    r = await client.get("/nowhere")
    assert r.status == 404 and len(r.headers["X-Request-ID"]) == 32
    assert (await r.json())["status"] == "error"
    r = await client.get(url(client, "list_domain"), headers={"X-Request-ID": "trace-42"})
    assert r.headers["X-Request-ID"] == "trace-42"
    r = await client.get(url(client, "create_domain"))
    assert r.status == 405
    assert await r.json() == {"status": "error", "reason": "Method not allowed."}


MALFORMED = [
    (b"not json", 400),
    (b"[1, 2]", 400),
    (b'"just a string"', 400),
    (b"", 400),
    (b"\xff\xfe{}", 400),
    (b'{"Domain": NaN}', 400),
    (b"[" * 100000 + b"]" * 100000, 400),
    (b'{"Domain": "x' + b"9" * 5000 + b'.com"}', 422),
]


async def test_malformed_bodies_never_give_500(make, client, db):
    _, key = await make.account()
    await make.domain(key)
    for raw, expected in MALFORMED:
        # the key in a header: a body that cannot hold one is 401 before it is parsed
        raw = raw if expected == 400 else raw[:-1] + f', "key": "{key}"}}'.encode()
        r = await client.post(url(client, "create_domain"), data=raw,
                              headers={"Content-Type": "application/json",
                                       "Authorization": f"Bearer {key}"})
        assert r.status == expected, (raw[:40], await r.text())
        assert (await r.json())["status"] == "error"
    r = await client.post(url(client, "create_domain"), data=io.BytesIO(b" " * (1024 * 1024 + 1)))
    assert r.status == 413
    assert (await r.json())["reason"] == "Request body too large."

    weird_values = [
        "'; DROP TABLE domains; --", "example.com' OR '1'='1", "\u0000", "\ud800",
        "e\u0301xample.com", "\u202eexample.com", "💌.example", "a" * 10000, 12, None,
        ["example.com"], {"a": 1}, True, 1e308,
    ]
    for value in weird_values:
        for route, body in [
            ("create_domain", {"Domain": value}),
            ("create_sub_domain", {"Domain": "example.com", "Params": {"sub_domains": [value]}}),
            ("create_mailbox_single", {**JOHN, "Email_fullname": value}),
            ("create_mailbox_single", {**JOHN, "Params": {"display_name": value}}),
            ("create_mailbox_bulk", {**JOHN, "single_bulk": "bulk",
                                     "Params": {"count": value}}),
        ]:
            raw = json.dumps({**body, "key": key})
            r = await client.post(url(client, route), data=raw,
                                  headers={"Content-Type": "application/json"})
            assert r.status in (200, 404, 409, 422, 429), (route, value, await r.text())
            assert (await r.json())["status"] in ("error", "success")
    for params in ({"caller_id": "1' OR 1=1", "key": key}, {"caller_id": "\x00", "key": key},
                   {"caller_id": "1", "key": key, "domain": "\ud800"}):
        r = await client.get(url(client, "list_mailbox"), params=params)
        assert r.status in (403, 422), params
    # nothing odd got in
    names = [r["name"] for r in await db.pool.fetch("SELECT name FROM domains")]
    assert all(n.isascii() and "'" not in n for n in names)


async def test_unknown_fields_are_named(make):
    _, key = await make.account()
    r = await make.post("create_domain", {"Domian": "example.com"}, key)
    assert r.status == 422
    body = await r.json()
    assert body["errors"]["Domian"] == ["Unknown field."]
    assert body["reason"].startswith("Domian")
