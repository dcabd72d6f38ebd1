"""Idempotency-Key on the create endpoints: a replay, a different body, a concurrent
duplicate, per-account scope, expiry."""

import asyncio
import hashlib
import json
import secrets as random

import pytest

from service.core.migrate import apply_schema
from service.web import idempotency
from tests.conftest import url

SINGLE = {"Email_fullname": "john", "single_bulk": "single", "Domain": "example.com",
          "Params": {}}
BULK = {"Email_fullname": "team", "single_bulk": "bulk", "Domain": "example.com",
        "Params": {"count": 3}}
# route -> a body it accepts once example.com exists
CREATES = {
    "create_domain": {"Domain": "other.example", "Params": {}},
    "create_sub_domain": {"Domain": "example.com", "Params": {"sub_domains": ["team"]}},
    "create_mailbox_single": SINGLE,
    "create_mailbox_bulk": BULK,
}


async def _post(client, route, body, key, idem, **headers):
    return await client.post(url(client, route), json={**body, "key": key},
                             headers={"Idempotency-Key": idem, **headers})


async def _task_count(db):
    return await db.pool.fetchval("SELECT count(*) FROM tasks")


@pytest.mark.parametrize("route", CREATES)
async def test_a_repeat_gets_the_original_response_and_creates_nothing(make, client, db,
                                                                      route):
    _, key = await make.account()
    await make.domain(key)
    tasks = await _task_count(db)
    first = await _post(client, route, CREATES[route], key, "order-1")
    assert first.status == 200, await first.text()
    assert "Idempotent-Replayed" not in first.headers
    # a domain would now be 409 and a sub-domain 429: a replay never reaches the handler
    again = await _post(client, route, CREATES[route], key, "order-1")
    assert again.status == 200, await again.text()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert await again.read() == await first.read()
    assert await _task_count(db) == tasks + 1

    await make.run_worker()  # the job was enqueued once the key and task committed
    status, task = await make.task(key, (await first.json())["task_id"])
    assert status == 200 and task["status"] == "completed", task


async def test_the_api_key_is_not_part_of_the_request(make, client):
    _, key = await make.account()
    await make.domain(key)
    first = await _post(client, "create_mailbox_single", SINGLE, key, "k")
    # the same account, authenticated by a header instead of the body
    again = await client.post(url(client, "create_mailbox_single"), json=SINGLE,
                              headers={"Idempotency-Key": "k", "Authorization": f"Bearer {key}"})
    assert again.status == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert await again.json() == await first.json()


async def test_the_same_key_with_another_request_is_refused(make, client, db):
    _, key = await make.account()
    await make.domain(key)
    first = await _post(client, "create_mailbox_single", SINGLE, key, "k-1")
    tasks = await _task_count(db)
    other = {**SINGLE, "Email_fullname": "jane"}
    r = await _post(client, "create_mailbox_single", other, key, "k-1")
    assert r.status == 422
    assert (await r.json())["reason"] == "This Idempotency-Key was already used with a " \
                                         "different request."
    # another endpoint is another request too
    r = await _post(client, "create_mailbox_bulk", BULK, key, "k-1")
    assert r.status == 422
    assert await _task_count(db) == tasks
    again = await _post(client, "create_mailbox_single", SINGLE, key, "k-1")
    assert await again.json() == await first.json()


async def test_concurrent_duplicates_make_one_task(make, client, db):
    _, key = await make.account()
    await make.domain(key)
    tasks = await _task_count(db)
    responses = await asyncio.gather(*(
        _post(client, "create_mailbox_bulk", BULK, key, "burst") for _ in range(20)))
    originals = [r for r in responses if r.status == 200
                 and "Idempotent-Replayed" not in r.headers]
    assert len(originals) == 1
    task_id = (await originals[0].json())["task_id"]
    for r in responses:
        assert r.status in (200, 409), await r.text()
        if r.status == 409:
            body = await r.json()
            assert body["reason"] == "A request with this Idempotency-Key is still being " \
                                     "processed; retry shortly."
            assert r.headers["Retry-After"] == "1"
        else:
            assert (await r.json())["task_id"] == task_id
    assert await _task_count(db) == tasks + 1


