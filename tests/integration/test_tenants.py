"""The tenant matrix: one account's data, every route of the table, and every caller that
must not reach it (another account, a revoked key, an expired key, a key limited to
another domain). It counts every answer that reveals or changes the data: a success that
carries it, an answer that differs between "the other account's thing" and "a thing that
does not exist" (a status alone tells them apart), a replay of the other account's
Idempotency-Key, and any change to its rows or its rate-limit windows. The count must be
0. Routes come from the route table (service/web/routes.py) and their requests from its
documentation (a body route's `Doc.example`), so a route added later joins the matrix, or
fails it until it says how it is called.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from service.core import accounts
from service.core.accounts import Scope, create_key
from service.web.app import create_app
from service.web.routes import ROUTES
from service.web.state import SCHEMAS
from tests.conftest import fill, send

OWNED = "a-owned.example"  # the first account's domain, which the others probe
ELSEWHERE = "a-else.example"  # another domain of the first account
EXAMPLE = "example.com"  # the domain of every documented example
NO_TASK = 9_000_000_000_000_000_000
NO_ID = 900_000_000_000_000_000  # an id a path's pattern takes that names nothing
ALIAS_DOMAIN = "a-alias.example"  # the first account's alias domain, of OWNED
NO_ACCOUNT = 9_000_000_000
API_ROUTES = [r for r in ROUTES if r.policy is not None]
# one documented answer of the contract tells "hosted by some account" apart from "free":
# a domain is hosted once per installation (api-v1.md, create/domain: 409 when any account
# holds it). It names no account and reveals nothing else; counted apart, not as a leak.
CONTRACT = {("create_domain", "Domain", 409, 200), ("domain_create", "domain", 409, 202)}


Request = tuple[dict[str, Any], dict[str, Any]]  # (body or query fields, path parts)


@dataclass
class Intruder:
    name: str
    key: str
    account_id: int  # its own account: what its caller_id says when that is not probed


@dataclass
class Answer:
    status: int
    body: Any
    replayed: bool

    def shape(self) -> tuple[int, str]:
        """What may not differ between the two of a pair: status, and the body with the
        values that differ for every request anyway (task ids, the echoed domain)."""
        text = json.dumps(self.body, sort_keys=True)
        text = re.sub(r'"(task_id|Task_id)": "?\d+"?', r'"\1": 0', text)
        return self.status, re.sub(r"nowhere-[a-z-]+\.example", "D", text.replace(OWNED, "D"))


async def _snapshot(db, redis, prefix: str, account_id: int) -> dict[str, Any]:
    """Everything of the account that a request could change."""
    rows = {}
    for table, where in (("domains", "account_id = $1"), ("tasks", "account_id = $1"),
                         ("idempotency_keys", "account_id = $1"),
                         ("mailboxes", "domain_id IN (SELECT id FROM domains "
                                       "WHERE account_id = $1)"),
                         ("aliases", "account_id = $1"), ("alias_domains", "account_id = $1"),
                         ("api_keys", "account_id = $1")):
        found = await db.pool.fetch(f"SELECT * FROM {table} WHERE {where} "  # noqa: S608
                                    "ORDER BY 1, 2", account_id)
        rows[table] = [{k: v for k, v in dict(r).items() if k != "last_used_at"}
                       for r in found]
    for key in sorted([k async for k in redis.scan_iter(match=f"{prefix}rl:*")]):
        if key.decode().endswith(f":{account_id}") or f":{account_id}:" in key.decode():
            kind = (await redis.type(key)).decode()
            rows[key.decode()] = (await redis.zrange(key, 0, -1) if kind == "zset"
                                  else await redis.get(key))
    return rows


class Matrix:
    """Sends each intruder's pairs of requests to every API route; collects what leaks."""

    def __init__(self, web: TestClient, db: Any, a_id: int, a_tasks: list[int],
                 alias_id: int, secrets: list[str]) -> None:
        self.web = web
        self.db = db
        self.a_id = a_id
        self.a_tasks = a_tasks
        self.alias_id = alias_id
        self.secrets = secrets
        self.leaks: list[str] = []
        self.contract: list[str] = []
        self.asked = 0

    async def call(self, route: Any, who: Intruder, request: Request,
                   idem: str | None = None) -> Answer:
        self.asked += 1
        fields, parts = request
        r = await send(self.web, route, who.key, fields, parts,
                       headers={"Idempotency-Key": idem} if idem else None)
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return Answer(r.status, body, r.headers.get("Idempotent-Replayed") == "true")

    def targets(self, nowhere: str) -> dict[str, list[tuple[Any, Any]]]:
        """What a field or a path part may name: (the first account's, nobody's)."""
        return {"caller_id": [(self.a_id, NO_ACCOUNT)], "domain": [(OWNED, nowhere)],
                "task_id": [(t, NO_TASK) for t in self.a_tasks],
                "filter[domain]": [(OWNED, nowhere)], "email": [(f"john@{OWNED}",
                                                                 f"john@{nowhere}")],
                "id": [(self.alias_id, NO_ID)], "alias_domain": [(ALIAS_DOMAIN, nowhere)]}

    def pairs(self, route: Any) -> list[tuple[str, Request, Request]]:
        """(what is probed, a request naming the first account's, its twin naming what
        exists for nobody), from the route's path, its schema and its documented example."""
        schema = self.web.app[SCHEMAS][route.name]
        nowhere = f"nowhere-{route.name.replace('_', '-')}.example"
        targets = self.targets(nowhere)
        in_path = re.findall(r"\{([a-z_]+)[:}]", route.path)
        body: dict[str, Any] = {}
        if route.policy.body is not None:
            assert route.doc is not None and route.doc.example is not None, route.name
            example = dict(route.doc.example)
            body = fill(example, OWNED)
            if "ids" in example:  # a bulk of aliases names them by id
                return [("ids", ({**body, "ids": [self.alias_id]}, {}),
                         ({**body, "ids": [NO_ID]}, {}))]
            if not in_path:
                named = [n for n in schema.fields if EXAMPLE in json.dumps(example.get(n))]
                assert named, f"{route.name}: its example names no domain"
                return [("Domain" if "Domain" in named else named[0], (body, {}),
                         (fill(example, nowhere), {}))]
        if in_path:
            if route.policy.body is None:
                body = {}
            if in_path == ["task_id"]:  # the path's pattern takes ids of up to 18 digits
                targets["task_id"] = [(t, NO_ID) for t in self.a_tasks]
            assert set(in_path) <= set(targets), f"{route.name}: say how its path is filled"
            return [(name, (body, {name: owned}), (body, {name: none}))
                    for name in in_path for owned, none in targets[name]]
        fields = {f.data_key or n: f for n, f in schema.fields.items()}
        known = {"caller_id", "domain", "task_id", "filter[domain]"}
        unknown = [n for n, f in fields.items() if f.required and n not in known]
        assert not unknown, f"{route.name}: say how {unknown} are filled"
        probed = [(name, ({name: owned}, {}), ({name: none}, {}))
                  for name in known & set(fields) for owned, none in targets[name]]
        # a listing that names nothing is still asked once: it must not show the first
        # account's data
        return probed or [("nothing", ({}, {}), ({}, {}))]

    async def probe(self, who: Intruder) -> None:
        for route in API_ROUTES:
            fields = self.web.app[SCHEMAS][route.name].fields
            for probed, target, twin in self.pairs(route):
                if probed == "caller_id" and who.account_id == self.a_id:
                    continue  # its own account's id: not another's
                neutral = {k: v for k, v in {"caller_id": who.account_id,
                                             "domain": OWNED}.items()
                           if k in fields and k != probed and not route.policy.bearer}
                mine = await self.call(route, who, ({**neutral, **target[0]}, target[1]))
                none = await self.call(route, who, ({**neutral, **twin[0]}, twin[1]))
                where = f"{route.name} as {who.name}, {probed}"
                if mine.shape() != none.shape():
                    if (route.name, probed, mine.status, none.status) in CONTRACT \
                            and who.account_id != self.a_id:
                        self.contract.append(f"{where}: {mine.status} / {none.status}")
                    else:
                        self.leaks.append(f"{where}: {mine.shape()} / {none.shape()}")
                text = json.dumps(mine.body)
                shown = [s for s in self.secrets if s in text]
                # a page's links echo the filter it was asked for: not the account's data
                shown_data = json.dumps({k: v for k, v in mine.body.items() if k != "links"}
                                        if isinstance(mine.body, dict) else mine.body)
                if shown or (mine.status == 200 and route.policy.body is None
                             and OWNED in shown_data):
                    self.leaks.append(f"{where}: shows {shown or OWNED}: {text[:200]}")
                if route.policy.idempotent and who.account_id != self.a_id:
                    # the first account's Idempotency-Key, with the very request it made;
                    # the intruder's own earlier use of it (on another route) is forgotten
                    await self.db.pool.execute("DELETE FROM idempotency_keys "
                                               "WHERE account_id = $1", who.account_id)
                    reused = await self.call(route, who, ({**neutral, **target[0]}, target[1]),
                                             idem="a-used-this")
                    if reused.replayed or reused.shape() != mine.shape():
                        self.leaks.append(f"{where}, Idempotency-Key: {reused.shape()}")


