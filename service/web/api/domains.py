"""MailAPI handlers for domains and sub-domains."""

from __future__ import annotations

import contextlib

from aiohttp import web

from service.core import names
from service.core.errors import Invalid, SubDomainRateLimited
from service.core.store import Row, Store
from service.web.api import formats
from service.web.api.schemas import DEFAULT_MAX_ALIASES
from service.web.call import Call
from service.web.ratelimit import Decision
from service.web.state import DB, LIMITER, RATE, READS, SETTINGS


async def list_domains(call: Call) -> web.Response:
    domains = call.key.domains
    rows = await call.app[READS].list_domains(account_id=call.account_id,
                                           domains=None if domains is None else sorted(domains))
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
    return web.json_response({"user_id": str(call.account_id), "total_domain": len(rows),
                              "results": results, "status": "success"})


async def create_domain(call: Call) -> web.Response:
    domain, params = call.data["Domain"], call.data["Params"]
    # the domain row (pending, 409 if taken) and its task, in one statement
    # the MailAPI has no per-mailbox maximum of its own: its mailboxes may each take up
    # to the domain's total, as they always could
    await call.count_now()  # the row this records is more than a task
    task_id = await call.store.create_domain_task(
        account_id=call.account_id, domain=domain, quota_mb=params["quota_mb"],
        max_mailboxes=params["max_mailboxes"],
        default_mailbox_quota_mb=params["default_mailbox_quota_mb"],
        description=params["description"], max_mailbox_quota_mb=params["quota_mb"],
        max_aliases=DEFAULT_MAX_ALIASES)
    await call.enqueue(task_id, "domain")
    return web.json_response({"status": "success", "domain": domain, "task_id": task_id})


async def create_sub_domains(call: Call) -> web.Response:
    parent = call.found
    assert parent is not None  # the route's lookup
    full_names = []
    for label in call.data["Params"]["sub_domains"]:
        try:
            full_names.append(names.domain(f"{label}.{parent['name']}"))
        except ValueError as exc:
            raise Invalid(f"Params.sub_domains: {exc}",
                          {"Params.sub_domains": [str(exc)]}) from None
    await call.count_now()  # the rows this records are more than a task
    limiter = call.app[LIMITER]
    # success-only: the slot is taken last, and handed back if recording the task fails
    decision = await limiter.once(call.account_id, f"sub_domain:{parent['id']}",
                                  call.app[SETTINGS].rate_sub_domain_window_s)
    call.request[RATE] = decision
    try:
        if call.recording is not None:  # under an Idempotency-Key: in its transaction
            task_id = await _record_sub_domains(call, call.recording.store, parent, full_names)
        else:
            async with call.app[DB].transaction() as store:
                task_id = await _record_sub_domains(call, store, parent, full_names)
        await call.enqueue(task_id, "sub_domain")
    except BaseException:
        with contextlib.suppress(Exception):
            await limiter.release(decision)
        raise
    return web.json_response({"status": "success", "domain": parent["name"], "task_id": task_id})


async def _record_sub_domains(call: Call, store: Store, parent: Row, full_names: list[str]) -> int:
    """The task, unless Postgres already holds one for the parent in the window: Redis's
    slot is the quick, shared check, and this one holds when Redis lost the slot (a
    Sentinel failover loses the last writes of the old master)."""
    window_s = call.app[SETTINGS].rate_sub_domain_window_s
    await store.lock_sub_domain_window(parent_id=parent["id"])
    made = await store.create_sub_domain_task(
        account_id=call.account_id, domain=parent["name"],
        payload={"parent_id": parent["id"], "names": full_names}, total=len(full_names),
        parent_id=parent["id"], window_s=window_s)
    if made["id"] is None:
        refused = Decision(False, 1, 0, made["reset_ms"], made["now_ms"])
        call.request[RATE] = refused
        raise SubDomainRateLimited(headers=refused.headers)
    return made["id"]
