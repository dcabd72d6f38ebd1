"""Handlers for mailboxes: create one, create many, list a domain's."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service import formats, names
from service.access import caller, limit, load_authenticated, resolve
from service.errors import DomainNotFound, Invalid
from service.jsonbody import json_body
from service.schemas import ListMailboxQuery
from service.state import DB, HASHER, SCHEMAS, SETTINGS
from service.tasks import submit

LIST_QUERY = ListMailboxQuery()


async def _accept(request: web.Request, schema: Any) -> tuple[int, dict[str, Any], Any]:
    """Body, key and schema of a mailbox request: (account id, data, the target domain)."""
    body = await json_body(request)
    data = await load_authenticated(request, body.get("key"), schema, body)
    domain = await resolve(request, body.get("key"), "resolve_key_with_domain", data["Domain"])
    if domain["id"] is None:
        raise DomainNotFound
    return domain["account_id"], data, domain


async def _owned_domain(request: web.Request, name: str, account_id: int) -> Any:
    domain = await request.app[DB].fetchrow("get_owned_domain", name, account_id)
    if domain is None:
        raise DomainNotFound
    return domain


def _quota(requested: int | None, domain: Any, field: str) -> int:
    quota = requested or domain["default_mailbox_quota_mb"]
    if quota > domain["quota_mb"]:
        message = f"Cannot exceed the domain's total quota of {domain['quota_mb']} MB."
        raise Invalid(f"{field}: {message}", {field: [message]})
    return quota


def _item(local_part: str, display_name: str | None, quota_mb: int,
          password_hash: str | None) -> dict[str, Any]:
    """One mailbox as a job reads it. No plaintext: a missing hash means 'generate one'."""
    item: dict[str, Any] = {"local_part": local_part, "quota_mb": quota_mb}
    if display_name:
        item["display_name"] = display_name
    if password_hash:
        item["password_hash"] = password_hash
    return item


async def create_single(request: web.Request) -> web.Response:
    account_id, data, domain = await _accept(request, request.app[SCHEMAS].mailbox_single)
    params = data["Params"]
    quota = _quota(params["quota_mb"], domain, "Params.quota_mb")
    await limit(request, account_id, "create_mailbox_single")
    password_hash = params.get("password_hash")
    if "password" in params:
        password_hash = await request.app[HASHER].hash(params["password"])
    item = _item(data["local_part"], params["display_name"], quota, password_hash)
    task_id = await submit(request, account_id, "mailbox_single", domain["name"],
                           {"domain_id": domain["id"], "items": [item]})
    return web.json_response({"status": "success", "task_id": task_id})


async def create_bulk(request: web.Request) -> web.Response:
    account_id, data, domain = await _accept(request, request.app[SCHEMAS].mailbox_bulk)
    params = data["Params"]
    hasher = request.app[HASHER]
    if "count" in params:
        quota = _quota(params["quota_mb"], domain, "Params.quota_mb")
        await limit(request, account_id, "create_mailbox_bulk")
        # one shared password is hashed once: the same secret, the same hash
        shared = params.get("password_hash")
        if "password" in params:
            shared = await hasher.hash(params["password"])
        start = params["start"]
        items = [
            _item(names.local_part(f"{data['Email_fullname']}{n}"), params["display_name"],
                  quota, shared)
            for n in range(start, start + params["count"])
        ]
    else:
        entries = params["mailboxes"]
        quotas = [_quota(e["quota_mb"] or params["quota_mb"], domain,
                         f"Params.mailboxes.{i}.quota_mb") for i, e in enumerate(entries)]
        await limit(request, account_id, "create_mailbox_bulk")
        plain = [e["password"] for e in entries if "password" in e]
        hashed = iter([h for batch in hasher.hash_batches(plain, 16) for h in await batch])
        items = [
            _item(e["local_part"], e["display_name"] or params["display_name"], q,
                  next(hashed) if "password" in e else e.get("password_hash"))
            for e, q in zip(entries, quotas, strict=True)
        ]
    task_id = await submit(request, account_id, "mailbox_bulk", domain["name"],
                           {"domain_id": domain["id"], "items": items})
    return web.json_response({"status": "success", "task_id": task_id})


async def list_mailboxes(request: web.Request) -> web.Response:
    account_id, query = await caller(request, LIST_QUERY)
    domain = await _owned_domain(request, query["domain"], account_id)
    settings = request.app[SETTINGS]
    rows = await request.app[DB].fetch("list_mailboxes", domain["id"])
    results = {
        row["address"]: {
            "provisioning_status": "active" if row["active"] else "inactive",
            "mailbox_quota": formats.mailbox_quota(row["quota_mb"]),
            "imap_credentials": {"host": settings.imap_host, "port": settings.imap_port,
                                 "username": row["address"]} if settings.imap_host else None,
            "created_at": formats.day(row["created_at"]),
        }
        for row in rows
    }
    return web.json_response({"user_id": str(account_id), "domain": domain["name"],
                              "results": results, "status": "success"})
