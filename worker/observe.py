"""One log line and a count per job run.

Each job function is wrapped (`observed`): the wrapper binds the task id into the log
context, times the run, counts how it ended (worker/metrics.py) and logs one line.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from arq import Retry

from service.core import logs
from worker.context import Outcome, context

log = logging.getLogger("mailprov.worker")

Job = Callable[[dict[str, Any], int], Awaitable[Outcome]]

# what a job returns -> the counter it goes to; anything raised counts as failed
RETURNED = {"done": "completed", "already finished": "completed",
            "finished by another run": "completed", "failed": "failed"}


async def bind_job(ctx: dict[str, Any]) -> None:
    """arq's `on_job_start`: from here on, arq's own lines about the job carry its task id
    too (each job runs in an asyncio task of its own, so nothing leaks to the next)."""
    job_id = ctx.get("job_id", "")
    if job_id.isdigit():  # a task's job; the sweeper's cron jobs have names
        logs.bind(task_id=int(job_id))


def observed(job: Job, name: str | None = None) -> Job:
    """`job`, counted, timed and logged under `name` (default: its own)."""
    name = name or job.__name__
    task_type = name.removeprefix("provision_")

    @functools.wraps(job)
    async def run(ctx: dict[str, Any], task_id: int) -> Outcome:
        metrics = context(ctx).metrics
        with logs.scope(task_id=task_id, job=name, job_try=ctx.get("job_try", 1)):
            metrics.started.labels(name).inc()
            started = time.perf_counter()
            outcome: Outcome | None = None
            result = "raised"
            try:
                outcome = await job(ctx, task_id)
                result = outcome.result
                return outcome
            except Retry:
                result = "retry"
                raise
            except asyncio.CancelledError:
                result = "cancelled"  # timed out, or the worker is stopping
                raise
            finally:
                elapsed = time.perf_counter() - started
                metrics.duration.labels(name).observe(elapsed)
                fields: dict[str, Any] = {"outcome": result, "task_type": task_type,
                                          "duration_ms": round(elapsed * 1000, 1)}
                counter = "retried" if result == "retry" else RETURNED.get(result, "failed")
                if outcome is not None and outcome.status is not None:
                    # a single mailbox that already exists fails its task, yet its job ran
                    # to the end: the task's status decides the counter
                    counter = "completed" if outcome.status == "completed" else "failed"
                    fields.update(task_status=outcome.status, items_created=outcome.created,
                                  reason=outcome.reason)
                    metrics.items.labels(task_type).inc(outcome.created)
                getattr(metrics, counter).labels(name).inc()
                log.log(logging.INFO if counter == "completed" else logging.WARNING,
                        "job %s: task %s", result, fields.get("task_status", "-"),
                        extra=fields)

    return run