async def test_a_request_in_flight_makes_a_duplicate_wait_with_409(make, client, db):
    account_id, key = await make.account()
    await make.domain(key)
    # hold the key's in-flight lock the way a request being handled does
    async with db.transaction() as q:
        assert await q.idempotency_lock(account_id=account_id, key="slow")
        r = await _post(client, "create_mailbox_single", SINGLE, key, "slow")
        assert r.status == 409, await r.text()
        # another key, or the same key of another account, is not held up
        r = await _post(client, "create_mailbox_bulk", BULK, key, "fast")
        assert r.status == 200, await r.text()
    r = await _post(client, "create_mailbox_single", SINGLE, key, "slow")
    assert r.status == 200 and "Idempotent-Replayed" not in r.headers


async def test_keys_belong_to_one_account(make, client):
    _, key_a = await make.account("a")
    _, key_b = await make.account("b")
    await make.domain(key_a, "a.example")
    await make.domain(key_b, "b.example")
    a = await _post(client, "create_mailbox_single", {**SINGLE, "Domain": "a.example"}, key_a,
                    "shared")
    b = await _post(client, "create_mailbox_single", {**SINGLE, "Domain": "b.example"}, key_b,
                    "shared")
    assert a.status == b.status == 200
    assert "Idempotent-Replayed" not in b.headers
    assert (await a.json())["task_id"] != (await b.json())["task_id"]
    # b's repeat of a's exact request is b's own first use of the key with another body
    r = await _post(client, "create_mailbox_single", {**SINGLE, "Domain": "a.example"}, key_b,
                    "shared")
    assert r.status == 422


async def test_a_key_expires_after_24_hours(make, client, db):
    _, key = await make.account()
    await make.domain(key)
    first = await _post(client, "create_mailbox_single", SINGLE, key, "old")
    await db.pool.execute("UPDATE idempotency_keys SET created_at = now() - interval '24 hours'"
                          " - interval '1 second'")
    other = {**SINGLE, "Email_fullname": "jane"}
    r = await _post(client, "create_mailbox_single", other, key, "old")
    assert r.status == 200 and "Idempotent-Replayed" not in r.headers
    assert (await r.json())["task_id"] != (await first.json())["task_id"]
    # the new use of the key is the one remembered now
    again = await _post(client, "create_mailbox_single", other, key, "old")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await again.json() == await r.json()


async def test_the_sweeper_deletes_expired_keys(make, client, db, settings, redis):
    from worker.context import KEY, JobContext
    from worker.sweeper import sweep

    _, key = await make.account()
    await make.domain(key)
    await _post(client, "create_mailbox_single", SINGLE, key, "old")
    await _post(client, "create_mailbox_bulk", BULK, key, "new")
    await db.pool.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'"
                          " WHERE key = 'old'")
    await sweep({KEY: JobContext(settings, db, redis, None, None)})  # type: ignore[arg-type]
    assert [r["key"] for r in await db.pool.fetch("SELECT key FROM idempotency_keys")] == ["new"]


async def test_a_refused_request_leaves_its_key_free(make, client, db):
    _, key = await make.account()
    r = await _post(client, "create_mailbox_single", SINGLE, key, "early")
    assert r.status == 404  # no domain yet
    await make.domain(key)
    r = await _post(client, "create_mailbox_single", SINGLE, key, "early")
    assert r.status == 200 and "Idempotent-Replayed" not in r.headers
    assert await db.pool.fetchval("SELECT count(*) FROM idempotency_keys") == 1


@pytest.mark.parametrize("header, stored", [
    ("a" * 255, "a" * 255),
    ("order 7/b", "order 7/b"),
    ('"8e03978e-40d5"', "8e03978e-40d5"),  # the IETF draft's quoted form
    (r'"say \"hi\""', 'say "hi"'),
])
async def test_valid_keys(make, client, db, header, stored):
    _, key = await make.account()
    await make.domain(key)
    r = await _post(client, "create_mailbox_single", SINGLE, key, header)
    assert r.status == 200, await r.text()
    assert await db.pool.fetchval("SELECT key FROM idempotency_keys") == stored


