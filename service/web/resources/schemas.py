"""marshmallow schemas of the resource API's requests (docs: api-resources.md).

Field names are the contract's (seed 003's: `defquota`, `maxquota`, `local_part`, ...).
Unknown body fields and unknown query parameters are both refused with 422: a list that
ignored `filter[domian]` would answer with everything. There is no `key` field: the
resource API takes its key only as `Authorization: Bearer`.
"""

from __future__ import annotations

from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from service.core import dkim, names
from service.core.paging import Cursor
from service.core.tasks import ACTIONS, STATUSES, TASK_TYPES
from service.web.api.schemas import (
    DEFAULT_DOMAIN_QUOTA_MB,
    DEFAULT_MAILBOX_QUOTA_MB,
    DEFAULT_MAX_ALIASES,
    DEFAULT_MAX_MAILBOXES,
    PG_BIGINT_MAX,
    JsonBool,
    JsonInt,
    Limits,
    MailboxParams,
    Name,
    Text,
    password_field,
    password_hash_field,
    wait_field,
)

MAX_PAGE_SIZE = 1000
BULK_DOMAINS = 100  # Hanami's batch delete, api-resources.md
BULK_ALIASES = 25  # addy.io's limit
MAX_GOTO = 50
POSTMASTER = ("Where mail to postmaster@ and abuse@ of the domain goes, unless an alias or "
              "a mailbox has that name; null: the domain's first mailbox.")


def path_id(value: str) -> int:
    """An id in a path (its route's pattern holds only digits); ValueError when it is
    none a row could have."""
    number = int(value)
    if not 0 < number <= PG_BIGINT_MAX:
        raise ValueError("not an id")
    return number


class BoundedList(fields.List):
    """A list whose length is checked before its items are: a list far too long is refused
    without validating what is in it."""

    def __init__(self, inner: fields.Field, high: int | str, **kwargs: Any) -> None:
        super().__init__(inner, **kwargs)
        # an int, or the name of the schema's setting (bulk_max)
        self.high = high

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        high = self.high if isinstance(self.high, int) else getattr(self.parent, self.high)
        if isinstance(value, list) and not 1 <= len(value) <= high:
            raise ValidationError(f"Give 1 to {high} items.")
        items = super()._deserialize(value, attr, data, **kwargs)
        if len(set(items)) != len(items):
            raise ValidationError("Items must not repeat.")
        return items


class Body(Limits):
    """A resource API body: no `key` field, unknown fields refused."""


class QueryBool(fields.Boolean):
    """`true` or `false` in a query string, and nothing else."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(truthy={"true"}, falsy={"false"}, **kwargs)


class NoQuery(Schema):
    """A request that takes no query parameters."""

    class Meta:
        unknown = RAISE


class TaskWaitQuery(NoQuery):
    """GET /tasks/{task_id}: only `wait` (long polling)."""

    wait = wait_field()


class NewWebhook(Body):
    url = Text(required=True, validate=validate.Length(min=1, max=2000))


class Empty(Body):
    """A body with nothing in it (`{}`, or no body at all): a restore names all it needs
    in its path."""


def _need_one(data: dict[str, Any]) -> None:
    if not data:
        raise ValidationError("Give at least one field to change.")


# domains


def _quotas_fit(data: dict[str, Any]) -> None:
    """defquota <= maxquota <= quota."""
    if data["defquota"] > data["maxquota"]:
        raise ValidationError("Cannot be larger than maxquota.", "defquota")
    if data["maxquota"] > data["quota"]:
        raise ValidationError("Cannot be larger than quota.", "maxquota")


class NewDomain(Body):
    domain = Name(names.domain, required=True)
    active = JsonBool(load_default=True)
    aliases = JsonInt(low=0, load_default=DEFAULT_MAX_ALIASES)
    mailboxes = JsonInt(load_default=DEFAULT_MAX_MAILBOXES)
    defquota = JsonInt(load_default=DEFAULT_MAILBOX_QUOTA_MB)
    # default: the domain's total, so one mailbox may take it all (as the MailAPI's may)
    maxquota = JsonInt(load_default=None)
    quota = JsonInt(load_default=DEFAULT_DOMAIN_QUOTA_MB)
    backupmx = JsonBool(load_default=False)
    description = Text(validate=validate.Length(max=255), load_default=None, allow_none=True)
    postmaster = Name(names.destination, load_default=None, allow_none=True,
                      metadata={"description": POSTMASTER})

    @post_load
    def _limits(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if data["maxquota"] is None:
            data["maxquota"] = data["quota"]
        _quotas_fit(data)
        return data


class DomainChange(Body):
    active = JsonBool()
    aliases = JsonInt(low=0)
    mailboxes = JsonInt()
    defquota = JsonInt()
    maxquota = JsonInt()
    quota = JsonInt()
    backupmx = JsonBool()
    description = Text(validate=validate.Length(max=255), allow_none=True)
    postmaster = Name(names.destination, allow_none=True, metadata={"description": POSTMASTER})

    @validates_schema
    def _something(self, data: dict[str, Any], **kwargs: Any) -> None:
        _need_one(data)


class DomainBulkDelete(Body):
    domains = BoundedList(Name(names.domain), BULK_DOMAINS, required=True)


class DkimRotate(Body):
    """A rotation's new key: `rsa` (2048 bits) or `ed25519`; default MAILPROV_DKIM_ALGORITHM."""

    algorithm = Text(validate=validate.OneOf(dkim.ALGORITHMS),
                     metadata={"example": "rsa"})


