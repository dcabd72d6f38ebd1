"""The live API documentation against the real app and worker.

Every response the API really gives (each endpoint, each documented status) is checked
against the schema the served document declares for it, and every documented response
is produced at least once, so the document can neither drift from the code nor promise
a status that never happens.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from service.core.accounts import Scope, create_key, digest
from service.core.tasks import passwords_key
from service.web.app import create_app
from tests.conftest import url
from tests.unit.test_apidoc import response_errors

JOHN = {"Email_fullname": "john", "single_bulk": "single", "Domain": "example.com",
        "Params": {}}
TEAM = {"Email_fullname": "team", "single_bulk": "bulk", "Domain": "example.com",
        "Params": {"count": 3}}
SUB = {"Domain": "example.com", "Params": {"sub_domains": ["team"]}}
NOWHERE = "nowhere.example"
POSTS = ["create_domain", "create_sub_domain", "create_mailbox_single", "create_mailbox_bulk"]
GETS = ["list_domain", "list_mailbox", "get_mailbox_single", "get_mailbox_bulk", "get_task"]
TASK_GETS = GETS[2:]


class Checker:
    """Calls one app's routes and checks each response against the app's own document."""

    def __init__(self, client: TestClient, seen: set[tuple[str, str, str]]) -> None:
        self.client = client
        self.seen = seen
        self.doc: dict[str, Any] = {}

    async def load(self) -> Checker:
        r = await self.client.get(url(self.client, "openapi"))
        assert r.status == 200, await r.text()
        self.doc = await r.json()
        return self

    async def call(self, method: str, route: str, status: int, parts: dict[str, Any] | None = None,
                   **kwargs: Any) -> Any:
        # the document's path: /api/v1/mailboxes/{email}
        path = self.client.app.router[route].canonical  # type: ignore[union-attr]
        r = await self.client.request(method, url(self.client, route, **(parts or {})),
                                      **kwargs)
        body = await r.json() if r.content_type == "application/json" else await r.text()
        assert r.status == status, (method, route, body)
        problems = response_errors(self.doc, path, method, status, body, r.headers,
                                   r.content_type)
        assert problems == [], (method, route, status, body, problems)
        self.seen.add((path, method.lower(), str(status)))
        return body

    async def get(self, route: str, status: int, key: str, **params: Any) -> Any:
        return await self.call("GET", route, status, params={"key": key, **params})

    async def post(self, route: str, status: int, body: dict[str, Any], key: str) -> Any:
        return await self.call("POST", route, status, json={**body, "key": key})


async def test_every_documented_response_is_a_real_one(make, client, settings, run_worker,
                                                       redis, db):
    seen: set[tuple[str, str, str]] = set()
    api = await Checker(client, seen).load()
    validate(api.doc)
    a_id, key = await make.account("a")
    b_id, other = await make.account("b")

    # domains and sub-domains
    await api.get("list_domain", 200, key, caller_id=a_id)
    await api.post("create_domain", 200, {"Domain": "example.com"}, key)
    await run_worker()
    await api.post("create_domain", 409, {"Domain": "example.com"}, other)
    await api.post("create_sub_domain", 200, SUB, key)
    await api.post("create_sub_domain", 429, SUB, key)
    await api.post("create_sub_domain", 404, {**SUB, "Domain": NOWHERE}, key)
    await run_worker()
    listing = await api.get("list_domain", 200, key, caller_id=a_id)
    assert listing["results"]["team.example.com"]["parent"] == "example.com"
    await api.get("list_domain", 403, key, caller_id=b_id)

    # a single mailbox: queued, completed with its generated password, then null
    single = (await api.post("create_mailbox_single", 200, JOHN, key))["task_id"]
    queued = await api.get("get_mailbox_single", 200, key, task_id=single)
    assert queued["status"] == "queued" and queued["progress"] == {"done": 0, "total": 1}
    await run_worker()
    done = await api.get("get_mailbox_single", 200, key, task_id=single)
    assert isinstance(done["results"]["john@example.com"]["password"], str)
    await redis.delete(passwords_key(settings.redis_prefix, single))
    expired = await api.get("get_mailbox_single", 200, key, task_id=single)
    assert expired["results"]["john@example.com"]["password"] is None
    typed = await api.get("get_task", 200, key, task_id=single)
    assert typed["type"] == "mailbox_single" and "progress" not in typed

    # a failed single task and a bulk task, before and after the worker
    again = (await api.post("create_mailbox_single", 200, JOHN, key))["task_id"]
    bulk = (await api.post("create_mailbox_bulk", 200, TEAM, key))["task_id"]
    assert (await api.get("get_task", 200, key, task_id=bulk))["status"] == "queued"
    assert (await api.get("get_mailbox_bulk", 200, key, task_id=bulk))["progress"]["total"] == 3
    await run_worker()
    failed = await api.get("get_mailbox_single", 422, key, task_id=again)
    assert failed["Task_id"] == again and failed["task_id"] == str(again)
    assert (await api.get("get_task", 422, key, task_id=again))["type"] == "mailbox_single"
    assert (await api.get("get_mailbox_bulk", 200, key, task_id=bulk))["total_email"] == 3
    await api.get("get_task", 200, key, task_id=bulk)
    mismatch = await api.get("get_mailbox_single", 422, key, task_id=bulk)
    assert mismatch["reason"] == "Task type does not match this endpoint."
    for route in TASK_GETS:
        await api.get(route, 404, other, task_id=bulk)
        await api.get(route, 422, key, task_id="abc")

    # mailbox lists and the domain a key does not hold
    mailboxes = await api.get("list_mailbox", 200, key, caller_id=a_id, domain="example.com")
    assert mailboxes["results"]["john@example.com"]["imap_credentials"] is None
    await api.get("list_mailbox", 403, key, caller_id=b_id, domain="example.com")
    await api.get("list_mailbox", 404, key, caller_id=a_id, domain=NOWHERE)
    await api.get("list_mailbox", 422, key, caller_id=a_id)
    await api.get("list_domain", 422, key, caller_id="me")
    await api.post("create_mailbox_single", 404, {**JOHN, "Domain": NOWHERE}, key)
    await api.post("create_mailbox_bulk", 404, {**TEAM, "Domain": NOWHERE}, key)

    # what every endpoint refuses: bad keys, bad bodies
    for route in GETS:
        await api.get(route, 401, "A" * 32, caller_id=a_id, task_id=single)
    for route in POSTS:
        await api.post(route, 401, {}, "short")
        await api.call("POST", route, 400, data=b"[1]", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        await api.call("POST", route, 415, data=b'{"key": "' + key.encode() + b'"}')
        invalid = await api.post(route, 422, {"Domian": "example.com"}, key)
        assert invalid["errors"]["Domian"] == ["Unknown field."]
    # a read-only key on every write; a key limited to other domains
    read_only = await create_key(db, a_id, Scope(read_only=True))
    limited = await create_key(db, a_id, Scope(domains=frozenset({"example.com"})))
    for route in POSTS:
        refused = await api.post(route, 403, {"Domain": "example.com"}, read_only)
        assert refused["reason"] == "This API key is read-only."
    await api.post("create_domain", 404, {"Domain": "elsewhere.example"}, limited)
    await api.get("list_mailbox", 200, limited, caller_id=a_id, domain="example.com")
    # a replay answers from the record: no rate-limit headers, and still as documented
    for _ in range(2):
        replay = await api.call("POST", "create_mailbox_bulk", 200,
                                json={**TEAM, "key": key}, headers={"Idempotency-Key": "rp"})
    assert replay["task_id"]
    # a repeat while the first request with its Idempotency-Key is still being handled
    # (its lock held here the way a request being handled holds it)
    async with db.transaction() as q:
        assert await q.idempotency_lock(account_id=a_id, key="busy")
        for route in POSTS:
            await api.call("POST", route, 409, json={"key": key},
                           headers={"Idempotency-Key": "busy"})

    # a second app with tight limits: 413, 429 on every endpoint, IMAP credentials
    tight = settings.replace(max_body_bytes=1024, rate_create_domain=1,
                             rate_create_mailbox_single=1, rate_create_mailbox_bulk=1,
                             rate_get=1, imap_host="imap.example.net",
                             auth_failures_per_minute=1)
    # the failed key checks above were this address's: its window starts afresh
    await redis.delete(f"{settings.redis_prefix}auth:fail:127.0.0.1")
    c_id, c_key = await make.account("c")
    async with TestClient(TestServer(create_app(tight))) as tight_client:
        limited = await Checker(tight_client, seen).load()
        for route in POSTS:
            await limited.call("POST", route, 413, data=b" " * 1025)
        await limited.post("create_domain", 200, {"Domain": "c.example"}, c_key)
        await run_worker()
        await limited.post("create_domain", 429, {"Domain": "d.example"}, c_key)
        for route, body in (("create_mailbox_single", JOHN), ("create_mailbox_bulk", TEAM)):
            await limited.post(route, 200, {**body, "Domain": "c.example"}, c_key)
            await limited.post(route, 429, {**body, "Domain": "c.example"}, c_key)
        await run_worker()
        with_imap = await limited.get("list_mailbox", 200, c_key, caller_id=c_id,
                                      domain="c.example")
        assert with_imap["results"]["john@c.example"]["imap_credentials"] == {
            "host": "imap.example.net", "port": 993, "username": "john@c.example"}
        for route in GETS:
            await limited.get(route, 429, c_key, caller_id=c_id, domain="c.example",
                              task_id=single)
        # past the failed key checks an address may make, on a read and on a write
        await limited.get("get_task", 401, "W" * 32, task_id=single)
        for route in ("get_task", "create_sub_domain"):
            throttled = await limited.call("GET" if route == "get_task" else "POST", route,
                                           429, params={"task_id": single, "key": "W" * 32},
                                           json={**SUB, "key": "W" * 32})
            assert throttled["reason"].startswith("Too many failed API key checks")
        # the docs need no key and are not rate-limited
        for _ in range(3):
            r = await tight_client.get(url(tight_client, "openapi"))
            assert r.status == 200 and "X-RateLimit-Limit" not in r.headers
        await limited.call("GET", "openapi", 200)
        await limited.call("GET", "docs", 200)

    assert documented(api.doc, resources=False) - seen == set()


def documented(doc: dict[str, Any], resources: bool) -> set[tuple[str, str, str]]:
    """Every (path, method, status) the document promises, of one face or the other: the
    resource API's are its Bearer-only operations."""
    return {(path, method, status)
            for path, operations in doc["paths"].items()
            for method, operation in operations.items()
            if (operation["security"] == [{"bearer": []}]) == resources
            for status in operation["responses"]
            if status not in ("500", "503")}  # no test takes Postgres or Redis down


