"""Task-recording writes that arrive together, recorded together.

Under load, many requests reach the recording of their task within one turn of the event
loop. Each would make its own round trip to Postgres (the insert) and to Redis (its rate
count and its job). Gathered, they make one of each for all of them: asyncpg's and
redis-py's cost per call, and Postgres' per statement and commit, are paid once a turn
instead of once a request. A lone request waits for nothing: its turn ends at once.

Every guarantee of one request holds for each: its task is committed before it hears the
id, its count is exact (the script counts the jobs in order), a refused or unqueued task
is taken back, and a job is never queued twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from arq.connections import ArqRedis

from service.core.db import Database
from service.core.queue import Counted, Job, enqueue_all
from service.core.store import Row

log = logging.getLogger("mailprov.web")

T = TypeVar("T")
R = TypeVar("R")


class StaleRead(Exception):
    """What a request reused from its key's earlier read (Lookup.reusable) has changed:
    nothing was recorded, and the request is made again the long way."""


class Gathered(Generic[T, R]):
    """Calls run together: `run` takes their arguments in order and returns a result, or
    an exception to raise, for each. A call starts a run at the end of the loop's turn;
    while `in_flight` runs are under way, calls wait for one to end and go together in
    the next (group commit: the busier, the bigger each run, never more runs at once)."""

    def __init__(self, run: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
                 in_flight: int = 2) -> None:
        self._run = run
        self._in_flight = in_flight
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._running: set[asyncio.Task[None]] = set()

    async def __call__(self, arg: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((arg, future))
        if len(self._waiting) == 1 and len(self._running) < self._in_flight:
            loop.call_soon(self._start)
        return await future

    def _start(self) -> None:
        if not self._waiting or len(self._running) >= self._in_flight:
            return  # taken by a run that started meanwhile, or one will when it ends
        batch, self._waiting = self._waiting, []
        task = asyncio.create_task(self._finish(batch))
        self._running.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._start()  # what gathered meanwhile

    async def _finish(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        results: Sequence[R | BaseException]
        try:
            results = await self._run([arg for arg, _ in batch])
        except BaseException as exc:  # the whole batch failed: each call raises it
            results = [exc] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # its request went away meanwhile
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


@dataclass(frozen=True)
class AsRead:
    """A task built on the domain row resolve_key_with_domain read for the same key."""

    key_hash: str
    domain: Row
    task_type: str
    payload: dict[str, Any]
    total: int


class Accepts:
    """The web process's two gatherings: task inserts checked against earlier reads, and
    counted enqueues."""

    def __init__(self, db: Database, arq: ArqRedis) -> None:
        self._db = db
        self._arq = arq
        # AsRead -> the new task's id; StaleRead when its key or domain changed
        self.record: Gathered[AsRead, int] = Gathered(self._record)
        # a counted Job -> its count; a refused job is not queued and its task is gone
        self.queue: Gathered[Job, Counted] = Gathered(self._queue)

    async def _record(self, items: list[AsRead]) -> list[int | BaseException]:
        ids = await self._db.create_tasks_as_read(
            key_hashes=[i.key_hash for i in items], domains=[i.domain for i in items],
            task_types=[i.task_type for i in items], payloads=[i.payload for i in items],
            totals=[i.total for i in items])
        return [ids[n] if n in ids else StaleRead() for n in range(len(items))]

    async def _queue(self, jobs: list[Job]) -> list[Counted]:
        try:
            counted = await enqueue_all(self._arq, jobs)
        except BaseException:
            # nothing queued, nobody told: the tasks are taken back, and each request
            # answers the error (503 for Redis away)
            await self._forget([job.task_id for job in jobs])
            raise
        await self._forget([job.task_id for job, c in zip(jobs, counted, strict=True)
                            if not c[0]])
        return counted

    async def _forget(self, task_ids: list[int]) -> None:
        if not task_ids:
            return
        try:
            await self._db.forget_unheard_tasks(task_ids=task_ids)
        except Exception as exc:
            # left behind, the sweeper would queue them in a few seconds: say so
            log.error("tasks %s were refused but could not be taken back (%s)", task_ids,
                      type(exc).__name__)
