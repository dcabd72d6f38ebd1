"""The sweeper: the outbox's other half. It re-enqueues tasks whose job Redis lost (still
`queued` after a few seconds) and tasks whose worker died (`processing` with no sign of
life for longer than a job may run). Enqueueing is idempotent (job id = task id), so a
task whose job is merely waiting in the queue is left as it is."""

from __future__ import annotations

import logging
from typing import Any

from service.db import Database
from service.queue import enqueue
from service.settings import Settings

log = logging.getLogger("mailprov.sweeper")

BATCH = 1000
# a running job writes at least once per chunk; give a slow one this much slack
PROCESSING_MARGIN_S = 30


async def sweep(ctx: dict[str, Any]) -> int:
    db: Database = ctx["db"]
    settings: Settings = ctx["settings"]
    stale = await db.fetch("stale_tasks", float(settings.sweep_queued_after_s),
                           float(settings.worker_job_timeout_s + PROCESSING_MARGIN_S), BATCH)
    requeued = 0
    for task in stale:
        requeued += await enqueue(ctx["redis"], task["id"], task["type"])
    if stale:
        log.info("sweeper: %s stale tasks, %s enqueued again", len(stale), requeued)
    return requeued