class Rest(Checker):
    """A Checker of the resource API: the key as a Bearer header."""

    def __init__(self, client: TestClient, seen: set[tuple[str, str, str]], key: str) -> None:
        super().__init__(client, seen)
        self.key = key

    async def rest(self, method: str, route: str, status: int, body: Any = None,
                   key: str | None = None, params: dict[str, str] | None = None,
                   headers: dict[str, str] | None = None, **parts: Any) -> Any:
        return await self.call(method, route, status, parts, json=body, params=params,
                               headers={"Authorization": f"Bearer {key or self.key}",
                                        **(headers or {})})


# every write of the resource API: (method, route, path parts, a valid body or None), in
# an order in which each is still possible after the ones before it
def _writes(alias_id: int, deleted_alias_id: int) -> list[tuple[str, str, dict[str, Any], Any]]:
    return [
        ("POST", "domain_create", {}, {"domain": "new.example"}),
        ("PUT", "domain_update", {"domain": "example.com"}, {"description": "x"}),
        ("POST", "domain_restore", {"domain": "gone.example"}, {}),
        ("POST", "mailbox_create", {}, {"domain": "example.com", "local_part": "new"}),
        ("PUT", "mailbox_update", {"email": "john@example.com"}, {"quota": 10}),
        ("POST", "mailbox_restore", {"email": "gone@example.com"}, {}),
        ("POST", "mailbox_bulk_action", {}, {"action": "delete", "emails": ["j@example.com"]}),
        ("DELETE", "mailbox_delete", {"email": "john@example.com"}, None),
        ("POST", "alias_create", {}, {"address": "fresh@example.com", "goto": ["a@b.org"]}),
        ("PUT", "alias_update", {"id": alias_id}, {"active": False}),
        ("POST", "alias_restore", {"id": deleted_alias_id}, {}),
        ("POST", "alias_bulk_action", {}, {"action": "deactivate", "ids": [alias_id]}),
        ("DELETE", "alias_delete", {"id": alias_id}, None),
        ("DELETE", "alias_forget", {"id": alias_id}, None),
        ("POST", "alias_domain_create", {}, {"alias_domain": "new-alias.example",
                                             "target_domain": "example.com"}),
        ("PUT", "alias_domain_update", {"alias_domain": "example.net"}, {"active": False}),
        ("DELETE", "alias_domain_delete", {"alias_domain": "example.net"}, None),
        ("POST", "domain_dkim_rotate", {"domain": "example.com"}, {"algorithm": "ed25519"}),
        ("POST", "domain_verify", {"domain": "example.com"}, {}),
        ("POST", "domain_bulk_delete", {}, {"domains": ["new.example"]}),
        ("DELETE", "domain_delete", {"domain": "example.com"}, None),
    ]


