"""Handing tasks to the workers. The task row in Postgres is the record (an outbox): the
arq job only carries the task id, and its job id is the task id, so a task is queued at
most once however often it is enqueued."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import redis.exceptions
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix

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


# For each job: drop arq's in-progress mark (only one set at least ARGV[2] ms ago, when that
# is not -1: a mark's age is its full life less what is left of it), and put the job back
# in the queue when Redis still holds it but not its queue entry. KEYS: the queue, then n
# marks, then n job keys; ARGV: now (ms), the age, the mark's full life (ms), the n ids.
RELEASE = """
local n = (#KEYS - 1) / 2
local now, age, life = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, n do
    local id = ARGV[i + 3]
    local left = redis.call('PTTL', KEYS[1 + i])
    if left >= 0 and (age < 0 or life - left >= age) then
        redis.call('DEL', KEYS[1 + i])
    end
    if redis.call('EXISTS', KEYS[1 + n + i]) == 1 and not redis.call('ZSCORE', KEYS[1], id) then
        redis.call('ZADD', KEYS[1], now, id)
    end
end
return n
"""


async def release(arq: ArqRedis, queue_name: str, task_ids: Sequence[int], *,
                  marked_for_s: float | None = None, mark_life_s: float = 0) -> None:
    """Free the jobs of tasks nobody runs: arq would not run them again until their
    in-progress marks expired (the job timeout + 10 s, `mark_life_s`, after they started).
    With `marked_for_s`, only marks set at least that long ago go. A job Redis lost
    altogether is not made here: `enqueue` does that."""
    if not task_ids:
        return
    ids = [str(t) for t in task_ids]
    keys = [queue_name, *(in_progress_key_prefix + i for i in ids),
            *(job_key_prefix + i for i in ids)]
    age_ms = -1 if marked_for_s is None else int(marked_for_s * 1000)
    await arq.register_script(RELEASE)(keys=keys, args=[
        int(time.time() * 1000), age_ms, int(mark_life_s * 1000), *ids])

