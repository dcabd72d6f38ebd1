"""marshmallow schemas for every request, and `load`, the one way handlers read input.

Field names are the seed API's own (`Domain`, `Email_fullname`, `single_bulk`, ...).
Unknown body fields are refused (they are almost always typos such as `Domian`); unknown
query parameters are ignored (cache busters and the like are harmless there).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates_schema,
)

from service.core import names
from service.core.errors import Invalid

PG_INT_MAX = 2**31 - 1
PG_BIGINT_MAX = 2**63 - 1

# A domain made with the defaults holds its default number of mailboxes at the default
# mailbox quota: 100 x 1024 MB = 102400 MB. (The seed's 10240 MB held only ten of them, so
# the eleventh default mailbox failed with `Domain quota exceeded.`.) Aliases: mailcow's.
DEFAULT_DOMAIN_QUOTA_MB = 102400
DEFAULT_MAX_MAILBOXES = 100
DEFAULT_MAILBOX_QUOTA_MB = 1024
DEFAULT_MAX_ALIASES = 400

# Dovecot password schemes that are hashes; plaintext ones ({PLAIN}, {CLEAR}) are refused
# because only hashes may be stored.
HASH_SCHEMES = {
    "ARGON2ID", "ARGON2I", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "MD5-CRYPT", "CRYPT",
    "PBKDF2", "SCRAM-SHA-1", "SCRAM-SHA-256", "SSHA512", "SSHA256", "SSHA", "SHA512",
    "SHA256", "SHA", "SMD5", "MD5", "PLAIN-MD5", "LDAP-MD5", "CRAM-MD5", "DIGEST-MD5",
}
PASSWORD_HASH = re.compile(r"\{([A-Z0-9-]+)(?:\.(?:B64|BASE64|HEX))?\}[\x21-\x7e]{1,500}")


# control characters (Unicode category Cc) and lone surrogates, which UTF-8 cannot encode;
# one regex scan is far cheaper than a per-character category lookup on a 1000-item bulk
UNSTORABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class Text(fields.String):
    """A string that Postgres can store and a person can read: no control characters,
    no lone surrogates (they cannot be encoded as UTF-8)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        bad = UNSTORABLE.search(text)
        if bad:
            raise ValidationError("Not valid Unicode text." if bad.group() >= "\ud800"
                                  else "Control characters are not allowed.")
        return text