READS = [("tasks", {}), ("task", "task"), ("domains", {}), ("domain", {"domain": "example.com"}),
         ("domain_dns", {"domain": "example.com"}),
         ("mailboxes", {}), ("mailbox", {"email": "john@example.com"}), ("aliases", {}),
         ("alias", "alias"), ("alias_domains", {}), ("alias_domain",
                                                     {"alias_domain": "example.net"})]


async def test_every_documented_response_of_the_resource_api_is_a_real_one(
        make, client, settings, run_worker, db, redis):
    seen: set[tuple[str, str, str]] = set()
    a_id, key = await make.account("a")
    _, other = await make.account("b")
    api = await Rest(client, seen, key).load()

    # what the routes act on: a domain with a mailbox, an alias and an alias domain, and
    # a deleted domain and mailbox to restore
    for name in ("example.com", "gone.example"):
        await api.rest("POST", "domain_create", 202, {"domain": name})
    await run_worker()
    for local in ("john", "gone"):
        await api.rest("POST", "mailbox_create", 202, {"domain": "example.com",
                                                       "local_part": local})
    alias = await api.rest("POST", "alias_create", 202,
                           {"address": "sales@example.com", "goto": ["john@example.com"]})
    alias_id = alias["id"]
    old = await api.rest("POST", "alias_create", 202,
                         {"address": "old@example.com", "goto": ["john@example.com"]})
    await api.rest("POST", "alias_domain_create", 202,
                   {"alias_domain": "example.net", "target_domain": "example.com"})
    await run_worker()
    await api.rest("DELETE", "domain_delete", 202, domain="gone.example")
    await api.rest("DELETE", "mailbox_delete", 202, email="gone@example.com")
    await api.rest("DELETE", "alias_delete", 202, id=old["id"])
    task = await api.rest("POST", "mailbox_bulk_action", 202,
                          {"action": "activate", "emails": ["john@example.com"]})
    await run_worker()
    ids = {"task": {"task_id": task["task_id"]}, "alias": {"id": alias_id}}

    # reads: 200, a page or the resource; 401; 404 for another account's; 422
    for route, parts in READS:
        parts = ids.get(parts, parts) if isinstance(parts, str) else parts
        await api.rest("GET", route, 200, **parts)
        await api.rest("GET", route, 401, key="A" * 32, **parts)
        # more wrong keys than the failed-auth throttle allows: each starts its window afresh
        await redis.delete(f"{settings.redis_prefix}auth:fail:127.0.0.1")
        await api.rest("GET", route, 422, params={"nothing": "1"}, **parts)
        if parts:
            await api.rest("GET", route, 404, key=other, **parts)
    listed = await api.rest("GET", "mailboxes", 200, params={"filter[deleted]": "with"})
    assert {m["status"] for m in listed["data"]} == {"active", "deleted"}

    # writes: 401, 404 (another account's), 422, 400, 409 while an Idempotency-Key is in
    # flight; then their own conflicts, and 202 each
    writes = _writes(alias_id, old["id"])
    for method, route, parts, body in writes:
        await api.rest(method, route, 401, body, key="A" * 32, **parts)
        await redis.delete(f"{settings.redis_prefix}auth:fail:127.0.0.1")
        if parts or route in ("mailbox_create", "alias_create", "alias_domain_create"):
            # another account's resource, or the domain a new one would be made in
            await api.rest(method, route, 404, body, key=other, **parts)
        bad = {"params": {"purge": "maybe"}} if body is None else {"body": {"nothing": 1}}
        await api.rest(method, route, 422, **bad, **parts)
        if body is not None:
            await api.call(method, route, 400, parts, data=b"[1]",
                           headers={"Authorization": f"Bearer {key}",
                                    "Content-Type": "application/json"})
            await api.call(method, route, 415, parts, data=b"{}",
                           headers={"Authorization": f"Bearer {key}"})
    async with db.transaction() as q:
        found = await db.resolve_key(key_hash=digest(key))
        assert await q.idempotency_lock(account_id=found["account_id"], key="busy")
        for method, route, parts, body in writes:
            await api.rest(method, route, 409, body, headers={"Idempotency-Key": "busy"},
                           **parts)
    conflicts = [
        ("POST", "domain_create", {}, {"domain": "example.com"}),
        ("PUT", "domain_update", {"domain": "gone.example"}, {"description": "x"}),
        ("DELETE", "domain_delete", {"domain": "gone.example"}, None),
        ("POST", "domain_restore", {"domain": "example.com"}, {}),
        ("POST", "mailbox_create", {}, {"domain": "example.com", "local_part": "john"}),
        ("PUT", "mailbox_update", {"email": "gone@example.com"}, {"quota": 10}),
        ("DELETE", "mailbox_delete", {"email": "gone@example.com"}, None),
        ("POST", "mailbox_restore", {"email": "john@example.com"}, {}),
        ("POST", "alias_create", {}, {"address": "sales@example.com", "goto": ["a@b.org"]}),
        ("POST", "alias_restore", {"id": alias_id}, {}),
        ("POST", "alias_domain_create", {}, {"alias_domain": "example.net",
                                             "target_domain": "example.com"}),
    ]
    for method, route, parts, body in conflicts:
        await api.rest(method, route, 409, body, **parts)
    # a read-only key on every write; a key limited to other domains
    read_only = await create_key(db, a_id, Scope(read_only=True))
    for method, route, parts, body in writes:
        refused = await api.rest(method, route, 403, body, key=read_only, **parts)
        assert refused["msg"] == "This API key is read-only."
    limited = await create_key(db, a_id, Scope(domains=frozenset({"example.com"})))
    await api.rest("POST", "domain_create", 404, {"domain": "elsewhere.example"}, key=limited)
    await api.rest("POST", "domain_bulk_delete", 404, {"domains": ["elsewhere.example"]},
                   key=limited)
    for route in ("mailboxes", "aliases", "alias_domains"):
        await api.rest("GET", route, 404, key=limited,
                       params={"filter[domain]": "elsewhere.example"})
    # a tight app: 413 past 1 KiB, and every limit used up (nothing is recorded)
    tight = settings.replace(max_body_bytes=1024, rate_create_domain=0,
                             rate_create_mailbox_single=0, rate_write=0, rate_get=0)
    async with TestClient(TestServer(create_app(tight))) as tight_client:
        limited = Rest(tight_client, seen, key)
        limited.doc = api.doc
        for method, route, parts, body in writes:
            await limited.rest(method, route, 429, body, **parts)
            if body is not None:
                await limited.call(method, route, 413, parts, data=b" " * 1025,
                                   headers={"Authorization": f"Bearer {key}"})
        for route, parts in READS:
            parts = ids.get(parts, parts) if isinstance(parts, str) else parts
            await limited.rest("GET", route, 429, **parts)
    # and each write once more, accepted
    for method, route, parts, body in writes:
        answer = await api.rest(method, route, 202, body, **parts)
        assert set(answer) >= {"type", "msg", "task_id"}
        await run_worker()
    missing = sorted(p for p in documented(api.doc, resources=True) - seen
                     if not p[0].startswith(WEBHOOKS))  # the next test's
    assert missing == [], "\n".join(map(str, missing))


