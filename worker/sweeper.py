"""The sweeper: the outbox's other half. It re-enqueues tasks whose job Redis lost (still
`queued` after a few seconds) and tasks whose worker died (`processing` with no sign of
life for longer than a job may run, plus a margin). Enqueueing is idempotent (job id =
task id), so a task whose job is merely waiting in the queue is left as it is; so is one
whose worker died while arq still holds its job (arq runs it again once the job's
in-progress mark expires, job timeout + 10 s after it started).

It also deletes expired Idempotency-Key records, and the secrets failed tasks kept for a
retry once they have kept them long enough."""

from __future__ import annotations

import logging
from typing import Any

from service.core.queue import enqueue
from service.core.settings import IDEMPOTENCY_TTL_S
from worker.context import context

log = logging.getLogger("mailprov.sweeper")

BATCH = 1000


async def sweep(ctx: dict[str, Any]) -> int:
    job = context(ctx)
    settings = job.settings
    silent_for = settings.worker_job_timeout_s + settings.sweep_processing_margin_s
    stale = await job.db.stale_tasks(queued_after_s=float(settings.sweep_queued_after_s),
                                     silent_for_s=float(silent_for), limit=BATCH)
    requeued = 0
    for task in stale:
        requeued += await enqueue(job.redis, task["id"], task["type"])
    if stale:
        log.info("sweeper: %s stale tasks, %s enqueued again", len(stale), requeued)
    await job.db.delete_expired_idempotency_keys(ttl_s=IDEMPOTENCY_TTL_S, limit=BATCH)
    await job.db.erase_kept_secrets(after_s=settings.failed_task_secrets_ttl_s, limit=BATCH)
    return requeued
