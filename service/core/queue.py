"""Handing tasks to the workers. The task row in Postgres is the record (an outbox): the
arq job only carries the task id, and its job id is the task id, so a task is queued at
most once however often it is enqueued."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import redis.exceptions
from arq.connections import ArqRedis, RedisSettings

from service.core.tasks import job_name

log = logging.getLogger("mailprov.queue")


async def enqueue(arq: ArqRedis, task_id: int, task_type: str) -> bool:
    """Queue the task's job. False when Redis is unreachable: the task is recorded all the
    same, and the worker's sweeper enqueues it once Redis is back."""
    try:
        await arq.enqueue_job(job_name(task_type), task_id, _job_id=str(task_id))
    # redis-py reports a connection lost during WATCH as a WatchError (arq's own WatchError,
    # a job enqueued meanwhile, is caught inside enqueue_job)
    except (OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
            redis.exceptions.WatchError) as exc:
        log.warning("task %s recorded but not enqueued (%s); the sweeper will retry",
                    task_id, type(exc).__name__)
        return False
    return True


def redis_settings(url: str, **changes: Any) -> RedisSettings:
    return dataclasses.replace(RedisSettings.from_dsn(url), **changes)
