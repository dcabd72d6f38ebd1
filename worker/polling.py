"""arq's worker, polling past the jobs that are running.

A job stays in arq's queue (a sorted set, oldest first) while it runs, marked by an
in-progress key. arq 0.28 reads the first `queue_read_limit` ids of the queue at each poll
(max(max_jobs x 5, 100) by default) and tries them one by one, a round trip each. So a
head of running jobs hides every newer one: 100 jobs of five workers killed mid-run (their
marks live for the job timeout + 10 s) stopped a fresh worker for five minutes, and five
live workers running 20 jobs each would have stopped a sixth just the same.

This worker reads the queue with one Lua script that skips the jobs whose mark is set and
returns those that can start. It reads from where it stopped when a long head of running
jobs used up its budget, so no number of them hides the rest of the queue. Everything
else is arq's: starting a job still takes it under WATCH, as arq does.

The same script tells whether the worker's health key, its heartbeat, is still there: when
Redis lost it (a flush, a restart without persistence), the worker writes it again at
once instead of at its next interval, so the sweeper need not wait long before it judges
which workers died (service/core/presence.py: `stopped`).
"""

from __future__ import annotations

import time
from typing import Any

from arq.constants import in_progress_key_prefix
from arq.worker import Worker as ArqWorker
from redis.commands.core import AsyncScript

# ids one poll may look at before it yields to the next one (a few ms of Redis time)
SCAN_BUDGET = 2000
PAGE = 200

# KEYS: the queue, the worker's health key; ARGV: now (ms), how many, the in-progress key
# prefix, where to begin, the budget, the page size. Returns where the next call begins,
# whether the health key exists, then the ids.
READY = """
local now, wanted, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local offset, budget, page = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local ready, seen = {}, 0
while #ready < wanted and seen < budget do
    local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', offset, page)
    for _, id in ipairs(ids) do
        if redis.call('EXISTS', prefix .. id) == 0 then
            ready[#ready + 1] = id
            if #ready == wanted then break end
        end
    end
    seen = seen + #ids
    offset = offset + #ids
    if #ids < page then
        offset = 0
        break
    end
end
if #ready == wanted then offset = 0 end
table.insert(ready, 1, redis.call('EXISTS', KEYS[2]))
table.insert(ready, 1, offset)
return ready
"""


class Worker(ArqWorker):
    """arq's worker; only the way a poll picks job ids differs (see the module's doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_from = 0
        self._ready: AsyncScript | None = None

    async def _ready_job_ids(self, wanted: int) -> list[bytes]:
        """Up to `wanted` ids of jobs that can start (none are read when it is 0)."""
        if self._ready is None:  # on the pool main() made
            self._ready = self.pool.register_script(READY)
        found = await self._ready(keys=[self.queue_name, self.health_check_key], args=[
            int(time.time() * 1000), wanted, in_progress_key_prefix, self._read_from,
            SCAN_BUDGET, PAGE])
        self._read_from = int(found[0])
        if not found[1]:
            self._last_health_check = 0  # heart_beat, below, writes it now
        return list(found[2:])

    async def _poll_iteration(self) -> None:
        """arq 0.28's poll, with `_ready_job_ids` in place of its `zrangebyscore`, called
        at every poll (a worker that takes no job still looks after its heartbeat)."""
        count = self.queue_read_limit
        if self.burst and self.max_burst_jobs >= 0:
            burst_jobs_remaining = self.max_burst_jobs - self._jobs_started()
            if burst_jobs_remaining < 1:
                return
            count = min(burst_jobs_remaining, count)
        if not (self.allow_pick_jobs and self.job_counter < self.max_jobs):
            count = 0
        job_ids = await self._ready_job_ids(count)
        if job_ids:
            await self.start_jobs(job_ids)

        if self.allow_abort_jobs:
            await self._cancel_aborted_jobs()

        for job_id, t in list(self.tasks.items()):
            if t.done():
                del self.tasks[job_id]
                # required to make sure errors in run_job get propagated
                t.result()

        await self.heart_beat()
