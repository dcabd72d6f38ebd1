"""MailAPI handlers for mailboxes: create one, create many, list a domain's."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.core import names
from service.core.errors import Invalid
from service.core.store import Row
from service.web.api import formats
from service.web.api.secrets import payload_secret
from service.web.call import Call
from service.web.state import READS, SETTINGS


def _quota(requested: int | None, domain: Row) -> int:
    return requested or domain["default_mailbox_quota_mb"]


def _check_quota(requested: int | None, domain: Row, field: str) -> None:
    quota = _quota(requested, domain)
    if quota > domain["quota_mb"]:
        message = f"Cannot exceed the domain's total quota of {domain['quota_mb']} MB."
    elif quota > domain["max_mailbox_quota_mb"]:
        message = (f"Cannot exceed the domain's largest mailbox quota of "
                   f"{domain['max_mailbox_quota_mb']} MB.")
    else:
        return
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


def mailbox_item(local_part: str, display_name: str | None, quota_mb: int,
                 secret: dict[str, str], **flags: bool) -> dict[str, Any]:
    """One mailbox as a job reads it: `secret` from payload_secret (empty: the worker
    generates a password); `flags` (active, force_pw_update, ...) only where they differ
    from the defaults."""
    item: dict[str, Any] = {"local_part": local_part, "quota_mb": quota_mb, **secret}
    if display_name:
        item["display_name"] = display_name
    item.update(flags)
    return item


async def create_single(call: Call) -> web.Response:
    domain, params = call.found, call.data["Params"]
    assert domain is not None  # the route's lookup
    item = mailbox_item(call.data["local_part"], params["display_name"],
                        _quota(params["quota_mb"], domain), payload_secret(call, params))
    task_id = await call.submit("mailbox_single", domain["name"],
                                {"domain_id": domain["id"], "items": [item]}, 1)
    return web.json_response({"status": "success", "task_id": task_id})


async def create_bulk(call: Call) -> web.Response:
    domain, data = call.found, call.data
    assert domain is not None  # the route's lookup
    params = data["Params"]
    if "count" in params:
        quota = _quota(params["quota_mb"], domain)
        # a shared password is sealed once per mailbox: each gets its own hash and salt
        start = params["start"]
        items = [
            mailbox_item(names.local_part(f"{data['Email_fullname']}{n}"),
                         params["display_name"], quota, payload_secret(call, params))
            for n in range(start, start + params["count"])
        ]
    else:
        items = [
            mailbox_item(e["local_part"], e["display_name"] or params["display_name"],
                         _quota(e["quota_mb"] or params["quota_mb"], domain),
                         payload_secret(call, e))
            for e in params["mailboxes"]
        ]
    task_id = await call.submit("mailbox_bulk", domain["name"],
                                {"domain_id": domain["id"], "items": items}, len(items))
    return web.json_response({"status": "success", "task_id": task_id})


async def list_mailboxes(call: Call) -> web.Response:
    domain = call.found
    assert domain is not None  # the route's lookup
    settings = call.app[SETTINGS]
    rows = await call.app[READS].list_mailboxes(domain_id=domain["id"])
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
