"""A request that has passed its route's policy: who is calling, what they sent, validated,
and where its task is recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from service.core.accounts import Grant
from service.core.queue import enqueue
from service.core.store import Row, Store
from service.web.state import ARQ, DB

# the route a resource write's Location points at: GET /api/v1/tasks/{task_id}
TASK_ROUTE = "task"


def task_location(app: web.Application, task_id: int) -> str:
    """Where a task can be polled in the resource API."""
    return str(app.router[TASK_ROUTE].url_for(task_id=str(task_id)))


@dataclass
class Recording:
    """The transaction a request's task is recorded in under an Idempotency-Key, and the
    jobs to enqueue once it has committed."""

    store: Store
    jobs: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class Call:
    request: web.Request
    # the caller's key: its account, and what it may do
    key: Grant
    key_hash: str
    found: Row | None = None
    # the value the lookup read `found` with (None: none yet)
    looked_up: Any = None
    data: dict[str, Any] = field(default_factory=dict)
    recording: Recording | None = None

    @property
    def app(self) -> web.Application:
        return self.request.app

    @property
    def account_id(self) -> int:
        return self.key.account_id

    @property
    def store(self) -> Store:
        """Where the request records its task: the idempotency transaction when it has
        one, so the task and its key commit together; otherwise the pool."""
        return self.recording.store if self.recording is not None else self.app[DB]

    async def enqueue(self, task_id: int, task_type: str) -> None:
        """Enqueue the task's job now, or once the idempotency transaction has committed:
        a job must not look for a task row that is not visible yet."""
        if self.recording is None:
            await enqueue(self.app[ARQ], task_id, task_type)
        else:
            self.recording.jobs.append((task_id, task_type))

    def within_scope(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A bulk action's payload, with the domains of a key limited to some: the job acts
        only on items there, and reports the others `Not found.` like any not the
        account's (a lookup cannot check each item of a bulk before the task)."""
        if self.key.domains is None:
            return payload
        return {**payload, "domains": sorted(self.key.domains)}

    def accepted(self, task_id: int, msg: str, **extra: Any) -> web.Response:
        """A resource API write's answer: 202, the task to poll, and where to poll it."""
        return web.json_response({"type": "success", "msg": msg, "task_id": task_id, **extra},
                                 status=202,
                                 headers={"Location": task_location(self.app, task_id)})

    async def submit(self, task_type: str, domain: str, payload: dict[str, Any],
                     total: int) -> int:
        """Commit the task row, then enqueue its job: the client hears of a task only once
        it is durable."""
        task_id = await self.store.create_task(account_id=self.account_id,
                                               task_type=task_type, domain=domain,
                                               payload=payload, total=total)
        await self.enqueue(task_id, task_type)
        return task_id
