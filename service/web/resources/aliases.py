"""The resource API's aliases: list, create, read, change, delete, restore, forget, bulk.

An alias's address is on one of the account's domains (the route's lookup), is not a
mailbox's, and counts against the domain's `aliases` limit; `@example.com` is the
domain's catch-all. Its id is drawn when its task is recorded, so the 202 names it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.core import limits
from service.core.errors import (
    AliasDeleted,
    AliasExists,
    AliasShadowsMailbox,
    DomainDeleted,
    Invalid,
    NotDeleted,
)
from service.core.store import Row
from service.web.call import Call


def _found(call: Call) -> Row:
    assert call.found is not None  # the route's lookup
    return call.found


def _fits(domain: Row) -> None:
    refusal = limits.alias_fits(max_aliases=domain["max_aliases"],
                                alias_count=domain["alias_count"])
    if refusal is not None:
        raise Invalid(refusal)


def check_create(data: dict[str, Any], domain: Row) -> None:
    """The address is free of mailboxes and aliases, and the domain has room."""
    if domain["deleted_at"] is not None:
        raise DomainDeleted
    if domain["taken"] == "mailbox":
        raise AliasShadowsMailbox
    if domain["taken"] == "alias":
        raise AliasExists
    _fits(domain)


async def create_alias(call: Call) -> web.Response:
    domain, data = _found(call), call.data
    await call.count_now()  # the row this records is more than a task
    recorded = await call.store.create_alias_task(
        account_id=call.account_id, domain=domain["name"],
        payload={"domain_id": domain["id"], "address": data["address"],
                 "goto": data["goto"], "active": data["active"]})
    await call.enqueue(recorded["id"], "alias")
    return call.accepted(recorded["id"], f"Scheduled to add the alias {data['address']}.",
                         id=recorded["alias_id"])


def _live(alias: Row) -> None:
    if alias["deleted_at"] is not None:
        raise AliasDeleted


def check_change(data: dict[str, Any], alias: Row) -> None:
    _live(alias)
    if alias["address"] in data.get("goto", ()):
        raise Invalid("goto: An alias cannot send mail to itself.",
                      {"goto": ["An alias cannot send mail to itself."]})


async def update_alias(call: Call) -> web.Response:
    alias = _found(call)
    task_id = await call.submit("alias_update", alias["domain"],
                                {"alias_id": alias["id"], "changes": call.data}, 1)
    return call.accepted(task_id, f"Scheduled to change the alias {alias['address']}.")


async def _act(call: Call, task_type: str, action: str, verb: str) -> web.Response:
    alias = _found(call)
    task_id = await call.submit(task_type, alias["domain"],
                                {"action": action, "items": [str(alias["id"])]}, 1)
    return call.accepted(task_id, f"Scheduled to {verb} the alias {alias['address']}.")


async def delete_alias(call: Call) -> web.Response:
    if call.data["purge"]:
        return await _act(call, "alias_delete", "forget", "delete for good")
    return await _act(call, "alias_delete", "delete", "delete")


def check_restore(data: dict[str, Any], alias: Row) -> None:
    if alias["deleted_at"] is None:
        raise NotDeleted
    if alias["domain_deleted_at"] is not None:
        raise DomainDeleted
    _fits(alias)


async def restore_alias(call: Call) -> web.Response:
    return await _act(call, "alias_restore", "restore", "restore")


async def forget_alias(call: Call) -> web.Response:
    return await _act(call, "alias_forget", "forget", "delete for good")


async def bulk(call: Call) -> web.Response:
    action, ids = call.data["action"], call.data["ids"]
    # an id that is not the account's gets `Not found.` in the results
    task_id = await call.submit("alias_bulk_action", "", call.within_scope(
        {"action": action, "items": [str(i) for i in ids]}), len(ids))
    return call.accepted(task_id, f"Scheduled to {action} these {len(ids)} aliases.")
