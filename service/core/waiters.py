"""Long polling: requests waiting for a task to move, woken by Postgres LISTEN/NOTIFY.

Why Postgres and not Redis pub/sub: a task moves only in a worker's Postgres transaction,
and the `tasks_notify` trigger (schema.sql) announces it there. NOTIFY is sent when that
transaction commits, never for one rolled back, so a woken request's re-read always sees
what woke it; every path that moves a task announces it without a publish call of its
own; and polls keep answering while Redis is away (they need Postgres only), which they
would not if their wake-ups came through Redis.

Each web process holds one listening connection (not from the pool) and one dict of
futures keyed by task id: a waiting request costs a future and a timer, no connection and
no query until it wakes. While the listening connection is down, every waiter is woken
at once (it answers what it has, and its client polls again) and a new wait does not
wait, until it is back: no change is ever missed for longer than a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict

import asyncpg

from service.core.errors import BACKEND_DOWN
from service.core.tasks import UNFINISHED

log = logging.getLogger("mailprov.waiters")

CHANNEL = "mailprov_tasks"
# the latest state announced of this many tasks, for a wait registered just after its
# task moved (the request read the row before the event, and waits after it)
RECENT = 4096
RECONNECT_S = (0.1, 5.0)

# (progress done seen by the request, its future)
Waiter = tuple[int, "asyncio.Future[bool]"]


def moved(status: str, done: int, seen_done: int) -> bool:
    """Whether a task announced in this state is worth waking a request that saw
    `seen_done` items done: it has finished, or its progress moved on."""
    return status not in UNFINISHED or done > seen_done


def _terminate(connecting: asyncio.Future[asyncpg.Connection]) -> None:
    if not connecting.cancelled() and connecting.exception() is None:
        connecting.result().terminate()


class TaskWaiters:
    """The web process's one subscription to task changes, fanned out to waiting
    requests."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._waiting: dict[int, list[Waiter]] = {}
        self._recent: OrderedDict[int, tuple[str, int]] = OrderedDict()
        self._keeper: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._released = False

    @property
    def listening(self) -> bool:
        return (not self._released and self._conn is not None
                and not self._conn.is_closed())

    def release(self) -> None:
        """At shutdown: every held poll answers now, and none waits from here on (a
        graceful stop would otherwise wait out each one's N seconds)."""
        self._released = True
        self._wake_all()

    @property
    def waiting(self) -> int:
        """Requests waiting now (the metrics and the bench read it)."""
        return sum(len(waiters) for waiters in self._waiting.values())

    async def start(self) -> None:
        """Listen (in the background, reconnecting, when Postgres is away now)."""
        with contextlib.suppress(*BACKEND_DOWN, asyncpg.PostgresError):
            await self._listen()
        self._keeper = asyncio.create_task(self._keep(), name="mailprov-task-waiters")

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        self._wake_all()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)
            self._conn = None

    async def wait(self, task_id: int, seen_done: int, seconds: float) -> bool:
        """Wait until the task finishes or its progress moves past `seen_done`, at most
        `seconds`. True: it moved, or the subscription was lost meanwhile (the
        caller re-reads the task either way); False: nothing was heard."""
        if not self.listening:
            return True
        recent = self._recent.get(task_id)
        if recent is not None and moved(*recent, seen_done):
            return True
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        waiter = (seen_done, future)
        self._waiting.setdefault(task_id, []).append(waiter)
        try:
            async with asyncio.timeout(seconds):
                return await future
        except TimeoutError:
            return False
        finally:
            waiters = self._waiting.get(task_id)
            if waiters is not None:
                with contextlib.suppress(ValueError):
                    waiters.remove(waiter)
                if not waiters:
                    del self._waiting[task_id]

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        try:
            raw_id, status, raw_done = payload.split(":")
            task_id, done = int(raw_id), int(raw_done)
        except ValueError:
            log.warning("unreadable task event %r", payload)
            return
        self._recent[task_id] = (status, done)
        self._recent.move_to_end(task_id)
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        waiters = self._waiting.get(task_id)
        if not waiters:
            return
        keep = []
        for waiter in waiters:
            seen_done, future = waiter
            if moved(status, done, seen_done):
                if not future.done():
                    future.set_result(True)
            else:
                keep.append(waiter)
        waiters[:] = keep

    def _on_lost(self, conn: object) -> None:
        self._lost.set()

    def _wake_all(self) -> None:
        for waiters in self._waiting.values():
            for _, future in waiters:
                if not future.done():
                    future.set_result(True)
        # what was announced before the loss may be stale by the time it is back
        self._recent.clear()

    async def _listen(self) -> None:
        connecting = asyncio.ensure_future(asyncpg.connect(self._dsn, timeout=5))
        try:
            conn = await asyncio.shield(connecting)
        except asyncio.CancelledError:
            # a shutdown while connecting: the connection being made is closed once made,
            # not left open for the garbage collector to find
            connecting.add_done_callback(_terminate)
            raise
        try:
            conn.add_termination_listener(self._on_lost)
            await conn.add_listener(CHANNEL, self._on_notify)
        except BaseException:  # a failure or a shutdown half-way: no connection left open
            conn.terminate()
            raise
        self._lost.clear()
        self._conn = conn

    async def _keep(self) -> None:
        """Reconnect whenever the connection is lost; wake every waiter when it is (what
        happened meanwhile was not heard)."""
        pause = RECONNECT_S[0]
        while True:
            if self.listening:
                await self._lost.wait()
            if self._released:
                # shutting down (not listening for that reason): close() closes what is
                # left, where reconnecting would open connection after connection
                return
            if self._conn is not None:
                log.warning("task events: the listening connection to Postgres is lost")
                self._conn.terminate()  # lost already: nothing of it is left open
                self._conn = None
            self._wake_all()
            try:
                await self._listen()
                pause = RECONNECT_S[0]
                log.info("task events: listening again")
            # any refusal (a database dropped or renamed, a role gone) is waited out
            # too: this loop is all that brings held polls back, so it never ends early
            except (*BACKEND_DOWN, asyncpg.PostgresError) as exc:
                log.debug("task events: reconnect failed (%s)", type(exc).__name__)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RECONNECT_S[1])
