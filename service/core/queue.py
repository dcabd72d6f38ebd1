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
from dataclasses import dataclass
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


# Jobs written as arq writes them, each unless it or its result exists; a job with a
# rate-limit log is counted first, and written only if allowed. KEYS: the queue, then per
# job its key, its result's key and its log (its own key again when it has none); ARGV:
# the jobs' expiry (ms), the logs' window (ms: ratelog.WINDOW_MS), then per job the job,
# its score (ms), its id, the limit (-1: not counted) and a log member. -> per job
# {allowed (1/0), remaining, reset ms, now ms} (1, 0, 0, 0 when not counted). In order,
# so that each count sees the ones before it.
ENQUEUE = ratelog.COUNT + """
local out = {}
for i = 0, (#KEYS - 1) / 3 - 1 do
    local job_key, result_key, log = KEYS[2 + 3 * i], KEYS[3 + 3 * i], KEYS[4 + 3 * i]
    local a = 3 + 5 * i
    local limit = tonumber(ARGV[a + 3])
    local decision = {1, 0, 0, 0}
    if limit >= 0 then
        decision = count(log, tonumber(ARGV[2]), limit, ARGV[a + 4])
    end
    if decision[1] == 1 and redis.call('EXISTS', job_key, result_key) == 0 then
        redis.call('PSETEX', job_key, ARGV[1], ARGV[a])
        redis.call('ZADD', KEYS[1], ARGV[a + 1], ARGV[a + 2])
    end
    for _, x in ipairs(decision) do out[#out + 1] = x end
end
return out
"""

_scripts: WeakKeyDictionary[ArqRedis, AsyncScript] = WeakKeyDictionary()


@dataclass(frozen=True)
class Job:
    """A task's job to queue; with `rate`, counted first in that rate-limit log:
    (key, limit, a member unique to the request)."""

    task_id: int
    task_type: str
    rate: tuple[str, int, str] | None = None


# (allowed, remaining, reset ms, now ms)
Counted = tuple[bool, int, int, int]


async def enqueue_all(arq: ArqRedis, jobs: Sequence[Job]) -> list[Counted]:
    """Count and queue `jobs` in one script (see ENQUEUE). Redis' errors propagate."""
    script = _scripts.get(arq)
    if script is None:
        script = _scripts[arq] = arq.register_script(ENQUEUE)
    now = timestamp_ms()
    keys: list[str] = [arq.default_queue_name]
    args: list[str | int | bytes] = [arq.expires_extra_ms, ratelog.WINDOW_MS]
    for job in jobs:
        job_id = str(job.task_id)
        key, limit, member = job.rate or (job_key_prefix + job_id, -1, "")
        keys += [job_key_prefix + job_id, result_key_prefix + job_id, key]
        args += [serialize_job(job_name(job.task_type), (job.task_id,), {}, None, now,
                               serializer=arq.job_serializer), now, job_id, limit, member]
    out = [int(x) for x in await script(keys=keys, args=args)]
    return [(bool(out[i]), out[i + 1], out[i + 2], out[i + 3]) for i in range(0, len(out), 4)]


async def enqueue(arq: ArqRedis, task_id: int, task_type: str) -> bool:
    """Queue the task's job. False when Redis is unreachable: the task is recorded all the
    same, and the worker's sweeper enqueues it once Redis is back."""
    return await enqueue_tasks(arq, [(task_id, task_type)])


async def enqueue_tasks(arq: ArqRedis, tasks: Sequence[tuple[int, str]]) -> bool:
    """Queue the jobs of (task id, task type) pairs, in one script; False (and nothing
    raised) when Redis is unreachable, as `enqueue`."""
    if not tasks:
        return True
    try:
        await enqueue_all(arq, [Job(task_id, task_type) for task_id, task_type in tasks])
    except (OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        log.warning("tasks %s recorded but not enqueued (%s); the sweeper will retry",
                    [task_id for task_id, _ in tasks], type(exc).__name__)
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

