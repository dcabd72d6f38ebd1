"""MailAPI handlers for mailboxes: create one, create many, list a domain's."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.core import names
from service.core.errors import Invalid
from service.core.store import Row
from service.web.api import formats
from service.web.call import Call
from service.web.state import DB, HASHER, SETTINGS


def _quota(requested: int | None, domain: Row) -> int:
    return requested or domain["default_mailbox_quota_mb"]


def _check_quota(requested: int | None, domain: Row, field: str) -> None:
    if _quota(requested, domain) > domain["quota_mb"]:
        message = f"Cannot exceed the domain's total quota of {domain['quota_mb']} MB."
        raise Invalid(f"{field}: {message}", {field: [message]})


def check_single(data: dict[str, Any], domain: Row) -> None:
    """The routes' check: every mailbox quota within the domain's total."""
    _check_quota(data["Params"]["quota_mb"], domain, "Params.quota_mb")


def check_bulk(data: dict[str, Any], domain: Row) -> None:
    params = data["Params"]
    if "count" in params:
        _check_quota(params["quota_mb"], domain, "Params.quota_mb")
        return
    for i, entry in enumerate(params["mailboxes"]):
        _check_quota(entry["quota_mb"] or params["quota_mb"], domain,
                     f"Params.mailboxes.{i}.quota_mb")


def _item(local_part: str, display_name: str | None, quota_mb: int,
          password_hash: str | None) -> dict[str, Any]:
    """One mailbox as a job reads it. No plaintext: a missing hash means 'generate one'."""
    item: dict[str, Any] = {"local_part": local_part, "quota_mb": quota_mb}
    if display_name:
        item["display_name"] = display_name
    if password_hash:
        item["password_hash"] = password_hash
    return item


async def create_single(call: Call) -> web.Response:
    domain, params = call.found, call.data["Params"]
    assert domain is not None  # the route's lookup
    password_hash = params.get("password_hash")
    if "password" in params:
        password_hash = await call.app[HASHER].hash(params["password"])
    item = _item(call.data["local_part"], params["display_name"],
                 _quota(params["quota_mb"], domain), password_hash)
    task_id = await call.submit("mailbox_single", domain["name"],
                                {"domain_id": domain["id"], "items": [item]}, 1)
    return web.json_response({"status": "success", "task_id": task_id})


async def create_bulk(call: Call) -> web.Response:
    domain, data = call.found, call.data
    assert domain is not None  # the route's lookup
    params = data["Params"]
    hasher = call.app[HASHER]
    if "count" in params:
        quota = _quota(params["quota_mb"], domain)
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
        plain = [e["password"] for e in entries if "password" in e]
        hashed = iter([h for batch in hasher.hash_batches(plain, 16) for h in await batch])
        items = [
            _item(e["local_part"], e["display_name"] or params["display_name"],
                  _quota(e["quota_mb"] or params["quota_mb"], domain),
                  next(hashed) if "password" in e else e.get("password_hash"))
            for e in entries
        ]
    task_id = await call.submit("mailbox_bulk", domain["name"],
                                {"domain_id": domain["id"], "items": items}, len(items))
    return web.json_response({"status": "success", "task_id": task_id})


async def list_mailboxes(call: Call) -> web.Response:
    domain = call.found
    assert domain is not None  # the route's lookup
    settings = call.app[SETTINGS]
    rows = await call.app[DB].list_mailboxes(domain_id=domain["id"])
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
    return web.json_response({"user_id": str(call.account_id), "domain": domain["name"],
                              "results": results, "status": "success"})
