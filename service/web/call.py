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

    async def submit(self, task_type: str, domain: str, payload: dict[str, Any],
                     total: int) -> int:
        """Commit the task row, then enqueue its job: the client hears of a task only once
        it is durable."""
        task_id = await self.store.create_task(account_id=self.account_id,
                                               task_type=task_type, domain=domain,
                                               payload=payload, total=total)
        await self.enqueue(task_id, task_type)
        return task_id
