"""The sweeper: the outbox's other half. It re-enqueues tasks whose job Redis lost (still
`queued` after a few seconds) and tasks whose worker died (`processing` with no sign of
life for longer than a job may run, plus a margin). Enqueueing is idempotent (job id =
task id), so a task whose job is merely waiting in the queue is left as it is; so is one
whose worker died while arq still holds its job (arq runs it again once the job's
in-progress mark expires, job timeout + 10 s after it started).

It also deletes expired Idempotency-Key records."""

from __future__ import annotations

import logging
from typing import Any

from service import idempotency
from service.db import Database
from service.queue import enqueue
from service.settings import Settings

log = logging.getLogger("mailprov.sweeper")

BATCH = 1000


async def sweep(ctx: dict[str, Any]) -> int:
    db: Database = ctx["db"]
    settings: Settings = ctx["settings"]
    silent_for = settings.worker_job_timeout_s + settings.sweep_processing_margin_s
    stale = await db.fetch("stale_tasks", float(settings.sweep_queued_after_s),
                           float(silent_for), BATCH)
    requeued = 0
    for task in stale:
        requeued += await enqueue(ctx["redis"], task["id"], task["type"])
    if stale:
        log.info("sweeper: %s stale tasks, %s enqueued again", len(stale), requeued)
    await db.execute("delete_expired_idempotency_keys", idempotency.TTL_S, BATCH)
    return requeued
