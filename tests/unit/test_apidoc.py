"""The OpenAPI document: valid, complete, and strict enough that a renamed field fails.

`response_errors` is the check tests/integration/test_openapi.py runs on real responses.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import pytest
from aiohttp import web
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30ReadValidator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from service.core.settings import Settings
from service.web.api.apidoc import ASSET_ROUTE, build_spec
from service.web.app import create_app
from service.web.state import ROUTES, SCHEMAS

DOC_URI = "urn:mailprov:openapi"


def _pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def response_errors(doc: dict[str, Any], path: str, method: str, status: int, body: Any,
                    headers: Any = None, content_type: str = "application/json") -> list[str]:
    """Why a response does not match what `doc` declares for it ([] when it does): the
    status must be documented, required headers present, the body valid for its schema."""
    operation = doc["paths"][path][method.lower()]
    response = operation["responses"].get(str(status))
    if response is None:
        return [f"{method} {path}: status {status} is not documented"]
    pointer = _pointer("paths", path, method.lower(), "responses", str(status))
    if "$ref" in response:
        pointer = response["$ref"].removeprefix("#")
        response = doc["components"]["responses"][pointer.rsplit("/", 1)[1]]
    problems = []
    for name, header in response.get("headers", {}).items():
        if "$ref" in header:
            header = doc["components"]["headers"][header["$ref"].rsplit("/", 1)[1]]
        if header.get("required") and name not in (headers or {}):
            problems.append(f"header {name} is missing")
    if content_type not in response["content"]:
        return [*problems, f"content type {content_type} is not documented"]
    registry: Registry[Any] = Registry().with_resource(
        DOC_URI, Resource.from_contents(doc, default_specification=DRAFT4))
    schema = {"$ref": DOC_URI + "#" + pointer + _pointer("content", content_type, "schema")}
    validator = OAS30ReadValidator(schema, registry=registry)
    problems += [_describe(e) for e in validator.iter_errors(body)]
    return problems


def _describe(error: ValidationError) -> str:
    """The error, with what each branch of a oneOf said (the part that names the field)."""
    where = ".".join(map(str, error.absolute_path)) or "body"
    branches = "; ".join(_describe(e) for e in error.context or ())
    return f"{where}: {error.message}" + (f" [{branches}]" if branches else "")


@cache
def _app() -> web.Application:
    # the document needs the router and the settings only: no Postgres, no Redis
    return create_app(Settings())


@cache
def _doc() -> dict[str, Any]:
    return build_spec(_app())


@pytest.fixture
def doc() -> dict[str, Any]:
    return copy.deepcopy(_doc())


COMPLETED = {"Task_id": 123, "total_email": 1, "domain": "example.com",
             "results": {"john@example.com": {"status": "Created successfully.",
                                              "password": "s3cret-generated"}},
             "status": "completed", "task_id": "123"}
FAILED = {"status": "error", "reason": "Mailbox already exists.", "Task_id": 124,
          "task_id": "124", "domain": "example.com",
          "results": {"john@example.com": {"status": "Already exists."}}}
SINGLE = "/api/v1/get/mailbox/single"


def test_the_document_is_valid_openapi_3(doc):
    validate(doc)
    assert doc["openapi"].startswith("3.0")


def test_every_named_route_under_the_api_is_documented(doc):
    app = _app()
    routes = [(r.resource.canonical, r.method.lower(), r.name)
              for r in app.router.routes()
              if r.resource is not None and r.resource.canonical.startswith("/api/v1/")
              and r.method != "HEAD" and r.name != ASSET_ROUTE]
    assert len(routes) >= 11  # the nine API routes, the document and the page
    for path, method, name in routes:
        assert name, f"{method} {path} has no route name"
        operation = doc["paths"].get(path, {}).get(method)
        assert operation is not None, f"{name} ({method.upper()} {path}) is not documented"
        assert operation["operationId"] == name
        # the resource API (Bearer only) accepts its writes with 202 and a Location; a
        # webhook is made (201) or removed (200) at once, no task
        writes = (method != "get" and operation["security"] == [{"bearer": []}]
                  and not name.startswith("webhook_"))
        ok = "202" if writes else {"webhook_create": "201"}.get(name, "200")
        assert ok in operation["responses"] and ("200" if writes else "202") not in operation[
            "responses"], name
        if writes:
            assert "Location" in operation["responses"]["202"]["headers"]


@pytest.mark.parametrize(("status", "body"), [(200, COMPLETED), (422, FAILED)])
def test_a_renamed_field_fails_validation(doc, status, body):
    headers = {"X-Request-ID": "x", "X-RateLimit-Limit": "1", "X-RateLimit-Remaining": "0",
               "X-RateLimit-Reset": "1"}
    assert response_errors(doc, SINGLE, "get", status, body, headers) == []
    renamed = {("TaskId" if k == "Task_id" else k): v for k, v in body.items()}
    problems = response_errors(doc, SINGLE, "get", status, renamed, headers)
    assert problems and any("Task_id" in p for p in problems), problems


@pytest.mark.parametrize("change", [
    lambda b: b.update(task_id=123),  # the seed's task_id is a string
    lambda b: b.update(Task_id="123"),  # and its Task_id an integer
    lambda b: b["results"]["john@example.com"].update(pasword="x"),
    lambda b: b.update(progress={"done": 1, "total": 1}),  # only while not yet done
    lambda b: b.update(status="done"),
    lambda b: b.pop("total_email"),
])
def test_a_changed_task_shape_fails_validation(doc, change):
    body = copy.deepcopy(COMPLETED)
    change(body)
    assert response_errors(doc, SINGLE, "get", 200, body, {"X-Request-ID": "x"}) != []


def test_nullable_nested_objects_keep_their_fields(doc):
    path = "/api/v1/list/mailbox"
    entry = {"provisioning_status": "active", "mailbox_quota": "1024MB",
             "imap_credentials": None, "created_at": "14-04-2026"}
    body = {"user_id": "1", "domain": "example.com", "results": {"a@example.com": entry},
            "status": "success"}
    assert response_errors(doc, path, "get", 200, body) == [f"header {h} is missing" for h in (
        "X-Request-ID", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")]
    entry["imap_credentials"] = {"host": "imap.example.com", "port": 993,
                                 "username": "a@example.com"}
    assert len(response_errors(doc, path, "get", 200, body)) == 4
    entry["imap_credentials"] = {"hostname": "imap.example.com", "port": 993,
                                 "username": "a@example.com"}
    assert len(response_errors(doc, path, "get", 200, body)) > 4


def test_undocumented_statuses_and_content_types_are_reported(doc):
    assert response_errors(doc, SINGLE, "get", 409, {}) == [
        f"get {SINGLE}: status 409 is not documented"]
    problems = response_errors(doc, SINGLE, "get", 404, "<html>", {"X-Request-ID": "x"},
                               content_type="text/html")
    assert problems == ["content type text/html is not documented"]


def test_request_bodies_come_from_the_request_schemas(doc):
    schemas = doc["components"]["schemas"]
    body = doc["paths"]["/api/v1/create/mailbox/bulk"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateMailboxBulk"}
    bulk = schemas["CreateMailboxBulk"]
    assert bulk["additionalProperties"] is False
    assert set(bulk["properties"]) == {"key", "Email_fullname", "single_bulk", "Domain",
                                       "Params"}
    assert bulk["properties"]["key"]["pattern"] == "^[A-Za-z0-9]{32}$"
    assert "count" in schemas["BulkParams"]["properties"]
    query = doc["paths"]["/api/v1/list/mailbox"]["get"]["parameters"]
    assert {p.get("name") for p in query} >= {"caller_id", "domain"}


def _resolved(doc: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in response:
        return doc["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return response


def test_every_operation_that_takes_an_idempotency_key_documents_its_409(doc):
    """Defect 9: the 409 "Idempotency-Key in flight" was left out of create/sub-domain,
    create/mailbox/single and create/mailbox/bulk."""
    idempotent = [(path, method, operation) for path, operations in doc["paths"].items()
                  for method, operation in operations.items()
                  if {"$ref": "#/components/parameters/IdempotencyKey"} in
                  operation["parameters"]]
    assert len(idempotent) >= 4
    for path, method, operation in idempotent:
        conflict = operation["responses"].get("409")
        assert conflict is not None, f"{method} {path} leaves out its 409"
        conflict = _resolved(doc, conflict)
        assert "Idempotency-Key" in conflict["description"], (path, conflict)
        assert "Retry-After" in conflict["headers"], path


def test_every_write_documents_the_read_only_403_and_every_route_the_throttle(doc):
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            if not operation["security"]:
                continue  # no key: the docs themselves
            responses = operation["responses"]
            assert "too many failed api key checks" in _resolved(doc, responses["429"])[
                "description"].lower(), path
            if method != "get":
                assert "read-only" in _resolved(doc, responses["403"])["description"], path
            if "requestBody" in operation:
                assert "415" in responses, path


def test_every_route_with_a_body_has_an_example_it_accepts():
    """The example is what the document shows, and what the tenant matrix sends
    (tests/integration/test_tenants.py): each is valid for its route's schema."""
    app = _app()
    for route in app[ROUTES].values():
        if route.policy is None or route.policy.body is None:
            continue
        assert route.doc is not None and route.doc.example is not None, route.name
        app[SCHEMAS][route.name].load(dict(route.doc.example))
        operation = _doc()["paths"][route.path.replace(r":\d{1,18}", "")][route.method.lower()]
        body = operation["requestBody"]
        assert body["content"]["application/json"]["example"] == route.doc.example