WEBHOOKS = "/api/v1/webhooks"


async def test_every_documented_response_of_the_webhook_routes_is_a_real_one(
        make, client, settings, db, redis):
    seen: set[tuple[str, str, str]] = set()
    a_id, key = await make.account("a")
    _, other = await make.account("b")
    api = await Rest(client, seen, key).load()
    bearer = {"Authorization": f"Bearer {key}"}
    # an address literal: public, and no DNS asked
    hook = await api.rest("POST", "webhook_create", 201, {"url": "https://8.8.8.8/hook"})
    await api.rest("POST", "webhook_create", 422, {"url": "http://10.0.0.1/"})
    await api.call("POST", "webhook_create", 400, {}, data=b"[1]",
                   headers={**bearer, "Content-Type": "application/json"})
    await api.call("POST", "webhook_create", 415, {}, data=b"{}", headers=bearer)
    one = {"id": hook["id"]}
    routes = [("POST", "webhook_create", {}, {"url": "https://8.8.4.4/"}),
              ("GET", "webhooks", {}, None), ("GET", "webhook_deliveries", one, None),
              ("DELETE", "webhook_delete", one, None)]
    read_only = await create_key(db, a_id, Scope(read_only=True))
    for method, route, parts, body in routes:
        await api.rest(method, route, 401, body, key="A" * 32, **parts)
        await redis.delete(f"{settings.redis_prefix}auth:fail:127.0.0.1")
        if body is None:
            await api.rest(method, route, 422, params={"nothing": "1"}, **parts)
        if parts:
            await api.rest(method, route, 404, key=other, **parts)
        if method != "GET":
            await api.rest(method, route, 403, body, key=read_only, **parts)
    tight = settings.replace(max_body_bytes=1024, rate_write=0, rate_get=0)
    async with TestClient(TestServer(create_app(tight))) as tight_client:
        limited = Rest(tight_client, seen, key)
        limited.doc = api.doc
        for method, route, parts, body in routes:
            await limited.rest(method, route, 429, body, **parts)
        await limited.call("POST", "webhook_create", 413, {}, data=b" " * 1025,
                           headers=bearer)
    await api.rest("GET", "webhooks", 200)
    await api.rest("GET", "webhook_deliveries", 200, **one)
    await api.rest("DELETE", "webhook_delete", 200, **one)
    missing = sorted(p for p in documented(api.doc, resources=True) - seen
                     if p[0].startswith(WEBHOOKS))
    assert missing == [], "\n".join(map(str, missing))




class Assets(HTMLParser):
    """Every URL a page loads: src and href attributes, and quoted URLs in its scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


async def test_the_docs_page_loads_only_local_assets(client):
    r = await client.get(url(client, "docs"))
    assert r.status == 200 and r.content_type == "text/html"
    page = await r.text()
    assert re.findall(r"https?://|//[a-z]", page, re.IGNORECASE) == []
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    parser = Assets()
    parser.feed(page)
    spec_url = url(client, "openapi")
    assert f'"{spec_url}"' in page
    assert len(parser.urls) == 3
    for asset in [*parser.urls, spec_url]:
        assert asset.startswith("/api/v1/"), asset
        r = await client.get(asset)
        assert r.status == 200, asset
        assert len(await r.read()) > 500, asset
    for name in ("index.html", "..%2f__init__.py", "swagger-initializer.js"):
        r = await client.get(f"/api/v1/docs/assets/{name}")
        assert r.status == 404, name
        assert (await r.json())["status"] == "error"
