"""Live API documentation: the OpenAPI 3 document and a Swagger UI page to read it.

The document is generated with apispec from the route table (service/web/routes.py): each
route's policy names its request schema and implies its errors, and its `Doc` says the
rest. It is built once per app, on first request; paths come from the app's router by
route name, so a route is documented at the path it really has.
The page's assets are served from the installed `swagger-ui-bundle` package, never a CDN:
the docs work on a machine with no Internet access.
"""

from __future__ import annotations

import copy
import dataclasses
import html
import inspect
import json
import re
from pathlib import Path
from typing import Any

import marshmallow
from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from swagger_ui_bundle import swagger_ui_path

from service.core import errors
from service.core.accounts import KEY_FORMAT
from service.web.api import responses
from service.web.body import MAX_DEPTH
from service.web.middleware import CLIENT_REQUEST_ID
from service.web.resources import responses as resource_responses
from service.web.route import RESOURCES, Route
from service.web.state import DOMAIN_PATHS, ROUTES, SCHEMAS, SETTINGS
from service.web.throttle import AuthThrottled

OPENAPI_VERSION = "3.0.3"  # Swagger UI 4 (swagger-ui-bundle 1.x) renders 3.0, not 3.1
JSON = "application/json"

# leaves first: a schema registered after a parent has referenced it would be a duplicate
RESPONSE_SCHEMAS: list[type[marshmallow.Schema]] = [
    responses.Error, responses.ValidationFailed, responses.DomainEntry,
    responses.DomainList, responses.DomainAccepted, responses.MailboxAccepted,
    responses.ImapCredentials, responses.MailboxEntry, responses.MailboxList,
    responses.ItemResult, responses.Progress, responses.TaskCompleted,
    responses.TaskInProgress, responses.FailedTask, responses.TypedTaskCompleted,
    responses.TypedTaskInProgress, responses.TypedFailedTask, *resource_responses.SCHEMAS,
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
    "Location": {"description": "Where the task of an accepted write is polled: "
                 "`/api/v1/tasks/{id}`.", "required": True, "schema": {"type": "string"}},
}

DESCRIPTION = """\
The mailprov provisioning API, compatible with the MailAPI v1 seed: field names and shapes
are kept exactly, `Task_id`/`task_id` pair included.

**Authentication.** An API key is 32 ASCII letters or digits. POST endpoints take it as
the body field `key`, GET endpoints as the query parameter `key`; an
`Authorization: Bearer <key>` header works on every endpoint instead. A missing, malformed,
unknown, revoked or expired key gets 401. An address that fails more key checks than a
limit in a minute (default 20) gets 429 with `Retry-After` until the minute is over; keys
that worked before keep working from it. A key may be read-only (403 on every write) or
limited to some domains (the others are 404, as if they did not exist).

**Requests.** A POST body is a JSON object sent as `Content-Type: application/json`
(else 415), at most 1 MiB (else 413) and 32 levels deep (else 400).

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

**The resource API** (`/api/v1/domains`, `/mailboxes`, `/aliases`, `/alias-domains`,
`/tasks`) changes, deletes and restores as well as creates. It takes the key only as
`Authorization: Bearer <key>`; its errors are `{"type": "error", "msg": "<one sentence>"}`
(422s add `errors`). Every write is validated and checked at once, then answers 202 with
`{"type": "success", "msg", "task_id"}` and `Location: /api/v1/tasks/{id}`; the change is
visible once the task is `completed`. Reads answer 200, lists as pages
(`page[number]`, `page[size]` up to 1000, `filter[...]`, `sort`; any other parameter is a
422). Deletes are soft: `restore` undoes one within the retention (default 30 days), and
until the row is purged its name stays taken.
"""


def _header_refs(*names: str) -> dict[str, str]:
    return {name: name for name in ("X-Request-ID", *names)}


def response(description: str, schema: Any, *, limited: bool = False,
             retry_after: bool = False) -> dict[str, Any]:
    """A JSON response; `limited` when the rate-limit headers are always on it, and
    `retry_after` when it is a 429 (which has them too) or a 503."""
    headers = (*(RATE_HEADERS if limited or retry_after else ()),
               *(("Retry-After",) if retry_after else ()))
    return {"description": description, "content": {JSON: {"schema": schema}},
            "headers": _header_refs(*headers)}


def _optional(response: dict[str, Any], names: tuple[str, ...], when: str) -> dict[str, Any]:
    """`response` with headers `names` that only some of its cases carry (`when`)."""
    headers = {name: {**HEADERS[name], "required": False,
                      "description": f"{HEADERS[name]['description']} {when}"}
               for name in names}
    return {**response, "headers": {**response["headers"], **headers}}


def optional_retry_after(response: dict[str, Any]) -> dict[str, Any]:
    """`response` with a `Retry-After` that only some of its cases carry."""
    return _optional(response, ("Retry-After",), "Only when trying again helps.")


