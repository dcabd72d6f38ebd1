"""Handing tasks to the workers. The task row in Postgres is the record (an outbox): the
arq job only carries the task id, and its job id is the task id, so a task is queued at
most once however often it is enqueued.

A job is written as arq's `enqueue_job` writes it (its serializer, key, expiry and queue
score), but by one script: arq's WATCH, EXISTS and MULTI/EXEC are three round trips, and
an accepted write also counts against its rate limit in the same script.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from weakref import WeakKeyDictionary

import redis.exceptions
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.commands.core import AsyncScript

from service.core import ratelog
from service.core.tasks import job_name

log = logging.getLogger("mailprov.queue")


# KEYS: the job's key, its result's key, the queue[, a rate-limit log]; ARGV: the job's
# expiry (ms), the job, its score (ms), its id[, the log's window (ms), the limit, a
# member]. The job is written unless it or its result exists. With a log, the request is
# counted first, and a refused one writes nothing. -> {queued (1/0), allowed, remaining,
# reset ms, now ms} (the last three 0 without a log)
ENQUEUE = ratelog.COUNT + """
local decision = {1, 0, 0, 0}
if #KEYS == 4 then
    decision = count(KEYS[4], tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7])
    if decision[1] == 0 then return {0, 0, decision[2], decision[3], decision[4]} end
end
local queued = 0
if redis.call('EXISTS', KEYS[1], KEYS[2]) == 0 then
    redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
    redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
    queued = 1
end
return {queued, decision[1], decision[2], decision[3], decision[4]}
"""

_scripts: WeakKeyDictionary[ArqRedis, AsyncScript] = WeakKeyDictionary()


async def _enqueue(arq: ArqRedis, task_id: int, task_type: str,
                   rate: tuple[str, int, int, str] | None) -> list[int]:
    script = _scripts.get(arq)
    if script is None:
        script = _scripts[arq] = arq.register_script(ENQUEUE)
    job_id = str(task_id)
    now = timestamp_ms()
    job = serialize_job(job_name(task_type), (task_id,), {}, None, now,
                        serializer=arq.job_serializer)
    keys = [job_key_prefix + job_id, result_key_prefix + job_id, arq.default_queue_name]
    args: list[str | int | bytes] = [arq.expires_extra_ms, job, now, job_id]
    if rate is not None:
        key, window_ms, limit, member = rate
        keys.append(key)
        args += [window_ms, limit, member]
    return [int(x) for x in await script(keys=keys, args=args)]


async def enqueue(arq: ArqRedis, task_id: int, task_type: str) -> bool:
    """Queue the task's job. False when Redis is unreachable: the task is recorded all the
    same, and the worker's sweeper enqueues it once Redis is back."""
    try:
        await _enqueue(arq, task_id, task_type, None)
    except (OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        log.warning("task %s recorded but not enqueued (%s); the sweeper will retry",
                    task_id, type(exc).__name__)
        return False
    return True


async def enqueue_counted(arq: ArqRedis, task_id: int, task_type: str, rate_key: str,
                          window_ms: int, limit: int, member: str) -> tuple[bool, int, int, int]:
    """Count a request in the rate-limit log `rate_key` and, when it is allowed, queue
    its task's job: one round trip. (allowed, remaining, reset ms, now ms); a refused
    request queues nothing. Redis' errors propagate: the caller has not answered yet."""
    _, allowed, remaining, reset, now = await _enqueue(
        arq, task_id, task_type, (rate_key, window_ms, limit, member))
    return bool(allowed), remaining, reset, now


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

