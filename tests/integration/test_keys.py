"""Scoped keys with an end date: read-only keys are refused every write, a key limited to
some domains sees only those, an expired key is no key; `mailprov key create|list`. The
rules hold on every route of the table, so a route added later is held to them too."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.core import accounts
from service.core.accounts import Scope, create_key
from service.web.app import create_app
from service.web.routes import ROUTES
from tests.conftest import fill, send, url

ROOT = Path(__file__).resolve().parents[2]
API_ROUTES = [r for r in ROUTES if r.policy is not None]
WRITES = [r for r in API_ROUTES if r.writes]
# a request each route accepts from the account once its domains and tasks exist
BODIES = {
    "create_domain": {"Domain": "c.example"},
    "create_sub_domain": {"Domain": "a.example", "Params": {"sub_domains": ["team"]}},
    "create_mailbox_single": {"Email_fullname": "john", "single_bulk": "single",
                              "Domain": "a.example", "Params": {}},
    "create_mailbox_bulk": {"Email_fullname": "team", "single_bulk": "bulk",
                            "Domain": "a.example", "Params": {"count": 2}},
}
# what a resource route's path names, on the account's domain
PARTS = {"domain": "a.example", "email": "john@a.example", "id": 1,
         "alias_domain": "alias.example", "task_id": 1}


async def request(client, route, key: str, **query: Any) -> Any:
    """The route called with `key`: its body from BODIES or its documented example, its
    path filled from PARTS, `query` for a MailAPI read."""
    parts = {name: PARTS[name] for name in re.findall(r"\{([a-z_]+)[:}]", route.path)}
    if route.policy.body is not None:
        fields = BODIES.get(route.name) or fill(route.doc.example, "a.example")
    else:
        fields = {} if route.policy.bearer else query
    return await send(client, route, key, fields, parts)


async def mailprov(settings, *argv: str) -> tuple[int, str, str]:
    env = {**os.environ, "DATABASE_URL": settings.database_url,
           "REDIS_URL": settings.redis_url, "MAILPROV_REDIS_PREFIX": settings.redis_prefix}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", *argv, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_a_read_only_key_is_refused_every_write(make, client, db):
    account_id, key = await make.account()
    await make.domain(key, "a.example")
    reader = await create_key(db, account_id, Scope(read_only=True))
    assert {r.name for r in WRITES} >= set(BODIES) and len(WRITES) > len(BODIES)
    for route in WRITES:
        r = await request(client, route, reader)
        assert r.status == 403, (route.name, await r.text())
        assert await r.json() in ({"status": "error", "reason": "This API key is read-only."},
                                  {"type": "error", "msg": "This API key is read-only."})
    r = await client.get(url(client, "list_domain"),
                         params={"key": reader, "caller_id": account_id})
    assert r.status == 200 and "a.example" in (await r.json())["results"]
    assert await db.pool.fetchval("SELECT count(*) FROM tasks") == 1  # the domain's own


async def test_a_key_limited_to_domains_sees_only_those(make, client, db, run_worker):
    account_id, key = await make.account()
    for name in ("a.example", "b.example"):
        await make.domain(key, name)
    b_task = (await (await make.post("create_mailbox_single", {
        **BODIES["create_mailbox_single"], "Domain": "b.example"}, key)).json())["task_id"]
    a_task = (await (await make.post("create_mailbox_single",
                                      BODIES["create_mailbox_single"], key)).json())["task_id"]
    await run_worker()
    limited = await create_key(db, account_id, Scope(domains=frozenset({"a.example"})))

    async def get(route: str, **params) -> tuple[int, dict]:
        r = await client.get(url(client, route), params={"key": limited, **params})
        return r.status, await r.json()

    status, listing = await get("list_domain", caller_id=account_id)
    assert status == 200 and list(listing["results"]) == ["a.example"]
    assert listing["total_domain"] == 1
    assert (await get("list_mailbox", caller_id=account_id, domain="a.example"))[0] == 200
    # the other domain, its mailboxes and its tasks read as if they did not exist
    assert await get("list_mailbox", caller_id=account_id, domain="b.example") == (
        404, {"status": "error", "reason": "Domain not found for this account."})
    for route in ("get_task", "get_mailbox_single"):
        assert (await get(route, task_id=a_task))[0] == 200
        assert await get(route, task_id=b_task) == (
            404, {"status": "error", "reason": "Task ID was not found for this API key."})
    for route, body in BODIES.items():
        outside = {**body, "Domain": "b.example"}
        r = await make.post(route, outside, limited)
        assert r.status == 404, (route, await r.text())
    r = await make.post("create_domain", {"Domain": "d.example"}, limited)
    assert r.status == 404
    assert (await r.json())["reason"] == "Domain not found for this account."
    # inside its domains it works as any key
    r = await make.post("create_mailbox_bulk", BODIES["create_mailbox_bulk"], limited)
    assert r.status == 200, await r.text()
    assert await db.pool.fetchval("SELECT count(*) FROM domains") == 2


async def test_an_expired_key_is_no_key(make, db, settings):
    account_id, key = await make.account()
    task = await make.domain(key, "a.example")
    soon = await create_key(db, account_id, Scope(expires_at=datetime.now(UTC)
                                                   + timedelta(seconds=60)))
    gone = await create_key(db, account_id, Scope(expires_at=datetime.now(UTC)
                                                   - timedelta(seconds=1)))
    # every route, twice: more failed key checks than the throttle lets through
    open_door = settings.replace(auth_failures_per_minute=10**9)
    async with TestClient(TestServer(create_app(open_door))) as client:
        for route in API_ROUTES:
            params = {"caller_id": account_id, "domain": "a.example", "task_id": task}
            for k, expected in ((gone, 401), (soon, None)):
                r = await request(client, route, k, **params)
                if expected is None:
                    assert r.status != 401, route.name
                else:
                    assert r.status == 401, (route.name, await r.text())


async def test_key_create_and_list_show_the_scope_never_the_key(make, settings, client, db):
    account_id, first = await make.account()
    code, out, err = await mailprov(settings, "key", "create", "--user-id", str(account_id),
                                    "--read-only", "--expires", "90d",
                                    "--domains", "A.example.,b.example", "--json")
    assert code == 0, err
    made = json.loads(out)
    key = made["key"]
    assert accounts.KEY_FORMAT.fullmatch(key) and made["read_only"] is True
    assert made["domains"] == ["a.example", "b.example"] and made["prefix"] == key[:8]
    expires = datetime.fromisoformat(made["expires_at"])
    assert timedelta(days=89, hours=23) < expires - datetime.now(UTC) <= timedelta(days=90)
    # used once, its last use is known (written at most once a minute)
    r = await client.get(url(client, "list_domain"), params={"key": key,
                                                             "caller_id": account_id})
    assert r.status == 200
    await accounts.revoke_key(db, first)

    code, out, err = await mailprov(settings, "key", "list", "--user-id", str(account_id),
                                    "--json")
    assert code == 0, err
    listed = json.loads(out)["keys"]
    assert [k["prefix"] for k in listed] == [first[:8], key[:8]]
    assert listed[0]["revoked_at"] and listed[0]["read_only"] is False
    assert listed[0]["domains"] is None and listed[0]["last_used_at"] is None
    assert listed[1]["read_only"] is True and listed[1]["domains"] == ["a.example", "b.example"]
    assert listed[1]["expires_at"] == made["expires_at"] and listed[1]["last_used_at"]
    code, text, _ = await mailprov(settings, "key", "list", "--user-id", str(account_id))
    assert f"{key[:8]}..." in text and "read-only on a.example, b.example" in text
    assert "revoked" in text and "live" in text
    for shown in (out, text):
        assert key not in shown and first not in shown
        assert accounts.digest(key) not in shown

    for bad, said in ((["--expires", "soon"], "--expires"), (["--domains=-x-"], "--domains"),
                      (["--domains", ","], "--domains")):
        code, _, err = await mailprov(settings, "key", "create", "--user-id",
                                      str(account_id), *bad)
        assert code == 1 and said in err, err
    code, _, err = await mailprov(settings, "key", "list", "--user-id", "999999")
    assert code == 1 and "no account" in err


async def test_last_use_is_written_once_a_minute_not_on_every_request(make, db, settings):
    """The hot path writes nothing: a key's last use costs one UPDATE per minute and web
    process, whatever the number of requests (by Postgres' own count of updated rows)."""
    account_id, key = await make.account()
    app_name = "mailprov-last-use"
    counted = settings.replace(database_url=f"{settings.database_url}"
                                            f"?application_name={app_name}")
    async with TestClient(TestServer(create_app(counted))) as web:
        for _ in range(30):
            r = await web.get(url(web, "list_domain"),
                              params={"key": key, "caller_id": account_id})
            assert r.status == 200
    for _ in range(200):
        if not await db.pool.fetchval("SELECT count(*) FROM pg_stat_activity "
                                      "WHERE application_name = $1", app_name):
            break
        await asyncio.sleep(0.05)
    assert await db.pool.fetchval("SELECT n_tup_upd FROM pg_stat_user_tables "
                                  "WHERE relname = 'api_keys'") == 1
    assert await db.pool.fetchval("SELECT last_used_at FROM api_keys") is not None


@pytest.mark.parametrize("setting", ["10.0.0.0/33", "proxy.example", "10.0.0.1, nonsense"])
async def test_serve_names_a_trusted_proxy_that_is_not_one(settings, setting):
    env = {**os.environ, "DATABASE_URL": settings.database_url,
           "REDIS_URL": settings.redis_url, "MAILPROV_TRUSTED_PROXIES": setting}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "serve", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert "MAILPROV_TRUSTED_PROXIES" in err.decode() and "Traceback" not in err.decode()


async def test_a_limited_key_never_gets_the_replay_of_a_request_outside_its_domains(
        make, client, db):
    account_id, key = await make.account()
    for name in ("a.example", "b.example"):
        await make.domain(key, name)
    limited = await create_key(db, account_id, Scope(domains=frozenset({"a.example"})))
    body = {**BODIES["create_mailbox_single"], "Domain": "b.example"}
    path = url(client, "create_mailbox_single")
    first = await client.post(path, json={**body, "key": key},
                              headers={"Idempotency-Key": "k-1"})
    assert first.status == 200
    again = await client.post(path, json={**body, "key": limited},
                              headers={"Idempotency-Key": "k-1"})
    assert again.status == 422 and "Idempotent-Replayed" not in again.headers
    assert str((await first.json())["task_id"]) not in await again.text()
    # a key with the same power as the first does get it
    other = await create_key(db, account_id)
    replay = await client.post(path, json={**body, "key": other},
                               headers={"Idempotency-Key": "k-1"})
    assert replay.headers["Idempotent-Replayed"] == "true"