def reason(error: type[errors.ApiError]) -> str:
    """An error's message, quoted for a description."""
    return f"`{error().reason}`"


# any route that checks a key can answer this 429 (service/web/throttle.py)
THROTTLED = ("too many failed API key checks from this address in the last minute, "
             f"before any key is looked up: {reason(AuthThrottled)} (its X-RateLimit-* "
             "headers count failed checks per minute)")
READ_ONLY = f"The key is read-only: {reason(errors.ReadOnlyKey)}"
CALLER = f"`caller_id` is not the key's account: {reason(errors.UnauthorizedCaller)}"
OUT_OF_SCOPE = "the key is limited to other domains"


def _error_responses(error: Any, invalid: Any) -> dict[str, dict[str, Any]]:
    """The errors every route of a face shares, in that face's error shape."""
    return {
        "BadJson": response(f"The body is not a JSON object ({reason(errors.BadJson)}), or "
                            f"it nests more than {MAX_DEPTH} levels deep "
                            f"({reason(errors.BodyTooDeep)}).", error),
        "NotJson": response(f"The body is not sent as JSON: {reason(errors.NotJson)}", error),
        "Unauthorized": response("Missing, malformed, unknown, revoked or expired API key: "
                                 f"{reason(errors.InvalidApiKey)}", error),
        "TooLarge": response("The body is over the size limit (default 1 MiB).", error),
        "Invalid": response("Validation failed; `errors` names each field.", invalid),
        "InFlight": {
            **response("A request with this Idempotency-Key is still being handled.", error),
            "headers": _header_refs("Retry-After"),
        },
        "RateLimited": response(f"Over the hourly rate limit; or {THROTTLED}", error,
                                retry_after=True),
        "Throttled": response(THROTTLED[0].upper() + THROTTLED[1:] + ".", error,
                              retry_after=True),
        "Internal": response("Internal error; the reason quotes the request id.", error),
        "Unavailable": {
            **response("Postgres or Redis is unreachable; retry shortly.", error),
            "headers": _header_refs("Retry-After"),
        },
    }


# the components of each face's shared errors: the resource API's are named Resource*
FACE_ERRORS = {"mailapi": ("", responses.Error),
               "resources": ("Resource", resource_responses.ResourceError)}
# shared error responses, as components; op-specific ones are written inline below
ERROR_RESPONSES: dict[str, dict[str, Any]] = {
    **_error_responses(responses.Error, responses.ValidationFailed),
    **{f"Resource{name}": shared for name, shared in _error_responses(
        resource_responses.ResourceError, resource_responses.ResourceValidationFailed).items()},
}


def face_error(route: Route) -> Any:
    """The error schema of a route's face, for the errors its Doc writes inline."""
    assert route.policy is not None
    return FACE_ERRORS[route.policy.face.name][1]


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
BEARER_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]
# a path's parameters: `{name}`; those that are ids are integers
PATH_PARAMETER = re.compile(r"\{(\w+)\}")
INTEGER_PARAMETERS = {"id", "task_id"}

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


