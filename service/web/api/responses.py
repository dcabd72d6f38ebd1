"""marshmallow schemas of every response body, for the OpenAPI document (apidoc.py).

The handlers build their bodies as plain dicts; these schemas describe them, field for
field, in the seed API's spelling. marshmallow's default `unknown = RAISE` makes apispec
emit `additionalProperties: false`, so a renamed or extra field breaks the document's
contract (tests/integration/test_openapi.py checks real responses against it).
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from service.core.tasks import CREATED, ITEM_STATUSES, TASK_TYPES
from service.web.api.schemas import PG_BIGINT_MAX

SUCCESS = validate.OneOf(["success"])
DAY = validate.Regexp(r"^[0-9]{2}-[0-9]{2}-[0-9]{4}$")  # DD-MM-YYYY, UTC
DIGITS = validate.Regexp(r"^[0-9]+$")
TASK_ID = validate.Range(1, PG_BIGINT_MAX)


class Error(Schema):
    """The error contract: `reason` is one human sentence."""

    status = fields.String(required=True, validate=validate.OneOf(["error"]))
    reason = fields.String(required=True)


class ValidationFailed(Error):
    """A request that failed validation; `errors` names each bad field (`Params.quota_mb`)
    with its messages. Some 422s (a task type that does not match) have no `errors`. At
    most 100 fields are listed: past that, `error_count` says how many were invalid."""

    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))
    error_count = fields.Integer()


class DomainEntry(Schema):
    """One domain of the account. Sub-domains are listed as domains with a `parent`."""

    status = fields.String(required=True,
                           validate=validate.OneOf(["pending", "active", "verified", "failed"]))
    domain_quota = fields.String(required=True, validate=validate.Regexp(r"^[0-9]+(MB|GB)$"),
                                 metadata={"example": "10GB"})
    mailbox_count = fields.String(required=True, validate=DIGITS, metadata={"example": "15"})
    created_at = fields.String(required=True, validate=DAY, metadata={"example": "14-04-2026"})
    parent = fields.String(metadata={"description": "Sub-domains only: the parent domain."})


class DomainList(Schema):
    """The account's domains, by name."""

    user_id = fields.String(required=True, validate=DIGITS, metadata={"example": "123"})
    total_domain = fields.Integer(required=True, metadata={"example": 1})
    results = fields.Dict(keys=fields.String(), values=fields.Nested(DomainEntry),
                          required=True, metadata={"example": {"example.com": {
                              "status": "active", "domain_quota": "10GB",
                              "mailbox_count": "15", "created_at": "14-04-2026"}}})
    status = fields.String(required=True, validate=SUCCESS)


class DomainAccepted(Schema):
    """A domain or sub-domain request, accepted: poll `task_id` with get/task."""

    status = fields.String(required=True, validate=SUCCESS)
    domain = fields.String(required=True, metadata={"example": "example.com"})
    task_id = fields.Integer(required=True, validate=TASK_ID, metadata={"example": 41})


class MailboxAccepted(Schema):
    """A mailbox request, accepted: poll `task_id` with get/mailbox/single or bulk."""

    status = fields.String(required=True, validate=SUCCESS)
    task_id = fields.Integer(required=True, validate=TASK_ID, metadata={"example": 123})


class ImapCredentials(Schema):
    """Where the mailbox's owner logs in; never a password."""

    host = fields.String(required=True)
    port = fields.Integer(required=True, validate=validate.Range(1, 65535))
    username = fields.String(required=True)


class MailboxEntry(Schema):
    """One mailbox of the domain."""

    provisioning_status = fields.String(required=True,
                                        validate=validate.OneOf(["active", "inactive"]))
    mailbox_quota = fields.String(required=True, validate=validate.Regexp(r"^[0-9]+MB$"),
                                  metadata={"example": "1024MB"})
    imap_credentials = fields.Nested(
        ImapCredentials, required=True, allow_none=True,
        metadata={"description": "null when the installation has no IMAP host configured."},
    )
    created_at = fields.String(required=True, validate=DAY, metadata={"example": "14-04-2026"})


class MailboxList(Schema):
    """A domain's mailboxes, by address."""

    user_id = fields.String(required=True, validate=DIGITS, metadata={"example": "123"})
    domain = fields.String(required=True, metadata={"example": "example.com"})
    results = fields.Dict(keys=fields.String(), values=fields.Nested(MailboxEntry),
                          required=True, metadata={"example": {"john@example.com": {
                              "provisioning_status": "active", "mailbox_quota": "1024MB",
                              "imap_credentials": None, "created_at": "14-04-2026"}}})
    status = fields.String(required=True, validate=SUCCESS)


class ItemResult(Schema):
    """The outcome of one item (mailbox address or domain name) of a task."""

    status = fields.String(required=True, validate=validate.OneOf(ITEM_STATUSES))
    password = fields.String(
        allow_none=True,
        metadata={"description": "Only on a mailbox whose password was generated: the "
                  "password for a while after completion (a setting, default one hour), "
                  "then null."},
    )


def _results() -> fields.Dict:
    return fields.Dict(keys=fields.String(), values=fields.Nested(ItemResult), required=True,
                       metadata={"description": "Per-item outcomes, by address or domain.",
                                 "example": {"john@example.com":
                                             {"status": CREATED}}})


# the seed's pair: `Task_id` an integer, `task_id` the same id as a string
def _task_id_int() -> fields.Integer:
    return fields.Integer(required=True, validate=TASK_ID, metadata={"example": 123})


def _task_id_str() -> fields.String:
    return fields.String(required=True, validate=validate.Regexp(r"^[1-9][0-9]*$"),
                         metadata={"example": "123"})


class Progress(Schema):
    """How many of the task's items are done."""

    done = fields.Integer(required=True, validate=validate.Range(0), metadata={"example": 400})
    total = fields.Integer(required=True, validate=validate.Range(0),
                           metadata={"example": 1000})


class TaskFields(Schema):
    """What every task body holds, with the seed's `Task_id` (integer) and `task_id`
    (the same id as a string)."""

    Task_id = _task_id_int()
    total_email = fields.Integer(required=True, validate=validate.Range(0),
                                 metadata={"description": "Mailboxes asked for; 0 for "
                                           "domain and sub-domain tasks.", "example": 1})
    domain = fields.String(required=True, metadata={"example": "example.com"})
    results = _results()
    task_id = _task_id_str()


class TaskCompleted(TaskFields):
    """A task that ran; items that could not be made say so in `results`."""

    status = fields.String(required=True, validate=validate.OneOf(["completed"]))


class TaskInProgress(TaskFields):
    """A task not yet done: `results` holds what is done so far."""

    status = fields.String(required=True, validate=validate.OneOf(["queued", "processing"]))
    progress = fields.Nested(Progress, required=True)


class FailedTask(Error):
    """A task that could not be done as a whole; `reason` says why."""

    Task_id = _task_id_int()
    task_id = _task_id_str()
    domain = fields.String(required=True, metadata={"example": "example.com"})
    results = _results()


class Typed(Schema):
    """get/task adds the task's type."""

    type = fields.String(required=True, validate=validate.OneOf(TASK_TYPES))


class TypedTaskCompleted(TaskCompleted, Typed):
    """A task that ran (get/task)."""


class TypedTaskInProgress(TaskInProgress, Typed):
    """A task not yet done (get/task)."""


class TypedFailedTask(FailedTask, Typed):
    """A task that could not be done (get/task)."""
