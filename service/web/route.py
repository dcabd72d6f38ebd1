"""What a route is: its path and handler, the policy the one wrapper applies before the
handler runs (service/web/policy.py), and its documentation. The table itself is
service/web/routes.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from marshmallow import Schema

from service.core.errors import ApiError
from service.core.store import Row, Store


@dataclass(frozen=True)
class Face:
    """One of the API's faces, and the shape of its errors."""

    name: str
    # (status, reason, extra fields) -> the error body
    error_body: Callable[[int, str, dict[str, Any]], dict[str, Any]]

    def error(self, status: int, reason: str, extra: dict[str, Any] | None = None,
              headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(self.error_body(status, reason, extra or {}),
                                 status=status, headers=headers)


# the hosted MailAPI's contract (api-v1.md): `{"status": "error", "reason": ...}`
MAILAPI = Face("mailapi", lambda status, reason, extra: {"status": "error", "reason": reason,
                                                         **extra})
# the resource API's (api-resources.md), mailcow's shape: `{"type": "error", "msg": ...}`
RESOURCES = Face("resources", lambda status, reason, extra: {"type": "error", "msg": reason,
                                                             **extra})


@dataclass(frozen=True)
class Lookup:
    """What a request names (a task, a domain, a mailbox), read together with its key in
    one round trip. `field` names where the value is: a field of the body or query (the
    validated value is read from the same name), or with `in_path` a parameter of the
    path; a tuple of names hands `normalise` and `fetch` a tuple of values. `normalise`
    reads the raw value cheaply, before validation (ValueError: it cannot). `fetch`
    returns the key's columns (account_id, key_id, read_only, domains; NULL-free when the
    key is live) with the thing's, whose `id` is NULL when it is not the account's.
    `domain` is the column of the thing's domain name: a key limited to other domains
    does not see it. Either way, and for a path that names nothing, `missing` is raised,
    so "not yours" reads exactly like "not there".

    `reusable`: its fetch is resolve_key_with_domain, and what it found may serve the
    same key's next task-recording write within a minute without a read: the task's
    insert checks the key and the domain again in the same statement (Call.submit), and
    the request is made again the long way when either has changed."""

    field: str | tuple[str, ...]
    normalise: Callable[[Any], Any]
    fetch: Callable[[Store, str, Any], Awaitable[Row | None]]
    missing: type[ApiError]
    domain: str
    in_path: bool = False
    reusable: bool = False

    def raw(self, values: Mapping[str, Any]) -> Any:
        """The value from the request as sent, normalised; None when it is missing, not
        text, or not valid."""
        names = self.field if isinstance(self.field, tuple) else (self.field,)
        given = tuple(values.get(name) for name in names)
        if not all(isinstance(value, str) for value in given):
            return None
        try:
            return self.normalise(given if isinstance(self.field, tuple) else given[0])
        except ValueError:
            return None

    def validated(self, data: Mapping[str, Any]) -> Any:
        """The value from the validated data."""
        if isinstance(self.field, tuple):
            return tuple(data[name] for name in self.field)
        return data[self.field]


@dataclass(frozen=True)
class Policy:
    """What the wrapper does before the handler, in this order: read the `body` (its size,
    content type and depth; parsed only once a key it could hold is found live), check the
    key (with the `lookup`; 401, or 429 past the failed-auth throttle), refuse a write to
    a read-only key (403), take the Idempotency-Key when `idempotent`, validate against
    the schema, check `caller_id` when `caller`, raise the lookup's `missing` (also for
    what is outside the key's domains), refuse any domain the request names that is
    outside the key's domains (404), run `check`. A read counts against its `rate` bucket
    before the lookup's 404, whatever it finds; a write only after every check, once it
    is accepted. A route's handler that lists an account's data filters it by the key's
    domains (`call.key.domains`)."""

    face: Face
    body: type[Schema] | None = None
    query: type[Schema] | None = None
    rate: str | None = None
    idempotent: bool = False
    caller: bool = False
    lookup: Lookup | None = None
    # validation that needs what the lookup found: (data, found) -> None or raise
    check: Callable[[dict[str, Any], Row], None] | None = None
    # the type of task a successful request records (the metrics count it; the resource
    # API answers 202 with its Location)
    task: str | None = None
    # the key only as `Authorization: Bearer` (the resource API), never a body or query field
    bearer: bool = False
    # an empty body counts as `{}` (a restore names all it needs in its path)
    empty_body: bool = False

    @property
    def schema(self) -> type[Schema]:
        schema = self.body or self.query
        assert schema is not None, "a policy validates a body or a query"
        return schema


@dataclass(frozen=True)
class Doc:
    """A route's OpenAPI operation: the errors its policy implies are added to `errors`."""

    tag: str
    summary: str
    description: str
    # the 200 response: a response schema, or a complete response object
    ok: Any
    ok_text: str = "Success."
    errors: Mapping[str, Any] = field(default_factory=dict)
    # a request body the route accepts (without its `key`), for the document and the
    # tests: its domain is example.com (every route with a body has one; a test checks it)
    example: Mapping[str, Any] | None = None
    # the success status, when it is neither 200 nor a resource write's 202
    ok_status: str | None = None


# methods that change nothing; every other is a write, refused to a read-only key
READS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    name: str
    # with a policy: `async def handler(call: Call)`; without: an aiohttp handler
    handler: Callable[[Any], Awaitable[web.StreamResponse]]
    policy: Policy | None = None
    doc: Doc | None = None

    @property
    def writes(self) -> bool:
        """Whether the route changes something (its method says so)."""
        return self.method not in READS
