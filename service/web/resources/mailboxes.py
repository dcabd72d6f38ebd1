"""The resource API's mailboxes: list, create, read, change, delete, restore, bulk actions.

A mailbox made here is a `mailbox_single` task, as create/mailbox/single makes it, so
either face polls it and lists what it made. Supplied passwords go through the one helper
both faces use (service/web/api/secrets.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.core import limits
from service.core.errors import (
    AddressIsAlias,
    DomainDeleted,
    Invalid,
    MailboxDeleted,
    MailboxExists,
    NotDeleted,
)
from service.core.names import domain_of
from service.core.store import Row
from service.core.tasks import LIMIT
from service.web.api.mailboxes import mailbox_item
from service.web.api.secrets import payload_secret
from service.web.call import Call

FLAGS = ("active", "force_pw_update", "tls_enforce_in", "tls_enforce_out")
# API field -> the mailbox column a change is stored in (passwords aside)
COLUMNS = {"name": "display_name", "quota": "quota_mb", **{flag: flag for flag in FLAGS}}
DEFAULT_FLAGS = {"active": True, "force_pw_update": False, "tls_enforce_in": False,
                 "tls_enforce_out": False}


def _found(call: Call) -> Row:
    assert call.found is not None  # the route's lookup
    return call.found


def _refuse(status: str | None, quota_given: bool) -> None:
    """A limit's item status as the 422 of the request that would break it; the body's
    `quota` named when it is what does not fit."""
    if status is None:
        return
    if quota_given and status != LIMIT:
        raise Invalid(f"quota: {status}", {"quota": [status]})
    raise Invalid(status)


def _quota(data: dict[str, Any], domain: Row) -> int:
    return data["quota"] or domain["default_mailbox_quota_mb"]


def check_create(data: dict[str, Any], domain: Row) -> None:
    """The address is free (a deleted mailbox keeps it until it is purged), and the
    mailbox fits the domain's limits."""
    if domain["deleted_at"] is not None:
        raise DomainDeleted
    if domain["taken"] == "mailbox":
        raise MailboxExists
    if domain["taken"] == "alias":
        raise AddressIsAlias
    _refuse(limits.mailbox_fits(
        quota_mb=_quota(data, domain), domain_quota_mb=domain["quota_mb"],
        max_mailbox_quota_mb=domain["max_mailbox_quota_mb"],
        quota_used_mb=domain["quota_used_mb"], max_mailboxes=domain["max_mailboxes"],
        mailbox_count=domain["mailbox_count"]), data["quota"] is not None)


async def create_mailbox(call: Call) -> web.Response:
    domain, data = _found(call), call.data
    flags = {flag: data[flag] for flag in FLAGS if data[flag] != DEFAULT_FLAGS[flag]}
    item = mailbox_item(data["local_part"], data["name"], _quota(data, domain),
                        payload_secret(call, data), **flags)
    task_id = await call.submit("mailbox_single", domain["name"],
                                {"domain_id": domain["id"], "items": [item]}, 1)
    address = f"{data['local_part']}@{domain['name']}"
    return call.accepted(task_id, f"Scheduled to add the mailbox {address}.")


def _live(mailbox: Row) -> None:
    if mailbox["deleted_at"] is not None:
        raise MailboxDeleted
    if mailbox["domain_deleted_at"] is not None:
        raise DomainDeleted


def check_change(data: dict[str, Any], mailbox: Row) -> None:
    """Not deleted; a new quota within the domain's maxquota and what its total has left."""
    _live(mailbox)
    if "quota" in data:
        _refuse(limits.mailbox_fits(
            quota_mb=data["quota"], domain_quota_mb=mailbox["domain_quota_mb"],
            max_mailbox_quota_mb=mailbox["max_mailbox_quota_mb"],
            quota_used_mb=mailbox["quota_used_mb"] - mailbox["quota_mb"]), True)


async def update_mailbox(call: Call) -> web.Response:
    mailbox, data = _found(call), call.data
    changes = {COLUMNS[field]: value for field, value in data.items() if field in COLUMNS}
    changes.update(payload_secret(call, data))
    task_id = await call.submit("mailbox_update", mailbox["domain"],
                                {"mailbox_id": mailbox["id"], "changes": changes}, 1)
    return call.accepted(task_id, f"Scheduled to change the mailbox {mailbox['address']}.")


async def delete_mailbox(call: Call) -> web.Response:
    mailbox, purge = _found(call), call.data["purge"]
    task_id = await call.submit("mailbox_delete", mailbox["domain"], {
        "action": "forget" if purge else "delete", "items": [mailbox["address"]]}, 1)
    how = " for good" if purge else ""
    return call.accepted(task_id, f"Scheduled to delete the mailbox {mailbox['address']}{how}.")


def check_restore(data: dict[str, Any], mailbox: Row) -> None:
    """Deleted, in a domain that is not, and back within the domain's limits."""
    if mailbox["deleted_at"] is None:
        raise NotDeleted
    if mailbox["domain_deleted_at"] is not None:
        raise DomainDeleted
    _refuse(limits.mailbox_fits(
        quota_mb=mailbox["quota_mb"], domain_quota_mb=mailbox["domain_quota_mb"],
        max_mailbox_quota_mb=mailbox["max_mailbox_quota_mb"],
        quota_used_mb=mailbox["quota_used_mb"], max_mailboxes=mailbox["max_mailboxes"],
        mailbox_count=mailbox["mailbox_count"]), False)


async def restore_mailbox(call: Call) -> web.Response:
    mailbox = _found(call)
    task_id = await call.submit("mailbox_restore", mailbox["domain"],
                                {"action": "restore", "items": [mailbox["address"]]}, 1)
    return call.accepted(task_id, f"Scheduled to restore the mailbox {mailbox['address']}.")


async def bulk(call: Call) -> web.Response:
    action, emails = call.data["action"], call.data["emails"]
    # the task's domain when every address shares one; an address that is not the
    # account's gets `Not found.` in the results
    domains = {domain_of(email) for email in emails}
    task_id = await call.submit("mailbox_bulk_action", domains.pop() if len(domains) == 1
                                else "", call.within_scope({"action": action, "items": emails}),
                                len(emails))
    return call.accepted(task_id, f"Scheduled to {action} these {len(emails)} mailboxes.")
