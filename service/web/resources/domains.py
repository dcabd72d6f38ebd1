"""The resource API's domains: list, create, read, change, delete, restore, bulk delete.

Ownership is the route's lookup (a domain of the key's account, or 404); the checks here
see what the lookup found, and refuse what the task could not do, so a refusal changes
nothing. The task's job checks again under the domain's lock.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.core import limits
from service.core.errors import DomainDeleted, Invalid, NotDeleted, ParentDomainDeleted
from service.core.store import Row
from service.web.call import Call


def _domain(call: Call) -> Row:
    assert call.found is not None  # the route's lookup
    return call.found


def _columns(data: dict[str, Any]) -> dict[str, Any]:
    """A change's fields as the domain's columns."""
    return {limits.DOMAIN_FIELDS[field]: value for field, value in data.items()}


async def create_domain(call: Call) -> web.Response:
    data = call.data
    # the domain row (pending; 409 if the name is hosted) and its task, in one statement
    await call.count_now()  # the row this records is more than a task
    task_id = await call.store.create_domain_task(
        account_id=call.account_id, domain=data["domain"], quota_mb=data["quota"],
        max_mailboxes=data["mailboxes"], default_mailbox_quota_mb=data["defquota"],
        description=data["description"], max_mailbox_quota_mb=data["maxquota"],
        max_aliases=data["aliases"], backupmx=data["backupmx"], active=data["active"],
        postmaster=data["postmaster"])
    await call.enqueue(task_id, "domain")
    return call.accepted(task_id, f"Scheduled to add the domain {data['domain']}.")


def check_change(data: dict[str, Any], domain: Row) -> None:
    """Not deleted, and no limit below what is in use."""
    if domain["deleted_at"] is not None:
        raise DomainDeleted
    problems = limits.domain_problems(domain, _columns(data), domain["largest_quota_mb"] or 0)
    if problems:
        field, texts = next(iter(problems.items()))
        raise Invalid(f"{field}: {texts[0]}", problems)


async def update_domain(call: Call) -> web.Response:
    domain = _domain(call)
    task_id = await call.submit("domain_update", domain["name"],
                                {"domain_id": domain["id"], "changes": _columns(call.data)}, 1)
    return call.accepted(task_id, f"Scheduled to change the domain {domain['name']}.")


async def delete_domain(call: Call) -> web.Response:
    name, purge = _domain(call)["name"], call.data["purge"]
    task_id = await call.submit("domain_delete", name, {"names": [name], "purge": purge}, 1)
    how = "for good" if purge else "with its sub-domains, mailboxes and aliases"
    return call.accepted(task_id, f"Scheduled to delete the domain {name} {how}.")


def check_restore(data: dict[str, Any], domain: Row) -> None:
    if domain["deleted_at"] is None:
        raise NotDeleted
    if domain["parent_deleted_at"] is not None:
        raise ParentDomainDeleted


async def restore_domain(call: Call) -> web.Response:
    name = _domain(call)["name"]
    task_id = await call.submit("domain_restore", name, {"name": name}, 1)
    return call.accepted(task_id, f"Scheduled to restore the domain {name}.")


async def bulk_delete(call: Call) -> web.Response:
    names = call.data["domains"]
    # a domain that is not the account's gets `Not found.` in the results, as one that does
    # not exist: nothing tells the two apart
    task_id = await call.submit("domain_bulk_delete", "", {"names": names}, len(names))
    return call.accepted(task_id, f"Successfully scheduled to delete these {len(names)} domains")
