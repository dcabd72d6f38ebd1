"""marshmallow schemas of the resource API's response bodies, for the OpenAPI document.

As the MailAPI's (service/web/api/responses.py), each is strict (`additionalProperties:
false`), so tests/integration/test_openapi.py fails on a renamed or extra field.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from service.core.tasks import STATUSES, TASK_TYPES
from service.web.api.responses import TASK_ID, ItemResult, Progress

TIME = validate.Regexp(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")
MB = validate.Range(0)


def _time(**kwargs: Any) -> fields.String:
    return fields.String(required=True, validate=TIME,
                         metadata={"example": "2026-04-14T09:30:00Z"}, **kwargs)


def _count() -> fields.Integer:
    return fields.Integer(required=True, validate=validate.Range(0))


class ResourceError(Schema):
    """The resource API's error: `msg` is one sentence."""

    type = fields.String(required=True, validate=validate.OneOf(["error"]))
    msg = fields.String(required=True)


class ResourceValidationFailed(ResourceError):
    """A request that failed validation, or would break a limit; `errors` names each bad
    field with its messages, where there is one."""

    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))


class Accepted(Schema):
    """A write, recorded as a task: poll it at `Location` (GET /api/v1/tasks/{id}); the
    change is visible once the task is `completed`."""

    type = fields.String(required=True, validate=validate.OneOf(["success"]))
    msg = fields.String(required=True)
    task_id = fields.Integer(required=True, validate=TASK_ID, metadata={"example": 124})


class AliasAccepted(Accepted):
    """A new alias, recorded: `id` is its id once its task has made it."""

    id = fields.Integer(required=True, validate=TASK_ID, metadata={"example": 7})


class Domain(Schema):
    """A domain, with seed 003's fields (quotas in MB)."""

    domain = fields.String(required=True, metadata={"example": "example.com"})
    active = fields.Boolean(required=True)
    aliases = _count()
    mailboxes = _count()
    defquota = _count()
    maxquota = _count()
    quota = _count()
    backupmx = fields.Boolean(required=True)
    description = fields.String(required=True, allow_none=True)
    postmaster = fields.String(required=True, allow_none=True, metadata={
        "description": "Where postmaster@ and abuse@ go; null: the domain's first mailbox."})
    status = fields.String(required=True, validate=validate.OneOf(
        ["pending", "active", "verified", "failed", "deleted"]))
    mailbox_count = _count()
    alias_count = _count()
    quota_used = fields.Integer(required=True, validate=MB,
                                metadata={"description": "MB given to its mailboxes."})
    parent = fields.String(required=True, allow_none=True,
                           metadata={"description": "A sub-domain's parent domain."})
    created_at = _time()
    updated_at = _time()
    deleted_at = _time(allow_none=True)


class DnsRecord(Schema):
    """One record to publish, and what the last check found of it."""

    type = fields.String(required=True, validate=validate.OneOf(["MX", "TXT", "CNAME"]))
    name = fields.String(required=True, metadata={
        "description": "The full owner name.", "example": "example.com"})
    value = fields.String(required=True, metadata={
        "description": "As a zone file writes it, TXT values unquoted.",
        "example": "v=spf1 mx -all"})
    role = fields.String(required=True, validate=validate.OneOf(
        ["mx", "spf", "dkim", "dmarc", "autoconfig", "autodiscover"]))
    required = fields.Boolean(required=True, metadata={
        "description": "Whether it must hold for the domain to be `verified`."})
    verified = fields.Boolean(required=True)
    state = fields.String(required=True, validate=validate.OneOf(
        ["verified", "missing", "wrong", "error", "unchecked"]), metadata={
        "description": "What the last check found: as expected, absent, another value "
                       "(see `found`), no answer from DNS, or not checked yet."})
    found = fields.List(fields.String(), required=True, metadata={
        "description": "What DNS served at the name instead, when `wrong`."})
    # a DKIM record's fields, as CloudMailin's sending domains name them
    dkim_selector = fields.String()
    dkim_domain = fields.String()
    dkim_public_record = fields.String()
    dkim_verified = fields.Boolean()
    dkim_algorithm = fields.String(validate=validate.OneOf(["rsa", "ed25519"]))
    retire_at = fields.String(validate=TIME, allow_none=True, metadata={
        "description": "A rotated-out key's record: published until then, then removed."})


class DomainDns(Schema):
    """Every record a domain must publish, and the last check's findings."""

    domain = fields.String(required=True, metadata={"example": "example.com"})
    status = fields.String(required=True, validate=validate.OneOf(
        ["pending", "active", "verified", "failed", "deleted"]))
    records = fields.List(fields.Nested(DnsRecord), required=True)
    mx_verified = fields.Boolean(required=True)
    spf_verified = fields.Boolean(required=True)
    dkim_verified = fields.Boolean(required=True, metadata={
        "description": "The signing key's record holds."})
    checked_at = _time(allow_none=True)
    lost_at = fields.String(required=True, validate=TIME, allow_none=True, metadata={
        "description": "When a recheck found the records of this verified domain gone "
                       "(it went back to `active`); null once verified again."})


