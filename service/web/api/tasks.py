"""MailAPI handlers that poll a task.

Polling reads Postgres only (never the arq result store); generated passwords come from
Redis, where they expire. While Redis is unreachable a task still running is shown from
Postgres, its generated passwords not yet (null); a finished task whose generated
passwords Redis holds answers 503 until Redis is back, rather than a final answer whose
passwords look expired.
"""

from __future__ import annotations

from aiohttp import web

from service.core.errors import (
    BACKEND_DOWN,
    InvalidApiKey,
    TaskFailed,
    TaskNotFound,
    TaskTypeMismatch,
)
from service.core.store import Row
from service.core.tasks import UNFINISHED, passwords_key
from service.web.api import formats
from service.web.call import Call
from service.web.state import ARQ, DB, SETTINGS, WAITERS


async def generated_passwords(call: Call, task: Row) -> dict[str, str]:
    """The task's generated passwords still within their TTL, by address (a read of Redis
    only when the task generated any)."""
    if not any(item.get("generated") for item in task["results"].values()):
        return {}
    key = passwords_key(call.app[SETTINGS].redis_prefix, task["id"])
    try:
        stored = await call.app[ARQ].hgetall(key)  # type: ignore[misc]
    except BACKEND_DOWN:
        # while Redis is away a running task's poll still answers (its passwords show as
        # null for now); a finished task's answers 503, as null would read as expired
        if task["status"] not in UNFINISHED:
            raise
        stored = {}
    return {k.decode(): v.decode() for k, v in stored.items()}


async def waited(call: Call) -> Row:
    """The task the route's lookup found; with `wait=N`, an unfinished one once it has
    finished or its progress moved, or N seconds passed, read again (the key too: one
    revoked meanwhile stops working). Waiting holds no connection and runs no query."""
    task = call.found
    assert task is not None  # the route's lookup
    wait = call.data.get("wait", 0)
    if not wait or task["status"] not in UNFINISHED:
        return task
    await call.app[WAITERS].wait(task["id"], task["progress_done"], wait)
    fresh = await call.app[DB].resolve_key_with_task(key_hash=call.key_hash,
                                                      task_id=task["id"])
    if fresh is None:
        raise InvalidApiKey
    if fresh["id"] is None:
        raise TaskNotFound
    return fresh


async def _task(call: Call, types: tuple[str, ...] | None) -> web.Response:
    assert call.found is not None  # the route's lookup
    if types is not None and call.found["type"] not in types:
        raise TaskTypeMismatch
    task = await waited(call)
    body = formats.task_body(task, await generated_passwords(call, task))
    if types is None:
        body["type"] = task["type"]
    if task["status"] == "failed":
        raise TaskFailed(task["error"], Task_id=body["Task_id"], task_id=body["task_id"],
                         domain=body["domain"], results=body["results"],
                         **({"type": task["type"]} if types is None else {}))
    return web.json_response(body)


async def get_mailbox_single(call: Call) -> web.Response:
    return await _task(call, ("mailbox_single",))


async def get_mailbox_bulk(call: Call) -> web.Response:
    return await _task(call, ("mailbox_bulk",))


async def get_task(call: Call) -> web.Response:
    return await _task(call, None)
