"""Live API documentation: the OpenAPI 3 document and a Swagger UI page to read it.

The document is generated with apispec from the request schemas (service/schemas.py) and
the response schemas (service/responses.py), once per app on first request. Paths come
from the app's router by route name, so a route is documented at the path it really has.
The page's assets are served from the installed `swagger-ui-bundle` package, never a CDN:
the docs work on a machine with no Internet access.
"""

from __future__ import annotations

import copy
import html
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import marshmallow
from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from swagger_ui_bundle import swagger_ui_path

from service import errors, responses
from service.apikeys import KEY_FORMAT
from service.middleware import CLIENT_REQUEST_ID
from service.schemas import CallerQuery, ListMailboxQuery, TaskQuery
from service.settings import Settings
from service.state import SCHEMAS, SETTINGS, BodySchemas

OPENAPI_VERSION = "3.0.3"  # Swagger UI 4 (swagger-ui-bundle 1.x) renders 3.0, not 3.1
JSON = "application/json"

# leaves first: a schema registered after a parent has referenced it would be a duplicate
RESPONSE_SCHEMAS: list[type[marshmallow.Schema]] = [
    responses.Error, responses.ValidationFailed, responses.DomainEntry,
    responses.DomainList, responses.DomainAccepted, responses.MailboxAccepted,
    responses.ImapCredentials, responses.MailboxEntry, responses.MailboxList,
    responses.ItemResult, responses.Progress, responses.TaskCompleted,
    responses.TaskInProgress, responses.FailedTask, responses.TypedTaskCompleted,
    responses.TypedTaskInProgress, responses.TypedFailedTask,
]

RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {"description": "The request's id: the client's own `X-Request-ID` "
                     "when it sent a valid one, else a new one. Quote it when reporting a "
                     "problem; a 500 is logged with it.",
                     "required": True, "schema": {"type": "string"}},
    "X-RateLimit-Limit": {"description": "Requests allowed per rolling hour for this "
                          "endpoint's bucket.", "required": True,
                          "schema": {"type": "integer"}},
    "X-RateLimit-Remaining": {"description": "Requests left in the current hour.",
                              "required": True, "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {"description": "Unix time (seconds) when a slot frees.",
                          "required": True, "schema": {"type": "integer"}},
    "Retry-After": {"description": "Seconds to wait before trying again.", "required": True,
                    "schema": {"type": "integer"}},
}

DESCRIPTION = """\
The mailprov provisioning API, compatible with the MailAPI v1 seed: field names and shapes
are kept exactly, `Task_id`/`task_id` pair included.

**Authentication.** An API key is 32 ASCII letters or digits. POST endpoints take it as
the body field `key`, GET endpoints as the query parameter `key`; an
`Authorization: Bearer <key>` header works on every endpoint instead. A missing, malformed,
unknown or revoked key gets 401.

**Errors.** Every error body is `{"status": "error", "reason": "<one sentence>"}`;
validation errors (422) add `"errors": {"<field>": ["<message>", ...]}`. A failed task's
422 adds `Task_id`, `task_id`, `domain` and `results`. Unknown top-level body fields are
refused with 422.

**Tasks.** Create requests are accepted at once and processed by a worker; poll the
returned `task_id` until its status is `completed` (200) or `failed` (422).

**Rate limits** are per account over a rolling hour. Every response of a rate-limited
endpoint that got as far as the limit check carries `X-RateLimit-Limit`,
`X-RateLimit-Remaining` and `X-RateLimit-Reset`; a 429 also carries `Retry-After`.

**Request ids.** Every response carries `X-Request-ID`.
"""


def _header_refs(*names: str) -> dict[str, str]:
    return {name: name for name in ("X-Request-ID", *names)}


def _response(description: str, schema: Any, *, limited: bool = False) -> dict[str, Any]:
    """A JSON response; `limited` when the rate-limit headers are always on it."""
    return {"description": description, "content": {JSON: {"schema": schema}},
            "headers": _header_refs(*(RATE_HEADERS if limited else ()))}


def _reason(error: type[errors.ApiError]) -> str:
    return f"`{error().reason}`"


# shared error responses, as components; op-specific ones are written inline below
ERROR_RESPONSES: dict[str, dict[str, Any]] = {
    "BadJson": _response(f"The body is not a JSON object: {_reason(errors.BadJson)}",
                         responses.Error),
    "Unauthorized": _response("Missing, malformed, unknown or revoked API key: "
                              f"{_reason(errors.InvalidApiKey)}", responses.Error),
    "Forbidden": _response("`caller_id` is not the key's account: "
                           f"{_reason(errors.UnauthorizedCaller)}", responses.Error),
    "TooLarge": _response("The body is over the size limit (default 1 MiB).",
                          responses.Error),
    "Invalid": _response("Validation failed; `errors` names each field.",
                         responses.ValidationFailed),
    "RateLimited": {
        **_response("Over the hourly rate limit.", responses.Error),
        "headers": _header_refs(*RATE_HEADERS, "Retry-After"),
    },
    "Internal": _response("Internal error; the reason quotes the request id.",
                          responses.Error),
    "Unavailable": {
        **_response("Postgres or Redis is unreachable; retry shortly.", responses.Error),
        "headers": _header_refs("Retry-After"),
    },
}