class Name(Text):
    """A Text normalised by one of service.names' functions."""

    def __init__(self, normalise: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.normalise = normalise

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        try:
            return self.normalise(super()._deserialize(value, attr, data, **kwargs))
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class JsonBool(fields.Boolean):
    """A boolean in a JSON body: `true` or `false`, not `1`, `"yes"` or `"true"`."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("Not a valid boolean: give true or false.")
        return value


class JsonInt(fields.Integer):
    """An integer in a JSON body: `5`, not `"5"`, `5.5` or `true`."""

    def __init__(self, low: int = 1, high: int = PG_INT_MAX, **kwargs: Any) -> None:
        super().__init__(strict=True, validate=validate.Range(low, high), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise ValidationError("Not a valid integer.")
        return super()._deserialize(value, attr, data, **kwargs)


def password_field() -> Text:
    return Text(validate=validate.Length(8, 256))


def password_hash_field() -> Text:
    return Text(validate=_check_password_hash)


def _check_password_hash(value: str) -> None:
    match = PASSWORD_HASH.fullmatch(value)
    if not match or match.group(1) not in HASH_SCHEMES:
        raise ValidationError(
            "Must be a Dovecot password hash with a hashing scheme, such as {ARGON2ID}$argon2id$..."
        )


class Limits(Schema):
    """A request schema that checks list lengths against the settings (the app builds it
    with them)."""

    class Meta:
        unknown = RAISE

    # lists checked for length before any of their items is validated (a 1 MiB list of
    # bad items would otherwise cost seconds and answer megabytes of errors), as
    # (dotted path, the setting that bounds it, the message, with {limit})
    LIST_LIMITS: tuple[tuple[str, str, str], ...] = ()

    def __init__(self, *, bulk_max: int = 1000, sub_domains_max: int = 10) -> None:
        super().__init__()
        self.bulk_max = bulk_max
        self.sub_domains_max = sub_domains_max

    @pre_load
    def _list_lengths_first(self, data: Any, **kwargs: Any) -> Any:
        for path, limit_name, message in self.LIST_LIMITS:
            value = data
            for part in path.split("."):
                value = value.get(part) if isinstance(value, Mapping) else None
            limit = getattr(self, limit_name)
            if isinstance(value, list) and len(value) > limit:
                raise ValidationError(message.format(limit=limit), path)
        return data


class BodySchema(Limits):
    # read by auth before validation; declared so it is not an unknown field
    key = fields.Raw(load_only=True)


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class DomainParams(StrictSchema):
    quota_mb = JsonInt(load_default=DEFAULT_DOMAIN_QUOTA_MB)
    max_mailboxes = JsonInt(load_default=DEFAULT_MAX_MAILBOXES)
    default_mailbox_quota_mb = JsonInt(load_default=DEFAULT_MAILBOX_QUOTA_MB)
    description = Text(validate=validate.Length(max=255), load_default=None, allow_none=True)

    @validates_schema
    def _default_fits(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["default_mailbox_quota_mb"] > data["quota_mb"]:
            raise ValidationError("Cannot be larger than quota_mb.", "default_mailbox_quota_mb")


class CreateDomain(BodySchema):
    Domain = Name(names.domain, required=True)
    Params = fields.Nested(DomainParams, load_default=lambda: DomainParams().load({}))


class SubDomainParams(StrictSchema):
    sub_domains = fields.List(Name(names.label), required=True)


SUB_DOMAINS_MESSAGE = "Maximum {limit} sub-domains are allowed per request."
MAILBOXES_MESSAGE = "Give 1 to {limit} mailboxes."


class CreateSubDomain(BodySchema):
    Domain = Name(names.domain, required=True)
    Params = fields.Nested(SubDomainParams, required=True)
    LIST_LIMITS = (("Params.sub_domains", "sub_domains_max", SUB_DOMAINS_MESSAGE),)

    @validates_schema
    def _labels(self, data: dict[str, Any], **kwargs: Any) -> None:
        labels = data["Params"]["sub_domains"]
        if not labels:
            raise ValidationError("At least one sub-domain is required.", "Params.sub_domains")
        if len(labels) > self.sub_domains_max:
            raise ValidationError(SUB_DOMAINS_MESSAGE.format(limit=self.sub_domains_max),
                                  "Params.sub_domains")
        if len(set(labels)) != len(labels):
            raise ValidationError("Sub-domains must not repeat.", "Params.sub_domains")


class MailboxParams(StrictSchema):
    display_name = Text(validate=validate.Length(max=255), load_default=None, allow_none=True)
    quota_mb = JsonInt(load_default=None, allow_none=True)
    password = password_field()
    password_hash = password_hash_field()

    @validates_schema
    def _one_secret(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "password" in data and "password_hash" in data:
            raise ValidationError("Give password or password_hash, not both.", "password_hash")


def _mailbox_target(data: dict[str, Any], kind: str) -> None:
    if data["single_bulk"] != kind:
        raise ValidationError(f"Must be `{kind}`.", "single_bulk")


class CreateMailboxSingle(BodySchema):
    Email_fullname = Text(required=True)
    single_bulk = Text(required=True)
    Domain = Name(names.domain, required=True)
    Params = fields.Nested(MailboxParams, required=True)

    @staticmethod
    def _address(data: dict[str, Any]) -> tuple[str, str]:
        """(local part, domain) of Email_fullname, which may be a bare local part."""
        local, at, domain = data["Email_fullname"].rpartition("@")
        return (local, names.domain(domain)) if at else (domain, data["Domain"])

    @validates_schema
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        _mailbox_target(data, "single")
        try:
            local, domain = self._address(data)
            names.local_part(local)
        except ValueError as exc:
            raise ValidationError(str(exc), "Email_fullname") from None
        if domain != data["Domain"]:
            raise ValidationError("The address's domain must equal Domain.", "Email_fullname")

    @post_load
    def _local_part(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data["local_part"] = names.local_part(self._address(data)[0])
        return data


class BulkItem(StrictSchema):
    local_part = Name(names.local_part, required=True)
    display_name = Text(validate=validate.Length(max=255), load_default=None, allow_none=True)
    quota_mb = JsonInt(load_default=None, allow_none=True)
    password = password_field()
    password_hash = password_hash_field()

    _one_secret = MailboxParams._one_secret


class BulkParams(MailboxParams):
    count = JsonInt(low=1)
    start = JsonInt(low=0, high=10**9, load_default=1)
    mailboxes = fields.List(fields.Nested(BulkItem))


class CreateMailboxBulk(BodySchema):
    Email_fullname = Text(required=True, validate=validate.Length(max=255))
    single_bulk = Text(required=True)
    Domain = Name(names.domain, required=True)
    Params = fields.Nested(BulkParams, required=True)
    LIST_LIMITS = (("Params.mailboxes", "bulk_max", MAILBOXES_MESSAGE),)

    @validates_schema
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        _mailbox_target(data, "bulk")
        params = data["Params"]
        if ("count" in params) == ("mailboxes" in params):
            raise ValidationError("Give either count (with a prefix) or mailboxes.", "Params")
        if "count" in params:
            if params["count"] > self.bulk_max:
                raise ValidationError(f"At most {self.bulk_max} mailboxes per request.",
                                      "Params.count")
            last = params["start"] + params["count"] - 1
            for number in (params["start"], last):
                try:
                    names.local_part(f"{data['Email_fullname']}{number}")
                except ValueError as exc:
                    raise ValidationError(str(exc), "Email_fullname") from None
            return
        items = params["mailboxes"]
        if not 1 <= len(items) <= self.bulk_max:
            raise ValidationError(MAILBOXES_MESSAGE.format(limit=self.bulk_max),
                                  "Params.mailboxes")
        parts = [item["local_part"] for item in items]
        if len(set(parts)) != len(parts):
            raise ValidationError("Mailboxes must not repeat.", "Params.mailboxes")


class CallerQuery(Schema):
    class Meta:
        unknown = EXCLUDE

    caller_id = fields.Integer(required=True, validate=validate.Range(0, PG_BIGINT_MAX))


class ListMailboxQuery(CallerQuery):
    domain = Name(names.domain, required=True)


# the longest a poll may wait for its task to move (long polling, service/core/waiters.py)
WAIT_MAX_S = 60


def wait_field() -> fields.Integer:
    """`wait`: seconds a poll may hold until its task finishes or its progress moves."""
    return fields.Integer(load_default=0, validate=validate.Range(0, WAIT_MAX_S), metadata={
        "description": f"Long polling: hold the answer up to this many seconds (0 to "
                       f"{WAIT_MAX_S}) until the task finishes or its `progress.done` "
                       "moves; then answer as usual."})


class TaskQuery(Schema):
    class Meta:
        unknown = EXCLUDE

    task_id = fields.Integer(required=True, validate=validate.Range(1, PG_BIGINT_MAX))
    wait = wait_field()


def domain_paths(schema: Schema) -> list[tuple[str, ...]]:
    """Where data validated by `schema` names a domain: the paths of its fields that
    normalise a domain name, through nested schemas and lists (`*`: each item). A key
    limited to some domains is checked against every name found there (policy.py), so
    a route added later is checked as soon as its schema has such a field."""
    return [(name, *rest) for name, field in schema.fields.items()
            for rest in _domain_paths(field)]


def _domain_paths(field: fields.Field) -> list[tuple[str, ...]]:
    if isinstance(field, Name):
        return [()] if field.normalise is names.domain else []
    if isinstance(field, fields.Nested) and isinstance(field.schema, Schema):
        return domain_paths(field.schema)
    if isinstance(field, fields.List):
        return [("*", *rest) for rest in _domain_paths(field.inner)]
    return []


def values_at(data: Any, path: tuple[str, ...]) -> list[Any]:
    """The values found at `path` in validated data (`*`: each item of a list)."""
    if not path:
        return [data]
    head, rest = path[0], path[1:]
    if head == "*":
        return [v for item in data for v in values_at(item, rest)] if isinstance(
            data, list) else []
    if isinstance(data, Mapping) and head in data:
        return values_at(data[head], rest)
    return []


def flatten(messages: Any, path: str = "") -> dict[str, list[str]]:
    """marshmallow's nested messages as {"Params.quota_mb": ["..."]}."""
    if isinstance(messages, Mapping):
        flat: dict[str, list[str]] = {}
        for key, value in messages.items():
            name = path if key == "_schema" else (f"{path}.{key}" if path else str(key))
            for field, texts in flatten(value, name).items():
                flat.setdefault(field, []).extend(texts)
        return flat
    if isinstance(messages, list):
        return {path or "body": [str(m) for m in messages]}
    return {path or "body": [str(messages)]}


# at most this many fields' messages in one answer (a bulk can have 1,000 bad items)
MAX_ERROR_FIELDS = 100


def load(schema: Schema, data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate `data`; raise Invalid (422) with the messages of each field, of at most
    MAX_ERROR_FIELDS fields: past that, `error_count` says how many fields were bad."""
    try:
        return schema.load(data)
    except ValidationError as exc:
        errors = flatten(exc.messages)
        # an unknown field is usually a typo, and the cause of the other messages too
        field, texts = min(errors.items(), key=lambda item: item[1] != ["Unknown field."])
        if len(errors) <= MAX_ERROR_FIELDS:
            raise Invalid(f"{field}: {texts[0]}", errors) from None
        others = (item for item in errors.items() if item[0] != field)
        shown = {field: texts, **dict(itertools.islice(others, MAX_ERROR_FIELDS - 1))}
        raise Invalid(f"{field}: {texts[0]} ({len(errors)} fields are invalid, "
                      f"{len(shown)} of them listed)", shown, error_count=len(errors)) from None
