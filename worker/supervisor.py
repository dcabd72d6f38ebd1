"""`mailprov worker`: the arq worker, kept running across Redis and Postgres restarts.

arq's worker exits when its Redis connection drops (python-arq/arq#435, #386), and when
Postgres cannot be reached at startup. A worker process should not need a person to start
it again, so the supervisor runs the worker and, when it stops on such an error, waits
(1 s, doubling to 30 s) and starts a fresh one in the same process. Work cut off meanwhile
is safe: jobs are idempotent, and the sweeper frees the tasks a stopped worker held (each
worker has an id of its own, and its heartbeat stops with it) and re-enqueues whatever
Redis lost.

SIGTERM and SIGINT stop it gracefully: the worker takes no new jobs, gives the running ones
`worker_shutdown_grace_s` to finish, then cancels the rest, which arq puts back in the queue
(or, when Redis is gone too, the sweeper frees once this worker's heartbeat has lapsed).
The hashing processes ignore those signals (a platform sends them to the whole process
group): the jobs need them during the grace period, and the supervisor stops them last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from arq.worker import Worker

from service.core.passwords import Hasher
from service.core.settings import Settings
from worker.jobs import TRANSIENT
from worker.main import create_worker, shutdown

log = logging.getLogger("mailprov.supervisor")

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
# a worker that ran this long was healthy: the next restart waits the first delay again
HEALTHY_RUN_S = 60.0
CLOSE_TIMEOUT_S = 10.0


class Supervisor:
    """Runs workers one after another until asked to stop."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self.settings = settings
        self.overrides = overrides
        self._worker: Worker | None = None
        self._stopping = asyncio.Event()

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop gracefully: no new jobs, running ones get the grace period."""
        if self._stopping.is_set():
            return
        log.info("%s: stopping", signal.Signals(signum).name)
        self._stopping.set()
        if self._worker is not None:
            self._worker.handle_sig_wait_for_completion(signal.Signals(signum))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop, sig)
        # one hashing pool for every worker this process runs: a restart keeps it warm
        hasher = Hasher(self.settings.argon2_time_cost, self.settings.argon2_memory_kib,
                        self.settings.hash_processes)
        try:
            await hasher.warm_up()
        except Exception:
            # the worker runs all the same: its health check reports the pool, and each
            # hash tries a fresh pool
            log.exception("the hashing pool could not start")
        delay = FIRST_DELAY_S
        try:
            while not self._stopping.is_set():
                began = loop.time()
                error = await self._run_worker(hasher)
                if error is None or self._stopping.is_set():
                    break
                if loop.time() - began > HEALTHY_RUN_S:
                    delay = FIRST_DELAY_S
                log.warning("worker stopped (%s: %s); starting a new one in %.0f s",
                            type(error).__name__, error, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, MAX_DELAY_S)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            hasher.close()

    async def _run_worker(self, hasher: Hasher) -> BaseException | None:
        """Run one worker to its end: None when it stopped as asked (or, in burst mode,
        ran out of jobs), the error when a backing service made it stop."""
        ctx = {"settings": self.settings, "hasher": hasher}
        worker = create_worker(self.settings, handle_signals=False, ctx=ctx, **self.overrides)
        self._worker = worker
        error: BaseException | None = None
        try:
            await worker.async_run()
        except asyncio.CancelledError:
            # a graceful stop cancels the worker's own task; a cancellation of ours must
            # go on up
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except TRANSIENT as exc:
            error = exc
        finally:
            self._worker = None
            await self._close(worker)
        return error

    async def _close(self, worker: Worker) -> None:
        """Close the worker even when Redis is gone, which makes arq's `close` fail before
        it has run the shutdown hook."""
        try:
            await asyncio.wait_for(worker.close(), CLOSE_TIMEOUT_S)
        except (*TRANSIENT, TimeoutError) as exc:
            log.warning("worker closed without Redis (%s); its cut-off jobs run again later",
                        type(exc).__name__)
            # let the cancelled jobs unwind, so their connections go back to the pool
            await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
            if worker.pool is not None:
                with contextlib.suppress(Exception):
                    await worker.pool.aclose()
            # close() skipped it; running it twice is harmless (a closed pool stays closed)
            await shutdown(worker.ctx)