class Purge(NoQuery):
    """`?purge=true`: delete for good at once, not softly."""

    purge = QueryBool(load_default=False)


# mailboxes


def _flag() -> JsonBool:
    return JsonBool(load_default=False)


class NewMailbox(Body):
    domain = Name(names.domain, required=True)
    local_part = Name(names.local_part, required=True)
    name = Text(validate=validate.Length(max=255), load_default=None, allow_none=True)
    password = password_field()
    password_hash = password_hash_field()
    # default: the domain's defquota
    quota = JsonInt(load_default=None)
    active = JsonBool(load_default=True)
    force_pw_update = _flag()
    tls_enforce_in = _flag()
    tls_enforce_out = _flag()

    _one_secret = MailboxParams._one_secret


class MailboxChange(Body):
    name = Text(validate=validate.Length(max=255), allow_none=True)
    password = password_field()
    password_hash = password_hash_field()
    quota = JsonInt()
    active = JsonBool()
    force_pw_update = JsonBool()
    tls_enforce_in = JsonBool()
    tls_enforce_out = JsonBool()

    _one_secret = MailboxParams._one_secret

    @validates_schema
    def _something(self, data: dict[str, Any], **kwargs: Any) -> None:
        _need_one(data)


class MailboxBulk(Body):
    action = Text(required=True, validate=validate.OneOf(ACTIONS))
    emails = BoundedList(Name(names.address), "bulk_max", required=True)


# aliases


def _goto(**kwargs: Any) -> BoundedList:
    return BoundedList(Name(names.destination), MAX_GOTO, **kwargs)


class NewAlias(Body):
    address = Name(names.alias_address, required=True)
    goto = _goto(required=True)
    active = JsonBool(load_default=True)

    @validates_schema
    def _no_loop(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["address"] in data["goto"]:
            raise ValidationError("An alias cannot send mail to itself.", "goto")


class AliasChange(Body):
    goto = _goto()
    active = JsonBool()

    @validates_schema
    def _something(self, data: dict[str, Any], **kwargs: Any) -> None:
        _need_one(data)


class AliasBulk(Body):
    action = Text(required=True, validate=validate.OneOf(ACTIONS))
    ids = BoundedList(fields.Integer(strict=True, validate=validate.Range(1, PG_BIGINT_MAX)),
                      BULK_ALIASES, required=True)


# alias domains


class NewAliasDomain(Body):
    alias_domain = Name(names.domain, required=True)
    target_domain = Name(names.domain, required=True)
    active = JsonBool(load_default=True)


class AliasDomainChange(Body):
    active = JsonBool(required=True)


# pages


class PageQuery(NoQuery):
    """page[number], page[size], page[cursor] (from a `next` or `prev` link) and `sort`:
    the sorts of a listing are its `SORTS`, the first of them its default."""

    SORTS: tuple[str, ...] = ()

    page_number = fields.Integer(data_key="page[number]", load_default=1,
                                 validate=validate.Range(1, 10**9))
    page_size = fields.Integer(data_key="page[size]", load_default=100,
                               validate=validate.Range(1, MAX_PAGE_SIZE))
    page_cursor = fields.String(data_key="page[cursor]", load_default=None)
    sort = fields.String()

    @validates_schema
    def _sort_and_cursor(self, data: dict[str, Any], **kwargs: Any) -> None:
        sort = data.setdefault("sort", self.SORTS[0])
        allowed = [s for field in self.SORTS for s in (field.lstrip("-"), "-" + field.lstrip("-"))]
        if sort not in allowed:
            raise ValidationError(f"Sort by one of: {', '.join(allowed)}.", "sort")
        if data["page_cursor"] is not None:
            try:
                cursor = Cursor.decode(data["page_cursor"])
            except ValueError as exc:
                raise ValidationError(str(exc), "page[cursor]") from None
            if cursor.sort != sort:
                raise ValidationError("This cursor belongs to another sort.", "page[cursor]")
            data["page_cursor"] = cursor


def _search() -> fields.Field:
    return Text(data_key="filter[search]", validate=validate.Length(1, 255))


def _in_domain() -> fields.Field:
    return Name(names.domain, data_key="filter[domain]")


def _active() -> fields.Field:
    return QueryBool(data_key="filter[active]")


def _deleted() -> fields.Field:
    # addy.io's: leave deleted rows out (the default), list them `with` the others, or `only`
    return Text(data_key="filter[deleted]", validate=validate.OneOf(["with", "only"]))


class DomainsQuery(PageQuery):
    SORTS = ("domain", "created_at")
    search = _search()
    active = _active()
    deleted = _deleted()


class MailboxesQuery(PageQuery):
    SORTS = ("email", "created_at")
    domain = _in_domain()
    search = _search()
    active = _active()
    deleted = _deleted()


class AliasesQuery(PageQuery):
    SORTS = ("address", "created_at")
    domain = _in_domain()
    search = _search()
    active = _active()
    deleted = _deleted()


class AliasDomainsQuery(PageQuery):
    SORTS = ("alias_domain", "created_at")
    domain = _in_domain()
    search = _search()
    active = _active()


class TasksQuery(PageQuery):
    # newest first unless asked otherwise: what a client polling its work looks for
    SORTS = ("-created_at",)
    status = Text(data_key="filter[status]", validate=validate.OneOf(STATUSES))
    type = Text(data_key="filter[type]", validate=validate.OneOf(TASK_TYPES))
