"""The error middleware: request ids, each face's error shape, rate-limit headers.

Every response leaves through here, so every response has an `X-Request-ID`, every error
has the shape of its route's face, and nothing internal (a traceback, SQL, a class name)
reaches a client: anything unexpected is logged with the request id and answered as an
opaque 500.
"""

from __future__ import annotations

import logging
import re
import secrets

from aiohttp import web
from aiohttp.typedefs import Handler

from service.core import logs
from service.core.errors import BACKEND_DOWN, ApiError, Unavailable
from service.web.route import MAILAPI, Face
from service.web.state import RATE, REQUEST_ID, ROUTES

log = logging.getLogger("mailprov.web")

CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def new_request_id() -> str:
    """32 random lowercase hex digits, a uuid4's shape without a UUID object to make."""
    return secrets.token_hex(16)

# what aiohttp raises itself, in the contract's words
HTTP_REASONS = {
    404: "Not found.",
    405: "Method not allowed.",
    413: "Request body too large.",
}


def face_of(request: web.Request) -> Face:
    """The face of the request's route. What matched no route (a 404, a 405) gets the face
    of the routes under the same first segment of the API (`/api/v1/mailboxes/...`), and
    the MailAPI's when there are none."""
    routes = request.app[ROUTES]
    route = routes.get(request.match_info.route.name or "")
    if route is not None and route.policy is not None:
        return route.policy.face
    segment = _segment(request.path)
    for other in routes.values():
        if other.policy is not None and segment and _segment(other.path) == segment:
            return other.policy.face
    return MAILAPI


def _segment(path: str) -> str | None:
    """The first segment after the API's base path: `mailboxes` of /api/v1/mailboxes/x."""
    parts = path.split("/")
    return parts[3] if len(parts) > 3 and parts[1:3] == ["api", "v1"] else None


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    sent = request.headers.get("X-Request-ID", "")
    request_id = sent if CLIENT_REQUEST_ID.fullmatch(sent) else new_request_id()
    request[REQUEST_ID] = request_id
    logs.bind(request_id=request_id)  # on every line logged while the request runs
    try:
        response = await handler(request)
    except ApiError as exc:
        response = face_of(request).error(exc.status, exc.reason, exc.extra, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = HTTP_REASONS.get(exc.status, exc.reason + ".")
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        response = face_of(request).error(exc.status, reason, headers=allow)
    except BACKEND_DOWN as exc:
        log.warning("backing service unavailable: %s (request %s)", type(exc).__name__,
                    request_id)
        response = face_of(request).error(Unavailable.status, Unavailable().reason,
                                          headers={"Retry-After": "5"})
    except Exception:
        log.exception("unhandled error in %s %s (request %s)", request.method,
                      request.path, request_id)
        response = face_of(request).error(500, f"Internal error; request id {request_id}.")
    decision = request.get(RATE)
    if decision is not None:
        response.headers.update(decision.headers)
    response.headers["X-Request-ID"] = request_id
    return response
