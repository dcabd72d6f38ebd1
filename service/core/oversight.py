"""What operators see of the queue and its tasks, and what they can do about it.

The queue page (`/ops`), the metrics gauges and the `mailprov queue` / `mailprov tasks`
commands all read through here, so they always agree. Every figure comes from an index:
the page refreshes every few seconds and a scraper every few more, against a tasks table
that only grows.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import Redis

from service.core import presence
from service.core.db import Database
from service.core.logs import SECRET_FIELD
from service.core.queue import enqueue
from service.core.settings import Settings
from service.core.tasks import CREATED

HIDDEN = "[hidden]"
DURATION = re.compile(r"(\d+)([smhd])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass
class QueueSummary:
    """The queue at a glance."""

    depth: int  # jobs in the arq queue, deferred ones included
    deferred: int  # of those, jobs due later: retries in their backoff
    queued: int  # tasks waiting in Postgres (each with its job, unless Redis lost it)
    processing: int
    failed: int  # failed tasks not retried (yet)
    oldest_queued_age_s: float | None
    workers: list[presence.WorkerState]
    completed_last_hour: int
    failed_last_hour: int
    # per minute over the last hour, oldest first: (minute, completed, failed)
    per_minute: list[tuple[datetime, int, int]] = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["workers_alive"] = len(self.workers)
        data["per_minute"] = [{"minute": m.isoformat(), "completed": c, "failed": f}
                              for m, c, f in self.per_minute]
        return data


async def summary(db: Database, redis: Redis, settings: Settings) -> QueueSummary:
    counts = await db.queue_counts()
    per_minute = [(r["minute"], r["completed"], r["failed"])
                  for r in await db.finished_per_minute()]
    age = counts["oldest_queued_s"]
    # arq scores a job by when it is due, in ms
    due_later = await redis.zcount(settings.queue_name, f"({time.time() * 1000:.0f}", "+inf")
    return QueueSummary(
        depth=await redis.zcard(settings.queue_name), deferred=due_later,
        queued=counts["queued"], processing=counts["processing"], failed=counts["failed"],
        oldest_queued_age_s=None if age is None else max(float(age), 0.0),
        workers=await presence.alive(redis, settings),
        completed_last_hour=sum(c for _, c, _ in per_minute),
        failed_last_hour=sum(f for _, _, f in per_minute),
        per_minute=per_minute,
    )


def parse_duration(text: str) -> int:
    """Seconds in `90s`, `15m`, `1h`, `2d` or `1h30m`."""
    parts = DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration like 30m, 1h or 2d")
    return sum(int(n) * UNITS[u] for n, u in parts)


async def list_tasks(db: Database, *, status: str | None = None, since_s: int | None = None,
                     account_id: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Newest first; `since_s`: changed (created, run or finished) that recently."""
    rows = await db.ops_list_tasks(status=status,
                                   since_s=None if since_s is None else float(since_s),
                                   account_id=account_id, limit=limit)
    return [dict(r) for r in rows]


async def recent_failures(db: Database, limit: int = 20) -> list[dict[str, Any]]:
    return [dict(r) for r in await db.recent_failures(limit=limit)]


def public_payload(value: Any) -> Any:
    """`value` with every secret-like field's value hidden (the mailboxes' password hashes),
    at any depth."""
    if isinstance(value, dict):
        return {k: HIDDEN if SECRET_FIELD.search(k) else public_payload(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [public_payload(v) for v in value]
    return value


async def task_detail(db: Database, redis: Redis, settings: Settings,
                      task_id: int) -> dict[str, Any] | None:
    """One task as an operator sees it: no secrets, but everything needed to say why."""
    row = await db.ops_get_task(task_id=task_id)
    if row is None:
        return None
    task = dict(row)
    task["payload"] = public_payload(task["payload"])
    # generated passwords live in Redis for their TTL; an operator sees only that one was
    task["results"] = {name: {k: v for k, v in item.items() if k in ("status", "generated")}
                       for name, item in task["results"].items()}
    task["in_queue"] = await redis.zscore(settings.queue_name, str(task_id)) is not None
    started, finished = task["started_at"], task["finished_at"]
    task["waited_s"] = (started - task["created_at"]).total_seconds() if started else None
    task["ran_s"] = (finished - started).total_seconds() if started and finished else None
    return task


class RetryRefused(Exception):
    """The task cannot be retried; the message says why."""


class NoSuchTask(RetryRefused):
    """There is no task with that id."""


async def retry_task(db: Database, arq: ArqRedis, task_id: int) -> bool:
    """Put a failed task back in the queue; False when only Postgres has it so far (Redis
    is down: the sweeper enqueues it when Redis is back).

    Items already created are kept, the rest are tried again: jobs are idempotent, so
    re-running is safe even if the failure was half-way through a batch. The task's
    attempts start again from 0.
    """
    # the one item status a retry keeps: the item exists, running it again changes nothing
    row = await db.retry_task(task_id=task_id, keep=CREATED)
    if row is None:
        status = await db.task_status(task_id=task_id)
        if status is None:
            raise NoSuchTask(f"no task {task_id}")
        if status == "failed":
            raise RetryRefused(f"task {task_id} cannot be retried: the passwords its client "
                               "supplied were erased (MAILPROV_FAILED_TASK_SECRETS_TTL_S); "
                               "send the request again")
        raise RetryRefused(f"task {task_id} is {status}; only a failed task can be retried")
    return await enqueue(arq, task_id, row["type"])


def age(seconds: float | None) -> str:
    """`18 ms`, `4.2 s`, `42 s`, `7 min`, `3.5 h`, `2.0 d`; `-` for none."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def when(moment: datetime | None) -> str:
    """A moment in UTC to the second; `-` for none."""
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
