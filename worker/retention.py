"""Retention: soft-deleted domains, mailboxes and aliases are removed for good once they
have been deleted for MAILPROV_RETENTION_DAYS. Until then their names stay taken, so a
freed address is never handed to someone new while old mail may still sit on disk.

A cron job of every worker (arq runs one at a time per queue), in batches: each batch is
one short statement, and SKIP LOCKED lets several workers, or a restore in progress,
share the rows without waiting. Mailboxes and aliases go before their domains, which
are removed only once nothing is left under them.
"""

from __future__ import annotations

import logging
from typing import Any

from worker.context import context

log = logging.getLogger("mailprov.retention")

BATCH = 1000
# batches of each kind per run: a backlog is worked off over a few runs, not in one long one
ROUNDS = 50


async def purge_expired(ctx: dict[str, Any]) -> int:
    """Remove rows past the retention, at most ROUNDS batches of each kind; how many."""
    job = context(ctx)
    db, days = job.db, job.settings.retention_days
    removed = 0
    for _ in range(ROUNDS):
        batch = (await db.purge_expired_mailboxes(days=days, limit=BATCH)
                 + await db.purge_expired_aliases(days=days, limit=BATCH)
                 + await db.purge_expired_domains(days=days, limit=BATCH))
        removed += batch
        if not batch:
            break
    if removed:
        log.info("retention: %s rows deleted more than %s days ago removed", removed, days)
    return removed