class Mailbox(Schema):
    """A mailbox; never its password or hash."""

    email = fields.String(required=True, metadata={"example": "john@example.com"})
    domain = fields.String(required=True)
    local_part = fields.String(required=True)
    name = fields.String(required=True, allow_none=True)
    quota = _count()
    active = fields.Boolean(required=True)
    force_pw_update = fields.Boolean(required=True)
    tls_enforce_in = fields.Boolean(required=True)
    tls_enforce_out = fields.Boolean(required=True)
    status = fields.String(required=True,
                           validate=validate.OneOf(["active", "inactive", "deleted"]))
    created_at = _time()
    updated_at = _time()
    deleted_at = _time(allow_none=True)


class Alias(Schema):
    """An alias: mail to `address` goes to every address of `goto`."""

    id = fields.Integer(required=True, validate=TASK_ID)
    address = fields.String(required=True, metadata={
        "example": "sales@example.com", "description": "`@example.com`: the catch-all."})
    goto = fields.List(fields.String(), required=True, validate=validate.Length(1, 50))
    active = fields.Boolean(required=True)
    domain = fields.String(required=True)
    status = fields.String(required=True,
                           validate=validate.OneOf(["active", "inactive", "deleted"]))
    created_at = _time()
    updated_at = _time()
    deleted_at = _time(allow_none=True)


class AliasDomain(Schema):
    """An alias domain: mail to x@alias_domain goes to x@target_domain."""

    alias_domain = fields.String(required=True)
    target_domain = fields.String(required=True)
    active = fields.Boolean(required=True)
    created_at = _time()
    updated_at = _time()


class TaskItem(ItemResult):
    """An item's outcome as the resource API shows it: the MailAPI's, and the selector of
    a DKIM key the task made."""

    dkim_selector = fields.String(
        metadata={"description": "Only on a domain whose DKIM key the task made (a new "
                  "domain, a sub-domain, a rotation): the new key's selector."})

class Task(Schema):
    """A task of either face. `results` are per item (an address, a domain, an alias id)."""

    id = fields.Integer(required=True, validate=TASK_ID)
    type = fields.String(required=True, validate=validate.OneOf(TASK_TYPES))
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    domain = fields.String(required=True)
    progress = fields.Nested(Progress, required=True)
    results = fields.Dict(keys=fields.String(), values=fields.Nested(TaskItem), required=True)
    error = fields.String(required=True, allow_none=True)
    created_at = _time()
    started_at = _time(allow_none=True)
    finished_at = _time(allow_none=True)


class PageMeta(Schema):
    current_page = fields.Integer(required=True, validate=validate.Range(1))
    last_page = fields.Integer(required=True, validate=validate.Range(1))
    per_page = fields.Integer(required=True, validate=validate.Range(1, 1000))
    total = _count()


class PageLinks(Schema):
    """`prev` and `next` carry a cursor (`page[cursor]`): following them costs the same
    however deep the page."""

    first = fields.String(required=True)
    last = fields.String(required=True)
    prev = fields.String(required=True, allow_none=True)
    next = fields.String(required=True, allow_none=True)


def _page(item: type[Schema], what: str) -> type[Schema]:
    return type(f"{item.__name__}Page", (Schema,), {
        "__doc__": f"A page of {what}.",
        "data": fields.List(fields.Nested(item), required=True),
        "meta": fields.Nested(PageMeta, required=True),
        "links": fields.Nested(PageLinks, required=True),
    })


DomainPage = _page(Domain, "domains")
MailboxPage = _page(Mailbox, "mailboxes")
AliasPage = _page(Alias, "aliases")
AliasDomainPage = _page(AliasDomain, "alias domains")
TaskPage = _page(Task, "tasks")

# leaves first, as apidoc.RESPONSE_SCHEMAS wants them
SCHEMAS: list[type[Schema]] = [
    ResourceError, ResourceValidationFailed, Accepted, AliasAccepted, Domain, Mailbox, Alias,
    AliasDomain, Task, PageMeta, PageLinks, DomainPage, MailboxPage, AliasPage,
    AliasDomainPage, TaskPage,
]


class Webhook(Schema):
    """An endpoint told of every task the account finishes."""

    id = fields.Integer(required=True)
    url = fields.String(required=True)
    created_at = _time()


class RegisteredWebhook(Schema):
    """A registered endpoint, with the secret its deliveries are signed with: shown now,
    and never again."""

    id = fields.Integer(required=True)
    url = fields.String(required=True)
    secret = fields.String(required=True)


class WebhookList(Schema):
    webhooks = fields.List(fields.Nested(Webhook), required=True)


class WebhookRemoved(Schema):
    type = fields.String(required=True, validate=validate.OneOf(["success"]))
    msg = fields.String(required=True)


class Attempt(Schema):
    at = _time()
    status = fields.Integer(required=True, allow_none=True,
                            metadata={"description": "The endpoint's HTTP status; null when "
                                                     "it did not answer."})
    error = fields.String(required=True, allow_none=True)


class Delivery(Schema):
    id = fields.Integer(required=True)
    task_id = fields.Integer(required=True)
    state = fields.String(required=True,
                          validate=validate.OneOf(["pending", "delivered", "failed"]))
    attempts = fields.List(fields.Nested(Attempt), required=True)
    created_at = _time()
    delivered_at = _time(allow_none=True)
    next_attempt_at = _time(allow_none=True)


class DeliveryList(Schema):
    deliveries = fields.List(fields.Nested(Delivery), required=True,
                             metadata={"description": "The latest 100, newest first."})
