"""A request that has passed its route's policy: who is calling, what they sent, validated,
and where its task is recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from service.core.accounts import Grant
from service.core.queue import enqueue
from service.core.store import Row, Store
from service.web.accepts import AsRead, StaleRead
from service.web.state import ACCEPTS, ARQ, DB, KEY_USES, LIMITER, RATE, SETTINGS

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
    # `found` is what the key's lookup found for an earlier request (Lookup.reusable):
    # `submit` checks it again as it records the task
    reused: bool = False
    # the rate bucket of a write whose count waits for its task: `submit` counts it and
    # queues the job in one script
    pending_rate: str | None = None

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

    async def count(self, bucket: str | None, *, reads: bool) -> None:
        """Count the request against its account's hourly limit of `bucket` (429 when
        over); the decision's headers go on the response. A read, which needs only
        Postgres, is counted by the web process itself while Redis is unreachable."""
        if bucket is not None:
            app = self.app
            self.request[RATE] = await app[LIMITER].hit(
                self.account_id, bucket, self._hourly(bucket), local_fallback=reads)

    async def count_now(self) -> None:
        """Count a write whose count waits for its task now: before a handler records
        more than a task, which a refusal after the fact would leave behind."""
        bucket, self.pending_rate = self.pending_rate, None
        await self.count(bucket, reads=False)

    def _hourly(self, bucket: str) -> int:
        return int(getattr(self.app[SETTINGS], f"rate_{bucket}"))

    async def enqueue(self, task_id: int, task_type: str) -> None:
        """Enqueue the task's job now, or once the idempotency transaction has committed:
        a job must not look for a task row that is not visible yet."""
        assert self.pending_rate is None, "count_now() before recording more than a task"
        assert not self.reused, "a reused read is checked where its task is recorded (submit)"
        await self._queue(task_id, task_type)

    async def _queue(self, task_id: int, task_type: str) -> None:
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
        it is durable. A write whose count waited is counted in the same script as the
        enqueue; refused (or with Redis away) its task is taken back, never having been
        queued or heard of, and the request answers 429 (or 503). Requests recording
        together share their round trips (service/web/accepts.py)."""
        bucket, self.pending_rate = self.pending_rate, None
        accepts = self.app[ACCEPTS]
        if self.reused:
            assert self.found is not None
            try:
                task_id = await accepts.record(AsRead(self.key_hash, self.found, task_type,
                                                      payload, total))
            except StaleRead:
                self.app[KEY_USES].forget_found(self.key_hash, self.looked_up)
                raise
        else:
            task_id = await self.store.create_task(account_id=self.account_id,
                                                   task_type=task_type, domain=domain,
                                                   payload=payload, total=total)
        if bucket is None:
            await self._queue(task_id, task_type)
            return task_id
        limiter, limit = self.app[LIMITER], self._hourly(bucket)
        counted = await accepts.queue(limiter.job(self.account_id, bucket, limit, task_id,
                                                  task_type))
        self.request[RATE] = limiter.decision(counted, limit)
        return task_id