def operation(route: Route, path: str, schemas: dict[str, marshmallow.Schema],
              values: dict[str, Any], names_domain: bool = False) -> dict[str, Any]:
    """The OpenAPI operation of a route served at `path`, schemas still as marshmallow
    objects for apispec. `values` fill the `{setting}` fields of its description;
    `names_domain`: the request names a domain (a key limited to other domains gets 404)."""
    doc, policy = route.doc, route.policy
    assert doc is not None
    parameters: list[Any] = ["RequestId"]
    parameters += [{"in": "path", "name": name, "required": True,
                    "schema": {"type": "integer" if name in INTEGER_PARAMETERS else "string"}}
                   for name in PATH_PARAMETER.findall(path)]
    errors_: dict[str, Any] = {}
    limited = False
    security: list[dict[str, list[str]]] = []
    ok_headers = _header_refs()
    if policy is not None:
        schema = schemas[route.name]
        security = (BEARER_SECURITY if policy.bearer
                    else GET_SECURITY if route.method == "GET" else POST_SECURITY)
        prefix = FACE_ERRORS[policy.face.name][0]
        # what the policy can answer, in its order
        if policy.body is not None:
            errors_.update({"400": "BadJson", "413": "TooLarge", "415": "NotJson"})
        errors_["401"] = "Unauthorized"
        forbidden = [READ_ONLY] if route.writes else []
        if policy.caller:
            forbidden.append(CALLER)
        if forbidden:
            errors_["403"] = response("; or ".join(forbidden) + ".", face_error(route))
        if policy.idempotent:
            errors_["409"] = "InFlight"
        errors_["422"] = "Invalid"
        if policy.lookup is not None:
            errors_["404"] = response(f"Not the account's, or {OUT_OF_SCOPE}: "
                                      f"{reason(policy.lookup.missing)}", face_error(route))
        elif names_domain:
            errors_["404"] = response(f"The domain is one {OUT_OF_SCOPE}: "
                                      f"{reason(errors.DomainNotFound)}", face_error(route))
        errors_["429"] = "RateLimited" if policy.rate is not None else "Throttled"
        errors_.update({"500": "Internal", "503": "Unavailable"})
        errors_ = {status: prefix + shared if isinstance(shared, str) else shared
                   for status, shared in errors_.items()}
        limited = policy.rate is not None
        if policy.face is RESOURCES and policy.task is not None:
            ok_headers = _header_refs("Location")
        if policy.query is not None:
            parameters.append({"in": "query", "schema": schema})
        if policy.idempotent:
            parameters.append("IdempotencyKey")
    errors_.update(doc.errors)
    limited = limited or "429" in doc.errors
    ok = doc.ok if isinstance(doc.ok, dict) and "description" in doc.ok else response(
        doc.ok_text, doc.ok, limited=limited and not (policy and policy.idempotent))
    if limited and policy is not None and policy.idempotent:
        # a replay of an Idempotency-Key answers from the record, counting against no limit
        ok = _optional(ok, RATE_HEADERS, "Absent on a replay (`Idempotent-Replayed: true`), "
                                         "which counts against no limit.")
    # a write of the resource API is accepted with 202, and Location says where to poll
    ok_status = doc.ok_status or ("202" if "Location" in ok_headers else "200")
    result: dict[str, Any] = {
        "operationId": route.name, "tags": [doc.tag], "summary": doc.summary,
        "description": doc.description.format(**values), "parameters": parameters,
        "responses": {ok_status: {**ok, "headers": {**ok_headers, **ok.get("headers", {})}},
                      **errors_},
        "security": security,
    }
    if policy is not None and policy.body is not None:
        content: dict[str, Any] = {"schema": schemas[route.name]}
        if doc.example is not None:
            content["example"] = dict(doc.example)
        result["requestBody"] = {"required": True, "content": {JSON: content}}
    return copy.deepcopy(result)  # apispec resolves schemas in place


def _pin_null_branch(self: Any, field: marshmallow.fields.Field, ret: dict[str, Any],
                     **kwargs: Any) -> dict[str, Any]:
    """apispec writes a nullable nested schema in OpenAPI 3.0 as `anyOf: [any object, the
    schema]`; pin the first branch to null, or a misspelt nested field would pass."""
    for branch in ret.get("anyOf", ()):
        if branch.get("nullable") and "$ref" not in branch:
            branch["enum"] = [None]
    return {}


def build_spec(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of `app`: every route of its table that has a `Doc`."""
    schemas = app[SCHEMAS]
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

    documented = {name: route for name, route in app[ROUTES].items() if route.doc}
    for with_body in documented.values():
        if with_body.policy is None or with_body.policy.body is None:
            continue
        name = type(schemas[with_body.name]).__name__
        if name in spec.components.schemas:  # one body schema serves several routes
            continue
        spec.components.schema(name, schema=schemas[with_body.name])
        properties = spec.components.schemas[name]["properties"]
        if not with_body.policy.bearer:
            properties["key"] = dict(KEY_PROPERTY)
        for notes in (REQUEST_NOTES["*"], REQUEST_NOTES.get(name, {})):
            for field_name, note in notes.items():
                if field_name in properties:
                    properties[field_name].update(note)

    values = dataclasses.asdict(app[SETTINGS])
    paths: dict[str, dict[str, Any]] = {}
    for served in app.router.routes():
        route = documented.get(served.name or "")
        if route is None or served.method == "HEAD":  # aiohttp's automatic HEAD of a GET
            continue
        assert served.resource is not None  # a named route has one
        path = served.resource.canonical
        paths.setdefault(path, {})[served.method.lower()] = operation(
            route, path, schemas, values, bool(app[DOMAIN_PATHS].get(route.name)))
    for path, ops in paths.items():
        spec.path(path=path, operations=ops)
    return spec.to_dict()


def _page(app: web.Application) -> str:
    def asset(name: str) -> str:
        return html.escape(str(app.router[ASSET_ROUTE].url_for(name=name)))

    spec_url = json.dumps(str(app.router["openapi"].url_for())).replace("<", "\\u003c")
    return PAGE.format(css=asset("swagger-ui.css"), js=asset("swagger-ui-bundle.js"),
                       icon=asset("favicon-32x32.png"), spec=spec_url)


# the document of each app, built on its first request: by then the router is frozen
DOCUMENT = web.AppKey("openapi_document", dict[str, bytes])


async def openapi(request: web.Request) -> web.Response:
    cache = request.app[DOCUMENT]
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
