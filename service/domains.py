"""Handlers for domains and sub-domains."""

from __future__ import annotations

import contextlib

from aiohttp import web

from service import formats, idempotency, names
from service.access import authenticate, caller, limit
from service.errors import Invalid, ParentDomainNotFound
from service.jsonbody import json_body
from service.schemas import CallerQuery, load
from service.state import DB, LIMITER, RATE, SCHEMAS, SETTINGS
from service.tasks import submit

CALLER_QUERY = CallerQuery()


async def list_domains(request: web.Request) -> web.Response:
    account_id, _ = await caller(request, CALLER_QUERY)
    rows = await request.app[DB].fetch("list_domains", account_id)
    results = {}
    for row in rows:
        entry = {
            "status": row["status"],
            "domain_quota": formats.domain_quota(row["quota_mb"]),
            "mailbox_count": str(row["mailbox_count"]),
            "created_at": formats.day(row["created_at"]),
        }
        if row["parent"]:
            entry["parent"] = row["parent"]
        results[row["name"]] = entry
    return web.json_response({"user_id": str(account_id), "total_domain": len(rows),
                              "results": results, "status": "success"})


async def create_domain(request: web.Request) -> web.Response:
    body = await json_body(request)
    account_id = await authenticate(request, body.get("key"))
    data = load(request.app[SCHEMAS].domain, body)
    await limit(request, account_id, "create_domain")
    params = data["Params"]
    # the domain row (pending, 409 if taken) and its task, in one statement
    task_id = await idempotency.queries(request).fetchval(
        "create_domain_task", account_id, data["Domain"], {"domain": data["Domain"]},
        params["quota_mb"], params["max_mailboxes"], params["default_mailbox_quota_mb"],
        params["description"],
    )
    await idempotency.enqueue_task(request, task_id, "domain")
    return web.json_response({"status": "success", "domain": data["Domain"], "task_id": task_id})


async def create_sub_domains(request: web.Request) -> web.Response:
    body = await json_body(request)
    account_id = await authenticate(request, body.get("key"))
    data = load(request.app[SCHEMAS].sub_domain, body)
    db = request.app[DB]
    parent = await db.fetchrow("get_owned_domain", data["Domain"], account_id)
    if parent is None:
        raise ParentDomainNotFound
    full_names = []
    for label in data["Params"]["sub_domains"]:
        try:
            full_names.append(names.domain(f"{label}.{parent['name']}"))
        except ValueError as exc:
            raise Invalid(f"Params.sub_domains: {exc}",
                          {"Params.sub_domains": [str(exc)]}) from None
    limiter = request.app[LIMITER]
    # success-only: the slot is taken last, and handed back if recording the task fails
    decision = await limiter.once(account_id, f"sub_domain:{parent['id']}",
                                  request.app[SETTINGS].rate_sub_domain_window_s)
    request[RATE] = decision
    try:
        task_id = await submit(request, account_id, "sub_domain", parent["name"],
                               {"parent_id": parent["id"], "names": full_names})
    except BaseException:
        with contextlib.suppress(Exception):
            await limiter.release(decision)
        raise
    return web.json_response({"status": "success", "domain": parent["name"], "task_id": task_id})