KEY_PROPERTY = {
    "type": "string", "pattern": f"^{KEY_FORMAT.pattern}$", "writeOnly": True,
    "description": "The API key, unless sent as `Authorization: Bearer <key>`.",
}
# rules of request fields that live in validators apispec cannot read (validates_schema,
# normalising fields), by schema and field
REQUEST_NOTES: dict[str, dict[str, dict[str, Any]]] = {
    "*": {
        "Domain": {"example": "example.com",
                   "description": "A domain name; stored lower-case, IDNA-encoded, without "
                                  "a trailing dot."},
    },
    "CreateMailboxSingle": {
        "single_bulk": {"enum": ["single"]},
        "Email_fullname": {"example": "john",
                           "description": "A local part, or a full address in `Domain`."},
    },
    "CreateMailboxBulk": {
        "single_bulk": {"enum": ["bulk"]},
        "Email_fullname": {"example": "team",
                           "description": "With `Params.count`: the prefix of the local "
                                          "parts; with `Params.mailboxes`: a free label."},
    },
}
GET_SECURITY: list[dict[str, list[str]]] = [{"keyQuery": []}, {"bearer": []}]
# the body field `key` is the usual way, and OpenAPI has no scheme for a body field
POST_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {}]

ASSETS = Path(str(swagger_ui_path))
ASSET_FILES = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"})
ASSET_ROUTE = "docs_asset"  # a file server, not an API operation: left out of the document

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>mailprov API v1</title>
<link rel="stylesheet" href="{css}">
<link rel="icon" type="image/png" href="{icon}">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{js}"></script>
<script>
// validatorUrl null: Swagger UI would otherwise send the document to validator.swagger.io
SwaggerUIBundle({{url: {spec}, dom_id: "#swagger-ui", validatorUrl: null, deepLinking: true}});
</script>
</body>
</html>
"""
# the page loads nothing from another host, even if a later Swagger UI tried to
PAGE_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self' 'unsafe-inline'")


@dataclass(frozen=True)
class Operation:
    """One route's documentation. `errors` maps a status to a response object or to the
    name of one in ERROR_RESPONSES; `body` names a `BodySchemas` attribute."""

    tag: str
    summary: str
    description: str
    ok: dict[str, Any]
    errors: dict[str, Any] = field(default_factory=dict)
    query: type[marshmallow.Schema] | None = None
    body: str | None = None
    auth: bool = True

    def render(self, name: str, method: str, bodies: BodySchemas) -> dict[str, Any]:
        """The OpenAPI operation object, schemas still as marshmallow classes for apispec."""
        parameters: list[Any] = ["RequestId"]
        if self.query is not None:
            parameters.append({"in": "query", "schema": self.query})
        operation: dict[str, Any] = {
            "operationId": name, "tags": [self.tag], "summary": self.summary,
            "description": self.description, "parameters": parameters,
            "responses": {"200": self.ok, **self.errors},
            "security": [],
        }
        if self.auth:
            operation["security"] = GET_SECURITY if method == "GET" else POST_SECURITY
            operation["responses"].update({"500": "Internal", "503": "Unavailable"})
        if self.body is not None:
            parameters.append("IdempotencyKey")
            schema = getattr(bodies, self.body)
            operation["requestBody"] = {"required": True,
                                        "content": {JSON: {"schema": schema}}}
        return copy.deepcopy(operation)  # apispec resolves schemas in place


def _post_errors(more: dict[str, Any]) -> dict[str, Any]:
    return {"400": "BadJson", "401": "Unauthorized", "413": "TooLarge", "422": "Invalid",
            "429": "RateLimited", **more}


def _get_errors(more: dict[str, Any]) -> dict[str, Any]:
    return {"401": "Unauthorized", "422": "Invalid", "429": "RateLimited", **more}


def _task_operation(summary: str, description: str, ok: list[type[marshmallow.Schema]],
                    failed: type[marshmallow.Schema]) -> Operation:
    return Operation(
        "tasks", summary, description,
        _response("The task: `completed`, or `queued`/`processing` with `progress`.",
                  {"oneOf": ok}, limited=True),
        _get_errors({
            "404": _response("Unknown, or another account's task: "
                             f"{_reason(errors.TaskNotFound)}", responses.Error),
            "422": _response("`task_id` is not a positive integer (with `errors`); the task "
                             f"is of another type ({_reason(errors.TaskTypeMismatch)}); or the "
                             "task failed: the error contract plus `Task_id`, `task_id`, "
                             "`domain` and `results`.",
                             {"oneOf": [responses.ValidationFailed, failed]}),
        }),
        query=TaskQuery,
    )


def operations(settings: Settings) -> dict[str, Operation]:
    """Every documented route, by route name."""
    mailbox_404 = _response(f"The domain is not the account's: {_reason(errors.DomainNotFound)}",
                            responses.Error)
    return {
        "list_domain": Operation(
            "domains", "List the account's domains",
            "All domains and sub-domains of the key's account; `caller_id` must be its id.",
            _response("The domains.", responses.DomainList, limited=True),
            _get_errors({"403": "Forbidden"}), query=CallerQuery,
        ),
        "create_domain": Operation(
            "domains", "Create a domain",
            "Accepted at once; the domain is listed as `pending` until the worker has "
            "provisioned it. A domain can be hosted once per installation.",
            _response("Accepted.", responses.DomainAccepted, limited=True),
            _post_errors({"409": _response(
                f"Some account holds the domain already: {_reason(errors.DomainExists)}",
                responses.Error)}),
            body="domain",
        ),
        "create_sub_domain": Operation(
            "domains", "Create sub-domains of a domain",
            f"1 to {settings.sub_domains_max} labels; each becomes a domain of the account "
            "inheriting the parent's defaults. At most one successful request per account "
            "and parent domain in any rolling hour.",
            _response("Accepted.", responses.DomainAccepted, limited=True),
            _post_errors({
                "404": _response("The parent is not the account's: "
                                 f"{_reason(errors.ParentDomainNotFound)}", responses.Error),
                "429": {**ERROR_RESPONSES["RateLimited"],
                        "description": _reason(errors.SubDomainRateLimited)},
            }),
            body="sub_domain",
        ),
        "create_mailbox_single": Operation(
            "mailboxes", "Create one mailbox",
            "`Email_fullname` is a local part or an address in `Domain`; `single_bulk` must "
            "be `single`; `Params` is required (`{}` is fine). Without `password` or "
            "`password_hash` a strong password is generated and shown by "
            "get/mailbox/single.",
            _response("Accepted.", responses.MailboxAccepted, limited=True),
            _post_errors({"404": mailbox_404}), body="mailbox_single",
        ),
        "create_mailbox_bulk": Operation(
            "mailboxes", "Create many mailboxes",
            f"Either `Params.count` (1 to {settings.bulk_max}) mailboxes named "
            "`Email_fullname` plus a number counting from `Params.start`, or "
            f"`Params.mailboxes`, a list of 1 to {settings.bulk_max} mailboxes. "
            "`single_bulk` must be `bulk`.",
            _response("Accepted.", responses.MailboxAccepted, limited=True),
            _post_errors({"404": mailbox_404}), body="mailbox_bulk",
        ),
        "list_mailbox": Operation(
            "mailboxes", "List a domain's mailboxes",
            "The mailboxes of one of the account's domains; `caller_id` must be its id.",
            _response("The mailboxes.", responses.MailboxList, limited=True),
            _get_errors({"403": "Forbidden", "404": mailbox_404}), query=ListMailboxQuery,
        ),
        "get_mailbox_single": _task_operation(
            "Poll a single-mailbox task",
            "A task of create/mailbox/single. A generated password shows in its item as "
            "`password` for a while after completion (a setting, default one hour), then "
            "as `null`.",
            [responses.TaskInProgress, responses.TaskCompleted], responses.FailedTask,
        ),
        "get_mailbox_bulk": _task_operation(
            "Poll a bulk-mailbox task",
            "A task of create/mailbox/bulk. Generated passwords show as for single tasks.",
            [responses.TaskInProgress, responses.TaskCompleted], responses.FailedTask,
        ),
        "get_task": _task_operation(
            "Poll any task",
            "Any task type, in the shape of get/mailbox/*, plus `type`.",
            [responses.TypedTaskInProgress, responses.TypedTaskCompleted],
            responses.TypedFailedTask,
        ),
        "openapi": Operation(
            "docs", "This document", "The OpenAPI document of this API.",
            {"description": "The document.", "content": {JSON: {"schema": {"type": "object"}}},
             "headers": _header_refs()},
            auth=False,
        ),
        "docs": Operation(
            "docs", "The documentation page", "This document, rendered by Swagger UI.",
            {"description": "An HTML page.",
             "content": {"text/html": {"schema": {"type": "string"}}},
             "headers": _header_refs()},
            auth=False,
        ),
    }


def _pin_null_branch(self: Any, field: marshmallow.fields.Field, ret: dict[str, Any],
                     **kwargs: Any) -> dict[str, Any]:
    """apispec writes a nullable nested schema in OpenAPI 3.0 as `anyOf: [any object, the
    schema]`; pin the first branch to null, or a misspelt nested field would pass."""
    for branch in ret.get("anyOf", ()):
        if branch.get("nullable") and "$ref" not in branch:
            branch["enum"] = [None]
    return {}


def build_spec(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of `app`: every route named in `operations`, at its path."""
    bodies = app[SCHEMAS]
    plugin = MarshmallowPlugin()
    spec = APISpec("mailprov API", "1", OPENAPI_VERSION, plugins=[plugin],
                   info={"description": DESCRIPTION})
    assert plugin.converter is not None  # set by APISpec's init_spec
    plugin.converter.add_attribute_function(_pin_null_branch)

    spec.components.security_scheme("keyQuery", {
        "type": "apiKey", "in": "query", "name": "key",
        "description": "GET endpoints: the API key as the query parameter `key`.",
    })
    spec.components.security_scheme("bearer", {
        "type": "http", "scheme": "bearer",
        "description": "Any endpoint: `Authorization: Bearer <key>`. POST endpoints "
                       "usually take the key as the body field `key` instead.",
    })
    spec.components.parameter("RequestId", "header", {
        "name": "X-Request-ID", "required": False,
        "description": "Your id for this request, echoed in the response's X-Request-ID.",
        "schema": {"type": "string", "pattern": f"^{CLIENT_REQUEST_ID.pattern}$"},
    })
    spec.components.parameter("IdempotencyKey", "header", {
        "name": "Idempotency-Key", "required": False,
        "description": "1-255 printable ASCII characters. The same key with the same request "
                       "from the same account within 24 h answers the original response "
                       "again (with `Idempotent-Replayed: true`) and creates nothing; with "
                       "another request it answers 422; while the first request with the "
                       "key is still being handled, 409 with `Retry-After`.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    })
    for name, header in HEADERS.items():
        spec.components.header(name, header)
    for schema in RESPONSE_SCHEMAS:
        spec.components.schema(schema.__name__,
                               {"description": inspect.cleandoc(schema.__doc__ or "")},
                               schema=schema)
    for name, response in ERROR_RESPONSES.items():
        spec.components.response(name, response)

    documented = operations(app[SETTINGS])
    for body in dict.fromkeys(op.body for op in documented.values() if op.body):
        schema = getattr(bodies, body)
        name = type(schema).__name__
        spec.components.schema(name, schema=schema)
        properties = spec.components.schemas[name]["properties"]
        properties["key"] = dict(KEY_PROPERTY)
        for notes in (REQUEST_NOTES["*"], REQUEST_NOTES.get(name, {})):
            for field_name, note in notes.items():
                if field_name in properties:
                    properties[field_name].update(note)

    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        op = documented.get(route.name or "")
        if op is None or route.method == "HEAD":  # aiohttp's automatic HEAD of a GET
            continue
        assert route.resource is not None  # a named route has one
        paths.setdefault(route.resource.canonical, {})[route.method.lower()] = op.render(
            route.name or "", route.method, bodies)
    for path, ops in paths.items():
        spec.path(path=path, operations=ops)
    return spec.to_dict()


def _page(app: web.Application) -> str:
    def asset(name: str) -> str:
        return html.escape(str(app.router[ASSET_ROUTE].url_for(name=name)))

    spec_url = json.dumps(str(app.router["openapi"].url_for())).replace("<", "\\u003c")
    return PAGE.format(css=asset("swagger-ui.css"), js=asset("swagger-ui-bundle.js"),
                       icon=asset("favicon-32x32.png"), spec=spec_url)


def setup_docs(app: web.Application, prefix: str) -> None:
    """Add the routes `openapi` (the document, built on first request and cached),
    `docs` (the Swagger UI page) and `docs_asset` (its files) under `prefix`.
    No API key, no rate limit."""
    # built once per app, on first request: by then the router is frozen
    cache: dict[str, bytes] = {}

    async def openapi(request: web.Request) -> web.Response:
        if "document" not in cache:
            cache["document"] = json.dumps(build_spec(request.app)).encode()
        return web.Response(body=cache["document"], content_type=JSON, charset="utf-8")

    async def docs(request: web.Request) -> web.Response:
        return web.Response(text=_page(request.app), content_type="text/html",
                            headers={"Content-Security-Policy": PAGE_CSP})

    async def docs_asset(request: web.Request) -> web.FileResponse:
        name = request.match_info["name"]
        if name not in ASSET_FILES:
            raise web.HTTPNotFound
        return web.FileResponse(ASSETS / name)

    app.router.add_routes([
        web.get(f"{prefix}/openapi.json", openapi, name="openapi"),
        web.get(f"{prefix}/docs", docs, name="docs"),
        web.get(f"{prefix}/docs/assets/{{name}}", docs_asset, name=ASSET_ROUTE),
    ])
