"""The front door: the cheapest checks come first (body size, content type, key, list
lengths, then each item), and stop at the first that fails; an answer is never larger
than a bounded list of errors."""

from __future__ import annotations

import json

import pytest

from tests.conftest import url

JSON = {"Content-Type": "application/json"}


def _bulk(mailboxes: list, domain: str = "example.com") -> dict:
    return {"Email_fullname": "x", "single_bulk": "bulk", "Domain": domain,
            "Params": {"mailboxes": mailboxes}}


async def test_a_keyless_body_is_refused_without_being_parsed_or_validated(make, client):
    """Defect 1: the bulk list was validated before the key was checked (seconds for a
    large body). Not even the parse runs now: a body that cannot hold a key is 401 before
    anything else reads it. (Timed in bench/: `python -m bench front`.)"""
    await make.account()
    megabyte = json.dumps(_bulk([{}] * 250_000)).encode()
    assert len(megabyte) > 10**6 - 100
    for body in (megabyte, b"{not json at all", b'{"Params": ' + b"[" * 5000):
        r = await client.post(url(client, "create_mailbox_bulk"), data=body, headers=JSON)
        assert r.status == 401, await r.text()
        assert await r.json() == {"status": "error", "reason": "Invalid API key."}
    # a key spelled with an escape is still found
    _, key = await make.account("escaped")
    await make.domain(key)
    escaped = json.dumps({"Domain": "b.example", "k\u0065y": key}, ensure_ascii=False)
    r = await client.post(url(client, "create_domain"),
                          data=escaped.replace('"key"', '"k\\u0065y"'), headers=JSON)
    assert r.status == 200, await r.text()


async def test_a_wrong_key_is_refused_before_the_body_is_parsed(make, client):
    """Only a body whose key works is parsed: a wrong key costs a scan of the bytes and a
    key lookup, whatever follows it (here, no JSON at all)."""
    _, key = await make.account()
    body = {**_bulk([{"local_part": "..bad.."}] * 5000), "key": "K" * 32}
    r = await client.post(url(client, "create_mailbox_bulk"), json=body)
    assert r.status == 401, await r.text()
    broken = b'{"key": "' + b"K" * 32 + b'", "Params": ' + b"[" * 5000
    for headers in ({}, {"Authorization": "Bearer " + "K" * 32}):
        r = await client.post(url(client, "create_mailbox_bulk"), data=broken,
                              headers={**JSON, **headers})
        assert r.status == 401, await r.text()
    # with the account's key the same bytes are read, and found not to be JSON
    r = await client.post(url(client, "create_mailbox_bulk"), data=broken,
                          headers={**JSON, "Authorization": f"Bearer {key}"})
    assert r.status == 400, await r.text()
    # a body naming more keys than any request does is not read either
    many = json.dumps({f"k{i}": {"key": f"{i:032d}"} for i in range(4)}).encode()
    r = await client.post(url(client, "create_domain"), data=many, headers=JSON)
    assert r.status == 401


@pytest.mark.parametrize(("route", "body", "field", "message"), [
    ("create_sub_domain", {"Domain": "example.com",
                           "Params": {"sub_domains": ["-bad-"] * 20_000}},
     "Params.sub_domains", "Maximum 10 sub-domains are allowed per request."),
    ("create_mailbox_bulk", _bulk([{"local_part": "..", "quota_mb": "x"}] * 1001),
     "Params.mailboxes", "Give 1 to 1000 mailboxes."),
])
async def test_an_over_long_list_is_refused_before_its_items_are_read(make, client, route,
                                                                       body, field, message):
    """Defect 5: every item of an over-long list was validated, and its error listed,
    before the limit applied: 100 KB of bad labels got a 2.9 MB answer."""
    _, key = await make.account()
    await make.domain(key)
    r = await client.post(url(client, route), json={**body, "key": key})
    assert r.status == 422
    assert await r.json() == {"status": "error", "reason": f"{field}: {message}",
                              "errors": {field: [message]}}


async def test_at_most_a_hundred_bad_fields_are_listed(make, client):
    _, key = await make.account()
    await make.domain(key)
    items = [{"local_part": f"ok{i}", "quota_mb": "1", "nonsense": i} for i in range(1000)]
    r = await client.post(url(client, "create_mailbox_bulk"), json={**_bulk(items), "key": key})
    assert r.status == 422
    text = await r.text()
    body = json.loads(text)
    assert body["error_count"] == 2000  # a bad quota and an unknown field in each item
    assert len(body["errors"]) == 100 and len(text) < 20_000
    assert body["reason"].startswith("Params.mailboxes.0.nonsense: Unknown field. (2000 fields")
    # a few bad fields are all listed, with no count
    r = await client.post(url(client, "create_mailbox_bulk"),
                          json={**_bulk(items[:3]), "key": key})
    assert len((body := await r.json())["errors"]) == 6 and "error_count" not in body


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/octet-stream", None])
async def test_a_body_must_be_sent_as_json(make, client, db, content_type):
    _, key = await make.account()
    body = json.dumps({"Domain": "example.com", "key": key}).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    r = await client.post(url(client, "create_domain"), data=body, headers=headers)
    assert r.status == 415, await r.text()
    assert await r.json() == {
        "status": "error",
        "reason": "The request body must be sent as JSON (Content-Type: application/json)."}
    assert r.headers["X-Request-ID"]
    assert await db.pool.fetchval("SELECT count(*) FROM domains") == 0
    for accepted in ("application/json; charset=utf-8", "application/merge-patch+json"):
        r = await client.post(url(client, "create_domain"), data=body,
                              headers={"Content-Type": accepted})
        assert r.status in (200, 409), await r.text()
