"""The worker process: arq's settings, and the resources its jobs share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from arq import cron
from arq.worker import Function, func

from service.core import presence
from service.core.db import Database
from service.core.errors import BACKEND_DOWN
from service.core.passwords import Hasher
from service.core.redisconn import follow_master, redis_settings
from service.core.settings import Settings
from service.core.tasks import TASK_TYPES, job_name
from worker import context as job_context
from worker import domain_dns, sweeper, webhooks
from worker.health import check_hashing, watch_hashing
from worker.jobs import BODIES, run_task
from worker.metrics import WorkerMetrics
from worker.observe import bind_job, observed
from worker.polling import Worker
from worker.retention import purge_expired

log = logging.getLogger("mailprov.worker")

if set(BODIES) != set(TASK_TYPES):  # one list of task types: the worker runs each of them
    raise RuntimeError(f"task types without a job body: {set(TASK_TYPES) ^ set(BODIES)}")

# one arq function per task type, all running the same job: the task row picks its body
FUNCTIONS: list[Function] = [
    func(observed(run_task, job_name(t)), name=job_name(t))  # type: ignore[arg-type]
    for t in TASK_TYPES]


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    # + the webhook senders, each holding its delivery's connection while it sends
    db = await Database.connect(settings.database_url, min_size=1,
                                max_size=settings.worker_max_jobs + 2 + webhooks.SENDERS)
    # a caller (the supervisor, a test) may lend a pool it keeps warm
    hasher = ctx.get("hasher") or Hasher(settings.argon2_time_cost, settings.argon2_memory_kib,
                                         settings.hash_processes)
    metrics = WorkerMetrics()
    ctx[job_context.KEY] = job_context.JobContext(settings, db, ctx["redis"], hasher, metrics)
    if settings.worker_metrics_port:
        try:
            ctx["metrics_server"] = metrics.serve(settings.worker_metrics_port, settings.host)
        except OSError as exc:
            # metrics are not worth stopping the work for; the line says what to change
            log.error("worker metrics off: port %s: %s (set MAILPROV_WORKER_METRICS_PORT "
                      "per worker)", settings.worker_metrics_port, exc.strerror)
    if "worker_id" in ctx:
        await presence.register(ctx["redis"], settings, ctx["worker_id"])
        # beside arq's polling: the sweeper (it frees the tasks of dead workers, so a queue
        # they block cannot starve it) and the check of the hashing pool; each runs once
        # now, so a worker starts with the queue repaired and its probe answered
        hashing = await check_hashing(ctx)
        await sweeper.take_turn(ctx)
        ctx["background"] = [asyncio.create_task(sweeper.run(ctx), name="sweeper"),
                             asyncio.create_task(webhooks.run(ctx[job_context.KEY]),
                                                 name="webhooks"),
                             asyncio.create_task(watch_hashing(ctx, hashing),
                                                 name="hashing-check"),
                             # through Sentinel: onto a new master within a second
                             asyncio.create_task(follow_master(ctx["redis"]),
                                                 name="follow-master")]


async def shutdown(ctx: dict[str, Any]) -> None:
    background = ctx.pop("background", [])
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    if "worker_id" in ctx:
        # Redis going away may be why the worker stops: the rest must be closed all the same
        with contextlib.suppress(*BACKEND_DOWN):
            await presence.unregister(ctx["redis"], ctx["settings"], ctx["worker_id"])
        if job_context.KEY in ctx:
            await sweeper.give_up_turn(ctx)
    if "metrics_server" in ctx:
        await WorkerMetrics.stop(ctx.pop("metrics_server"))
    job = ctx.pop(job_context.KEY, None)
    if job is not None:
        await job.db.close()
        if "hasher" not in ctx:  # its own, not lent
            job.hasher.close()


def worker_options(settings: Settings, **overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "functions": FUNCTIONS,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "on_job_start": bind_job,
        # the task row is the result; arq's copy would only fill Redis
        "keep_result": 0,
        # every ten minutes: a day's retention is met to within minutes. An arq cron job,
        # named after the queue (arq's cron job ids are global to a Redis): unlike the
        # sweeper it repairs nothing, so waiting behind the queue costs nothing
        "cron_jobs": [cron(purge_expired, name=f"{settings.queue_name}:retention",
                           minute=set(range(0, 60, 10)), second=30, unique=True,
                           timeout=min(300, settings.worker_job_timeout_s)),
                     # verified domains rechecked, DKIM keys past their grace period
                     # deleted (worker/domain_dns.py); checks are due after hours, so
                     # every ten minutes finds them soon enough
                     cron(domain_dns.recheck, name=f"{settings.queue_name}:dns-recheck",
                          minute=set(range(5, 60, 10)), second=0, unique=True,
                          timeout=min(300, settings.worker_job_timeout_s))],
        "queue_name": settings.queue_name,
        "redis_settings": redis_settings(settings.redis_url, conn_retries=30),
        "poll_delay": settings.worker_poll_delay_s,
        "max_jobs": settings.worker_max_jobs,
        "job_timeout": settings.worker_job_timeout_s,
        # one more than ours: the run past the limit is the one that fails the task
        # (jobs._attempt); arq on its own would drop the job and leave the task unfinished
        "max_tries": settings.worker_max_tries + 1,
        # on SIGTERM (worker/supervisor.py): no new jobs, this long for running ones
        "job_completion_wait": settings.worker_shutdown_grace_s,
        # the health key is also the heartbeat that holds the worker's leases
        "health_check_interval": settings.worker_health_check_interval_s,
        "ctx": {"settings": settings},
    }
    options.update(overrides)
    return options


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    # a health key per worker (service/core/presence.py says why), named in the registry
    worker_id = presence.new_worker_id()
    overrides.setdefault("health_check_key", presence.health_key(settings, worker_id))
    worker = Worker(**worker_options(settings, **overrides))
    worker.ctx["worker_id"] = worker_id
    return worker
