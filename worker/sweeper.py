"""The sweeper: the outbox's other half, and the keeper of leases.

A task that a worker starts is leased to it (`tasks.worker_id`, set by `start_task`) for
as long as the worker's heartbeat, its health key, lives (service/core/presence.py). Each
sweep:

- frees the tasks of workers whose heartbeat is gone (kill -9, a lost host, a supervisor
  restart after Redis went away): back to `queued`, arq's in-progress mark of each job
  dropped and the job queued again, so they run again within seconds instead of after
  arq's job timeout. A live worker's task is never taken, however long it runs
  (procrastinate's stalled jobs and Sidekiq's super_fetch work the same way);
- re-enqueues tasks still `queued` after `sweep_queued_after_s` (Redis lost their job, or
  a worker died after it took the job and before it started the task, leaving arq's mark);
- re-enqueues tasks `processing` with no write for the job timeout plus a margin: a run
  that arq dropped while its worker lived on (a job timeout, arq's tries used up);
- deletes expired Idempotency-Key records, and the secrets failed tasks kept for a
  retry once they have kept them long enough;
- sends the doveadm kicks still due (worker/kicks.py).

Enqueueing is idempotent (job id = task id), so a task whose job is merely waiting in the
queue is left as it is.

The sweeper runs beside arq's polling, not as an arq job: a queue it repairs could not
starve it, nor could a worker busy with `max_jobs` long tasks. Every worker runs the loop;
a Redis lock taken for one interval (`{prefix}sweeper`) lets one of them sweep at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from service.core import presence
from service.core.errors import BACKEND_DOWN
from service.core.queue import enqueue_tasks, release
from service.core.settings import IDEMPOTENCY_TTL_S
from worker import kicks
from worker.context import JobContext, context

log = logging.getLogger("mailprov.sweeper")

BATCH = 1000
# a sweep that takes longer than this (Postgres or Redis hanging) is given up on
SWEEP_TIMEOUT_S = 60.0

# drop the turn only if it is still ours
RELEASE_TURN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def turn_key(job: JobContext) -> str:
    return f"{job.settings.redis_prefix}sweeper"


async def sweep(ctx: dict[str, Any]) -> int:
    """One sweep; how many tasks it enqueued again."""
    job = context(ctx)
    settings = job.settings
    freed = await _free_stopped_workers_tasks(job)
    silent_for = settings.worker_job_timeout_s + settings.sweep_processing_margin_s
    stale = await job.db.stale_tasks(queued_after_s=float(settings.sweep_queued_after_s),
                                     silent_for_s=float(silent_for), limit=BATCH)
    # a queued task's job may carry the in-progress mark of a worker that died after it
    # took the job and before its start_task: that worker held no lease. A live worker
    # starts its task within milliseconds of marking the job, so a mark this old is a
    # dead worker's (arq's marks live for the job timeout + 10 s)
    await release(job.redis, settings.queue_name, [t["id"] for t in stale],
                  marked_for_s=settings.sweep_queued_after_s,
                  mark_life_s=settings.worker_job_timeout_s + 10)
    enqueued = await enqueue_tasks(job.redis, [(t["id"], t["type"]) for t in stale])
    requeued = len(stale) if enqueued else 0
    if stale:
        log.info("sweeper: %s stale tasks, %s enqueued again", len(stale), requeued)
    await job.db.delete_expired_idempotency_keys(ttl_s=IDEMPOTENCY_TTL_S, limit=BATCH)
    await job.db.erase_kept_secrets(after_s=settings.failed_task_secrets_ttl_s, limit=BATCH)
    await kicks.sweep(settings, job.db)
    return freed + requeued


async def _free_stopped_workers_tasks(job: JobContext) -> int:
    stopped = await presence.stopped(job.redis, job.settings, await job.db.leaseholders())
    if not stopped:
        return 0
    # one transaction: if Redis fails half-way, the tasks stay leased and the next sweep
    # frees them again. A worker that takes a released job meanwhile waits for the commit
    # in its start_task, then leases the task to itself.
    async with job.db.transaction() as store:
        freed = await store.free_tasks(worker_ids=stopped)
        await release(job.redis, job.settings.queue_name, [t["id"] for t in freed])
        # a job Redis lost is made afresh
        await enqueue_tasks(job.redis, [(t["id"], t["type"]) for t in freed])
    if freed:
        log.warning("sweeper: %s tasks of %s stopped workers (%s) queued again",
                    len(freed), len(stopped), ", ".join(stopped))
    return len(freed)


async def take_turn(ctx: dict[str, Any]) -> bool:
    """Sweep if no other worker has this interval; whether this one did."""
    job = context(ctx)
    every_ms = job.settings.sweep_interval_s * 1000
    try:
        if not await job.redis.set(turn_key(job), ctx["worker_id"], nx=True, px=every_ms):
            return False
        await asyncio.wait_for(sweep(ctx), SWEEP_TIMEOUT_S)
    except BACKEND_DOWN as exc:
        # the worker goes on: the next sweep tries again (Redis gone stops arq's loop anyway)
        log.warning("sweep failed: Postgres or Redis unavailable (%s)", type(exc).__name__)
        return False
    except Exception:
        log.exception("sweep failed")
        return False
    return True


async def run(ctx: dict[str, Any]) -> None:
    """The worker's sweeper loop (its first sweep ran at startup)."""
    every = context(ctx).settings.sweep_interval_s
    while True:
        await asyncio.sleep(every)
        await take_turn(ctx)


async def give_up_turn(ctx: dict[str, Any]) -> None:
    """At shutdown: the next worker need not wait for this one's interval to end."""
    job = context(ctx)
    with contextlib.suppress(Exception):
        await job.redis.register_script(RELEASE_TURN)(keys=[turn_key(job)],
                                                      args=[ctx["worker_id"]])
