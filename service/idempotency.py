"""`Idempotency-Key` on the create endpoints, so a client can repeat a POST safely.

Stripe's semantics, and those of the IETF httpapi draft "The Idempotency-Key HTTP Header
Field":

- The header holds 1-255 printable ASCII characters (a bare token, or the draft's quoted
  string form); anything else is 422. Keys belong to an account: two accounts may use the
  same key without meeting.
- The first request with a key runs. Its response, when it succeeds, is stored with the key
  in the same transaction as the task it recorded: the task and its key commit together or
  not at all, so however a web process dies, one key never makes two tasks.
- The same key with the same request (method, path, and JSON body without `key`) within
  24 hours gets the stored response again, with `Idempotent-Replayed: true`, and creates
  nothing. The same key with a different request: 422. The same key while the first
  request is still being handled: 409, with `Retry-After`.
- Errors are not stored. Every 4xx here is decided before anything is written, and a 5xx
  rolls its transaction back, so the key stays free: the client may correct the request, or
  retry it, under the same key. (Stripe stores a 4xx once the endpoint has begun; ours
  never changes anything, and storing it would pin a transient 404 or 429 to the key.)

"In flight" is a transaction-scoped advisory lock, not a committed row: it lasts exactly as
long as the request's transaction, so a process killed mid-request leaves no key blocked.
The transaction holds one pool connection while the handler runs, and the handler needs
another for its own queries, so at most `db_pool_max - 1` such requests run at once: they
can never take every connection and wait on each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from service.access import authenticate
from service.db import Queries
from service.errors import Conflict, Invalid
from service.jsonbody import json_body
from service.queue import enqueue
from service.state import ARQ, DB, LIMITER, RATE

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
TTL_S = 24 * 3600
KEY_FORMAT = re.compile(r"[\x20-\x7e]{1,255}")

JsonHandler = Callable[[web.Request], Awaitable[web.Response]]


class BadIdempotencyKey(Invalid):
    """Idempotency-Key must be 1 to 255 printable ASCII characters."""


class IdempotencyKeyReused(Invalid):
    """This Idempotency-Key was already used with a different request."""


class IdempotencyKeyInFlight(Conflict):
    """A request with this Idempotency-Key is still being processed; retry shortly."""


@dataclass
class Recording:
    """The transaction a request's task is recorded in, and the jobs to enqueue once it
    has committed."""

    queries: Queries
    jobs: list[tuple[int, str]] = field(default_factory=list)


RECORDING = web.RequestKey("idempotency_recording", Recording)
# sized in create_app: db_pool_max - 1 (see the module docstring)
SLOTS = web.AppKey("idempotency_slots", asyncio.Semaphore)


def parse_key(raw: str) -> str:
    """The key from the header: a bare token, or an sf-string (`"..."`, `\\` escapes)."""
    key = raw
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        key = re.sub(r'\\(["\\])', r"\1", raw[1:-1])
    if not KEY_FORMAT.fullmatch(key):
        raise BadIdempotencyKey(None, {HEADER: [BadIdempotencyKey().reason]})
    return key


def fingerprint(method: str, path: str, body: dict[str, Any]) -> str:
    """What makes two requests "the same": method, path and body, less the API key (a
    repeat may authenticate with another key of the account, or with a header)."""
    canonical = json.dumps({k: v for k, v in body.items() if k != "key"}, sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def queries(request: web.Request) -> Queries:
    """Where a handler records its task: the idempotency transaction when the request has
    one, so the task and its key commit together; otherwise the pool."""
    recording = request.get(RECORDING)
    return recording.queries if recording is not None else request.app[DB]


async def enqueue_task(request: web.Request, task_id: int, task_type: str) -> None:
    """Enqueue the task's job now, or once the idempotency transaction has committed: a job
    must not look for a task row that is not visible yet."""
    recording = request.get(RECORDING)
    if recording is None:
        await enqueue(request.app[ARQ], task_id, task_type)
    else:
        recording.jobs.append((task_id, task_type))


def idempotent(handler: JsonHandler) -> JsonHandler:
    """Give a create handler `Idempotency-Key` semantics; without the header it runs as is."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.Response:
        raw = request.headers.get(HEADER)
        if raw is None:
            return await handler(request)
        body = await json_body(request)
        account_id = await authenticate(request, body.get("key"))
        key = parse_key(raw)
        digest = fingerprint(request.method, request.path, body)
        try:
            async with request.app[SLOTS], request.app[DB].pool.acquire() as conn:
                async with conn.transaction():
                    q = Queries(conn)
                    if not await q.fetchval("idempotency_lock", account_id, key):
                        raise IdempotencyKeyInFlight(headers={"Retry-After": "1"})
                    stored = await q.fetchrow("get_idempotency_key", account_id, key, TTL_S)
                    if stored is not None:
                        if stored["fingerprint"] != digest:
                            raise IdempotencyKeyReused
                        return web.Response(text=stored["body"], status=stored["status"],
                                            content_type="application/json",
                                            headers={REPLAYED: "true"})
                    recording = request[RECORDING] = Recording(q)
                    # handlers raise for every error (the middleware renders it and this
                    # transaction rolls back), so what returns here is a success
                    response = await handler(request)
                    task_id = recording.jobs[0][0] if recording.jobs else None
                    await q.execute("save_idempotency_key", account_id, key, digest,
                                    response.status, response.text, task_id)
        except BaseException:
            # the handler's success-only slot (sub-domains) is not used up by a request
            # whose transaction did not commit; a handler that raised has given it back
            # already, and giving back twice is harmless
            decision = request.get(RATE)
            if decision is not None and decision.key:
                with contextlib.suppress(Exception):
                    await request.app[LIMITER].release(decision)
            raise
        for task_id, task_type in recording.jobs:
            await enqueue(request.app[ARQ], task_id, task_type)
        return response

    return wrapper
