"""The worker process: arq settings, and the resources its jobs share."""

from __future__ import annotations

from typing import Any

from arq import cron
from arq.worker import Worker

from service.db import Database
from service.passwords import Hasher
from service.queue import redis_settings
from service.settings import Settings
from worker import jobs
from worker.sweeper import sweep


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    ctx["db"] = await Database.connect(settings.database_url, min_size=1,
                                       max_size=settings.worker_max_jobs + 2)
    # a caller (a test, the dev runner) may lend a pool it keeps warm
    ctx.setdefault("hasher", Hasher(settings.argon2_time_cost, settings.argon2_memory_kib,
                                    settings.hash_processes))


async def shutdown(ctx: dict[str, Any]) -> None:
    if "db" in ctx:
        await ctx["db"].close()
    if not ctx.get("hasher_lent") and "hasher" in ctx:
        ctx["hasher"].close()


class WorkerSettings:
    """What every worker runs; `worker_options` adds what comes from Settings."""

    functions = [jobs.provision_domain, jobs.provision_sub_domain,
                 jobs.provision_mailbox_single, jobs.provision_mailbox_bulk]
    on_startup = startup
    on_shutdown = shutdown
    # the task row is the result; arq's copy would only fill Redis
    keep_result = 0


def worker_options(settings: Settings, **overrides: Any) -> dict[str, Any]:
    every = settings.sweep_interval_s
    options: dict[str, Any] = {
        "functions": WorkerSettings.functions,
        "on_startup": WorkerSettings.on_startup,
        "on_shutdown": WorkerSettings.on_shutdown,
        "keep_result": WorkerSettings.keep_result,
        # named after the queue: arq's cron job ids are global to a Redis, and two
        # installations (or test runs) sharing one must each get their sweep
        "cron_jobs": [cron(sweep, name=f"{settings.queue_name}:sweep",
                           second=set(range(0, 60, every)), run_at_startup=True, unique=True,
                           timeout=60)],
        "queue_name": settings.queue_name,
        "redis_settings": redis_settings(settings.redis_url, conn_retries=30),
        "poll_delay": settings.worker_poll_delay_s,
        "max_jobs": settings.worker_max_jobs,
        "job_timeout": settings.worker_job_timeout_s,
        "max_tries": settings.worker_max_tries,
        "health_check_interval": settings.worker_health_check_interval_s,
        "ctx": {"settings": settings},
    }
    options.update(overrides)
    return options


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    return Worker(**worker_options(settings, **overrides))
