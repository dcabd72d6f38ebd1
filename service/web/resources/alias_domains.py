"""The resource API's alias domains: mail to x@alias goes to x@target. Hosted once per
installation, like a domain (and never as one); deleted for good at once."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.core.errors import AliasDomainExists, DomainDeleted
from service.core.store import Row
from service.web.call import Call


def _found(call: Call) -> Row:
    assert call.found is not None  # the route's lookup
    return call.found


def check_create(data: dict[str, Any], target: Row) -> None:
    """The target is live; the name is hosted by no one (the target itself included)."""
    if target["deleted_at"] is not None:
        raise DomainDeleted
    if target["hosted"]:
        raise AliasDomainExists


async def create_alias_domain(call: Call) -> web.Response:
    target, data = _found(call), call.data
    task_id = await call.submit("alias_domain", target["name"], {
        "name": data["alias_domain"], "target_id": target["id"], "active": data["active"]}, 1)
    return call.accepted(task_id, f"Scheduled to add the alias domain {data['alias_domain']} "
                                  f"of {target['name']}.")


async def update_alias_domain(call: Call) -> web.Response:
    alias_domain = _found(call)
    task_id = await call.submit("alias_domain_update", alias_domain["target"], {
        "alias_domain_id": alias_domain["id"], "active": call.data["active"]}, 1)
    return call.accepted(task_id, f"Scheduled to change the alias domain {alias_domain['name']}.")


async def delete_alias_domain(call: Call) -> web.Response:
    alias_domain = _found(call)
    task_id = await call.submit("alias_domain_delete", alias_domain["target"],
                                {"alias_domain_id": alias_domain["id"]}, 1)
    return call.accepted(task_id, f"Scheduled to delete the alias domain {alias_domain['name']}.")