async def test_no_route_reveals_or_changes_another_accounts_data(make, db, redis, settings,
                                                                run_worker):
    a_id, a_key = await make.account("a")
    await make.domain(a_key, OWNED)
    await make.domain(a_key, ELSEWHERE)
    sub = await make.post("create_sub_domain", {"Domain": OWNED,
                                                "Params": {"sub_domains": ["team"]}}, a_key)
    single = await make.client.post(
        str(make.client.app.router["create_mailbox_single"].url_for()),
        json={"Email_fullname": "john", "single_bulk": "single", "Domain": OWNED,
              "Params": {"password": "johns own secret"}, "key": a_key},
        headers={"Idempotency-Key": "a-used-this"})
    bulk = await make.post("create_mailbox_bulk", {
        "Email_fullname": "team", "single_bulk": "bulk", "Domain": OWNED,
        "Params": {"count": 3}}, a_key)
    failed = await make.post("create_mailbox_single", {
        "Email_fullname": "john", "single_bulk": "single", "Domain": OWNED,
        "Params": {}}, a_key)
    await run_worker()
    # every task of the probed domain: of the domain itself, sub-domains, mailboxes
    a_tasks = [(await r.json())["task_id"] for r in (sub, single, bulk, failed)]
    a_tasks.append(await db.pool.fetchval(
        "SELECT id FROM tasks WHERE account_id = $1 AND domain = $2 AND type = 'domain'",
        a_id, OWNED))
    alias = await make.rest("POST", "alias_create", a_key,
                            {"address": f"sales@{OWNED}", "goto": [f"john@{OWNED}"]})
    await make.done(a_key, alias)
    await make.done(a_key, await make.rest("POST", "alias_domain_create", a_key, {
        "alias_domain": ALIAS_DOMAIN, "target_domain": OWNED}))
    # what no intruder may see: names and ids it did not send
    secrets = ["john@", "team1@", f"team.{OWNED}", "johns own secret", "sales@",
               ALIAS_DOMAIN, *map(str, a_tasks)]

    b_id, b_key = await make.account("b")
    await make.domain(b_key, "b-owned.example")
    revoked = await create_key(db, a_id)
    await accounts.revoke_key(db, revoked)
    expired = await create_key(db, a_id, Scope(expires_at=datetime.now(UTC)
                                                - timedelta(minutes=1)))
    limited = await create_key(db, a_id, Scope(domains=frozenset({ELSEWHERE})))

    # the probes make many failed key checks from one address: no throttle in the way
    open_door = settings.replace(auth_failures_per_minute=10**9)
    async with TestClient(TestServer(create_app(open_door))) as web:
        matrix = Matrix(web, db, a_id, a_tasks, alias.body["id"], secrets)
        before = await _snapshot(db, redis, settings.redis_prefix, a_id)
        for who in (Intruder("another account", b_key, b_id),
                    Intruder("a revoked key", revoked, a_id),
                    Intruder("an expired key", expired, a_id)):
            await matrix.probe(who)
        await run_worker()  # whatever an intruder got accepted is done now
        after = await _snapshot(db, redis, settings.redis_prefix, a_id)
        # a key of the account's own, limited to its other domain: its reads count against
        # the account's hourly limits, as any of the account's keys do; nothing else moves
        await matrix.probe(Intruder("a key limited to another domain", limited, a_id))
        await run_worker()
        last = await _snapshot(db, redis, settings.redis_prefix, a_id)
    changed = [part for part in sorted(set(before) | set(after))
               if before.get(part) != after.get(part)]
    # the limited key's bulk actions are its account's own tasks, acting on nothing
    # outside its domains: each of their items reads `Not found.`
    bulks = [t for t in last["tasks"] if t not in after["tasks"]]
    assert all(t["type"].endswith("_bulk_action") and t["status"] == "completed"
               and {r["status"] for r in t["results"].values()} == {"Not found."}
               for t in bulks), bulks
    last["tasks"] = [t for t in last["tasks"] if t not in bulks]
    changed += [part for part in ("domains", "tasks", "idempotency_keys", "mailboxes",
                                  "aliases", "alias_domains", "api_keys")
                if after[part] != last[part]]
    leaks = matrix.leaks + [f"changed: {part}" for part in changed]
    assert matrix.asked > 100, matrix.asked
    assert leaks == [], "\n".join(leaks)
    # the one answer the contract itself requires, counted apart
    assert matrix.contract == ["create_domain as another account, Domain: 409 / 200",
                               "domain_create as another account, domain: 409 / 202"], \
        matrix.contract