@pytest.mark.parametrize("header", ["", "a" * 256, "tab\there", '""'])
async def test_invalid_keys_are_422(make, client, db, header):
    _, key = await make.account()
    await make.domain(key)
    r = await _post(client, "create_mailbox_single", SINGLE, key, header)
    assert r.status == 422
    body = await r.json()
    assert body["errors"] == {"Idempotency-Key": [idempotency.BadIdempotencyKey().reason]}
    assert await db.pool.fetchval("SELECT count(*) FROM idempotency_keys") == 0


@pytest.mark.parametrize("route", CREATES)
async def test_deep_json_is_a_400_with_or_without_a_key(make, client, db, route):
    """Defect 3: a body nested just shallower than json.loads' limit parsed, then the
    fingerprint's json.dumps, called deeper in the stack, overflowed it: a RecursionError
    answered 500. Where that window lies depends on the stack (~982 levels under
    `mailprov serve`, ~940 here), so every depth around it is tried."""
    _, key = await make.account()
    await make.domain(key)
    answers = set()
    for depth in (33, *range(880, 1001), 5000):
        nested = "[" * depth + "]" * depth
        body = f'{{"Domain": "example.com", "Params": {{"x": {nested}}}}}'.encode()
        for idem in ({"Idempotency-Key": f"deep-{depth}"}, {}):
            r = await client.post(url(client, route), data=body, headers={
                "Content-Type": "application/json", "Authorization": f"Bearer {key}", **idem})
            answers.add((r.status, (await r.json())["reason"]))
    assert answers == {(400, "The request body is nested too deeply.")}
    assert await db.pool.fetchval("SELECT count(*) FROM idempotency_keys") == 0


async def test_the_fingerprint_is_no_hash_to_guess_a_password_against(make, client, db,
                                                                       settings):
    """Defect 4: the fingerprint was a plain SHA-256 of method, path and body, password
    included, kept 24 h: a password could be tested offline at SHA-256 speed."""
    _, key = await make.account()
    await make.domain(key)
    body = {**SINGLE, "Params": {"password": "guess me 123"}}
    r = await _post(client, "create_mailbox_single", body, key, "pw")
    assert r.status == 200, await r.text()
    stored = await db.pool.fetchval("SELECT fingerprint FROM idempotency_keys")
    # the attack: recompute the fingerprint for each guess, as the code on main made it
    path = url(client, "create_mailbox_single")
    for guess in ("password", "guess me 123", "letmein"):
        canonical = json.dumps({**SINGLE, "Params": {"password": guess}}, sort_keys=True,
                               separators=(",", ":"))
        assert hashlib.sha256(f"POST {path}\n{canonical}".encode()).hexdigest() != stored
    assert stored == idempotency.fingerprint(settings.secret_key, "POST", path, body)
    assert stored != idempotency.fingerprint(random.token_urlsafe(32), "POST", path, body)
    # it still does its job
    again = await _post(client, "create_mailbox_single", body, key, "pw")
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await _post(client, "create_mailbox_single",
                        {**SINGLE, "Params": {"password": "guess me 124"}}, key, "pw")
    assert other.status == 422


async def test_a_fingerprint_from_before_the_upgrade_is_replaced_and_still_replays(
        make, client, db, settings):
    _, key = await make.account()
    await make.domain(key)
    first = await _post(client, "create_mailbox_single", SINGLE, key, "old")
    await db.pool.execute("UPDATE idempotency_keys SET fingerprint = $1",
                          hashlib.sha256(b"as the code on main made it").hexdigest())
    await apply_schema(settings.database_url)
    assert await db.pool.fetchval("SELECT fingerprint FROM idempotency_keys") == "legacy"
    again = await _post(client, "create_mailbox_single", SINGLE, key, "old")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await again.json() == await first.json()
