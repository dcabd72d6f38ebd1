"""Recording tasks, and the endpoints that poll them.

Polling reads Postgres only (never the arq result store); generated passwords come from
Redis, where they expire.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service import formats, idempotency
from service.access import limit, load_authenticated, resolve
from service.errors import TaskFailed, TaskNotFound, TaskTypeMismatch
from service.schemas import TaskQuery
from service.state import ARQ, SETTINGS

TASK_QUERY = TaskQuery()


async def submit(request: web.Request, account_id: int, task_type: str, domain: str,
                 payload: dict[str, Any], total: int | None = None) -> int:
    """Commit the task row, then enqueue its job: the client hears of a task only once it
    is durable. Under an Idempotency-Key the row commits with the key, and the job is
    enqueued after that."""
    items = payload.get("items") or payload.get("names") or ()
    task_id = await idempotency.queries(request).fetchval(
        "create_task", account_id, task_type, domain, payload,
        total if total is not None else len(items),
    )
    await idempotency.enqueue_task(request, task_id, task_type)
    return task_id


def passwords_key(prefix: str, task_id: int) -> str:
    """Redis hash of a task's generated passwords, address -> password, with a TTL."""
    return f"{prefix}pw:{task_id}"


async def _task(request: web.Request, types: tuple[str, ...] | None) -> web.Response:
    key = request.query.get("key")
    query = await load_authenticated(request, key, TASK_QUERY, request.query)
    task = await resolve(request, key, "resolve_key_with_task", query["task_id"])
    await limit(request, task["account_id"], "get")
    if task["id"] is None:
        raise TaskNotFound
    if types is not None and task["type"] not in types:
        raise TaskTypeMismatch
    passwords: dict[str, str] = {}
    if any(item.get("generated") for item in task["results"].values()):
        key = passwords_key(request.app[SETTINGS].redis_prefix, task["id"])
        stored = await request.app[ARQ].hgetall(key)  # type: ignore[misc]
        passwords = {k.decode(): v.decode() for k, v in stored.items()}
    body = formats.task_body(task, passwords)
    if types is None:
        body["type"] = task["type"]
    if task["status"] == "failed":
        raise TaskFailed(task["error"], Task_id=body["Task_id"], task_id=body["task_id"],
                         domain=body["domain"], results=body["results"],
                         **({"type": task["type"]} if types is None else {}))
    return web.json_response(body)


async def get_mailbox_single(request: web.Request) -> web.Response:
    return await _task(request, ("mailbox_single",))


async def get_mailbox_bulk(request: web.Request) -> web.Response:
    return await _task(request, ("mailbox_bulk",))


async def get_task(request: web.Request) -> web.Response:
    return await _task(request, None)
