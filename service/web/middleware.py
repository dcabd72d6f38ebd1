"""The error middleware: request ids, each face's error shape, rate-limit headers.

Every response leaves through here, so every response has an `X-Request-ID`, every error
has the shape of its route's face, and nothing internal (a traceback, SQL, a class name)
reaches a client: anything unexpected is logged with the request id and answered as an
opaque 500.
"""

from __future__ import annotations

import logging
import re
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from service.core import logs
from service.core.errors import BACKEND_DOWN, ApiError, Unavailable
from service.web.route import MAILAPI, Face
from service.web.state import RATE, REQUEST_ID, ROUTES

log = logging.getLogger("mailprov.web")

CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# what aiohttp raises itself, in the contract's words
HTTP_REASONS = {
    404: "Not found.",
    405: "Method not allowed.",
    413: "Request body too large.",
}


def face_of(request: web.Request) -> Face:
    """The face of the request's route; the MailAPI's for what matched no route."""
    route = request.app[ROUTES].get(request.match_info.route.name or "")
    return route.policy.face if route is not None and route.policy is not None else MAILAPI


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    sent = request.headers.get("X-Request-ID", "")
    request_id = sent if CLIENT_REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
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
