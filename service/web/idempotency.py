"""`Idempotency-Key` on the create endpoints, so a client can repeat a POST safely.

Stripe's semantics, and those of the IETF httpapi draft "The Idempotency-Key HTTP Header
Field":

- The header holds 1-255 printable ASCII characters (a bare token, or the draft's quoted
  string form); anything else is 422. Keys belong to an account: two accounts may use the
  same key without meeting.
- The first request with a key runs. Its response, when it succeeds, is stored with the key
  in the same transaction as the task it recorded: the task and its key commit together or
  not at all, so however a web process dies, one key never makes two tasks.
- The same key with the same request (method, path, and JSON body without `key`, compared
  by an HMAC under MAILPROV_SECRET_KEY) within 24 hours gets the stored response again,
  with `Idempotent-Replayed: true`, and creates nothing. The same key with a different
  request: 422. The same key while the first request is still being handled: 409, with
  `Retry-After`.
- Errors are not stored. Every 4xx here is decided before anything is written, and a 5xx
  rolls its transaction back, so the key stays free: the client may correct the request, or
  retry it, under the same key. (Stripe stores a 4xx once the endpoint has begun; ours
  never changes anything, and storing it would pin a transient 404 or 429 to the key.)

"In flight" is a transaction-scoped advisory lock, not a committed row: it lasts exactly as
long as the request's transaction, so a process killed mid-request leaves no key blocked.
The transaction holds one pool connection while the handler runs, and the handler may
need another for a read outside it, so at most `db_pool_max - 1` such requests run at
once: they can never take every connection and wait on each other.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from service.core import secrets
from service.core.errors import Conflict, Invalid
from service.core.queue import enqueue_tasks
from service.core.settings import IDEMPOTENCY_TTL_S
from service.web.call import Call, Recording, task_location
from service.web.state import ARQ, DB, IDEMPOTENCY_SLOTS, LIMITER, RATE, SETTINGS

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
KEY_FORMAT = re.compile(r"[\x20-\x7e]{1,255}")
FINGERPRINT_PREFIX = "hmac-sha256:"
# what schema.sql left of a fingerprint made before they were keyed: it matches any request
LEGACY_FINGERPRINT = "legacy"


class BadIdempotencyKey(Invalid):
    """Idempotency-Key must be 1 to 255 printable ASCII characters."""


class IdempotencyKeyReused(Invalid):
    """This Idempotency-Key was already used with a different request."""


class IdempotencyKeyInFlight(Conflict):
    """A request with this Idempotency-Key is still being processed; retry shortly."""


def parse_key(raw: str) -> str:
    """The key from the header: a bare token, or an sf-string (`"..."`, `\\` escapes)."""
    key = raw
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        key = re.sub(r'\\(["\\])', r"\1", raw[1:-1])
    if not KEY_FORMAT.fullmatch(key):
        raise BadIdempotencyKey(None, {HEADER: [BadIdempotencyKey().reason]})
    return key


def fingerprint(secret_key: str, method: str, path: str, body: Mapping[str, Any],
                domains: frozenset[str] | None = None) -> str:
    """What makes two requests "the same": method, path and body, less the API key (a
    repeat may authenticate with another key of the account, or with a header), and the
    domains the key is limited to: a key that does not see a domain never gets the replay
    of a request another key of the account made on it.

    An HMAC under MAILPROV_SECRET_KEY, not a plain hash: the body may hold a password, and
    a plain hash kept for 24 h would let anyone who reads the table test guesses of it at
    hash speed. (The body is at most service/web/body.py's MAX_DEPTH deep, so the
    canonical JSON never recurses far.)"""
    canonical = json.dumps({k: v for k, v in body.items() if k != "key"}, sort_keys=True,
                           separators=(",", ":"))
    scope = "*" if domains is None else ",".join(sorted(domains))
    digest = secrets.fingerprint(secret_key, f"{method} {path} {scope}\n{canonical}".encode())
    return f"{FINGERPRINT_PREFIX}{digest}"


async def run(call: Call, body: Mapping[str, Any],
              proceed: Callable[[], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Run the rest of the request (`proceed`) under the request's Idempotency-Key."""
    request, account_id = call.request, call.account_id
    key = parse_key(request.headers[HEADER])
    app = request.app
    digest = fingerprint(app[SETTINGS].secret_key, request.method, request.path, body,
                         call.key.domains)
    try:
        async with app[IDEMPOTENCY_SLOTS], app[DB].transaction() as store:
            if not await store.idempotency_lock(account_id=account_id, key=key):
                raise IdempotencyKeyInFlight(headers={"Retry-After": "1"})
            stored = await store.get_idempotency_key(account_id=account_id, key=key,
                                                     ttl_s=IDEMPOTENCY_TTL_S)
            if stored is not None:
                if stored["fingerprint"] not in (digest, LEGACY_FINGERPRINT):
                    raise IdempotencyKeyReused
                headers = {REPLAYED: "true"}
                if stored["status"] == 202 and stored["task_id"] is not None:
                    # a resource API write: its Location, as the first answer had it
                    headers["Location"] = task_location(app, stored["task_id"])
                return web.Response(text=stored["body"], status=stored["status"],
                                    content_type="application/json", headers=headers)
            recording = call.recording = Recording(store)
            # handlers raise for every error (the middleware renders it and this
            # transaction rolls back), so what returns here is a success
            response = await proceed()
            assert isinstance(response, web.Response)
            task_id = recording.jobs[0][0] if recording.jobs else None
            await store.save_idempotency_key(account_id=account_id, key=key,
                                             fingerprint=digest, status=response.status,
                                             body=response.text or "", task_id=task_id)
    except BaseException:
        # the handler's success-only slot (sub-domains) is not used up by a request whose
        # transaction did not commit; a handler that raised has given it back already,
        # and giving back twice is harmless
        decision = request.get(RATE)
        if decision is not None and decision.key:
            with contextlib.suppress(Exception):
                await app[LIMITER].release(decision)
        raise
    await enqueue_tasks(app[ARQ], recording.jobs)
    return response
