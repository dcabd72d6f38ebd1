"""Password generation and Dovecot-compatible argon2id hashing.

Hashing is deliberately slow, so it runs in a process pool: the event loop never blocks,
and a bulk task keeps every core busy. The web process uses the same pool for passwords a
client supplies (they are hashed before the task is recorded: a plaintext password is
never stored, not even in a task's payload).

The pool heals. A `ProcessPoolExecutor` whose child dies (the OOM killer, a stray kill -9)
is broken for good: every call, queued or later, raises `BrokenProcessPool`. So a broken
pool is dropped, never reused; the next call builds a new one, and the work the old one
held is submitted again (a hash is a pure function, so running it twice is harmless).
The children ignore SIGINT and SIGTERM: a platform signals a whole process group at once,
and the parent, not the signal, decides when they stop, after its grace period. A child
whose parent is gone exits by itself rather than linger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import secrets
import signal
import string
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import wait
from typing import Any, TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

log = logging.getLogger("mailprov.passwords")

SCHEME = "{ARGON2ID}"
ALPHABET = string.ascii_letters + string.digits
GENERATED_LENGTH = 20
# how often one piece of work is submitted to a fresh pool before its caller hears of the
# break: a child that dies on every try (say, argon2's memory over the container's limit)
# must not be respawned for ever
TRIES = 3
# the health check: one hash this cheap must come back within this long. It waits for at
# most one batch a busy process is hashing (see Hasher._slots), a second or two at the
# default cost
CHECK_TIMEOUT_S = 5.0
CHECK_COST = {"time_cost": 1, "memory_kib": 8}
# close(): how long the children get to finish what they hold before they are killed
CLOSE_TIMEOUT_S = 10.0

T = TypeVar("T")


def generate() -> str:
    """A random password of 20 letters and digits (about 119 bits), easy to copy."""
    return "".join(secrets.choice(ALPHABET) for _ in range(GENERATED_LENGTH))


def hash_password(password: str, time_cost: int, memory_kib: int) -> str:
    """`{ARGON2ID}$argon2id$v=19$m=...,t=...,p=1$...`; parallelism 1 as Dovecot expects."""
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1,
                            type=Type.ID)
    return SCHEME + hasher.hash(password)


def verify(stored: str, password: str) -> bool:
    if not stored.startswith(SCHEME):
        return False
    try:
        return PasswordHasher().verify(stored.removeprefix(SCHEME), password)
    except (VerificationError, InvalidHashError):
        return False


def _hash_many(passwords: list[str], time_cost: int, memory_kib: int) -> list[str]:
    return [hash_password(p, time_cost, memory_kib) for p in passwords]


def _child_init() -> None:
    """Runs first in every hashing process."""
    # honcho, systemd and Kubernetes signal the whole process group: the parent finishes
    # its jobs in its grace period, and needs its children meanwhile
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        # the parent's end of a pipe: readable once the parent is gone (even by kill -9)
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True,
                         name="parent-watch").start()


def _exit_with(sentinel: int) -> None:
    wait([sentinel])
    os._exit(0)


class Hasher:
    """A process pool that hashes with one cost setting, and heals when a process dies."""

    def __init__(self, time_cost: int, memory_kib: int, processes: int = 0) -> None:
        self.time_cost = time_cost
        self.memory_kib = memory_kib
        self.processes = processes or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False
        # work handed to the pool at once: one piece per process and one waiting, so the
        # processes never idle, and a health check (which skips this queue) waits for at
        # most the batch a process holds rather than for a whole bulk task's backlog
        self._slots = asyncio.Semaphore(self.processes + 1)
        self._probe: asyncio.Future[str] | None = None

    async def hash(self, password: str) -> str:
        return await self._run(hash_password, password, self.time_cost, self.memory_kib)

    def hash_batches(self, passwords: Iterable[str], batch: int) -> list[asyncio.Future[list[str]]]:
        """Start hashing at once, in batches of `batch`; the futures resolve in order.

        Batches amortise the inter-process round trip; there are enough of them to keep
        every process busy while the caller writes finished batches to Postgres.
        """
        items = list(passwords)
        return [
            asyncio.ensure_future(self._run(_hash_many, items[i:i + batch], self.time_cost,
                                            self.memory_kib))
            for i in range(0, len(items), batch)
        ]

    async def check(self) -> None:
        """Raise unless the pool hashes: one cheap hash must come back within
        CHECK_TIMEOUT_S (a dead process is replaced on the way, as for any work)."""
        if self._probe is None or self._probe.done():
            # while a probe is stuck (a process that hangs), the next checks wait for it
            # rather than pile more work onto the pool
            self._probe = asyncio.ensure_future(self._submit(
                hash_password, "health-check", CHECK_COST["time_cost"],
                CHECK_COST["memory_kib"]))
        await asyncio.wait_for(asyncio.shield(self._probe), CHECK_TIMEOUT_S)

    def pids(self) -> list[int]:
        """The hashing processes running now (none before the first piece of work)."""
        pool = self._pool
        processes = dict(pool._processes or {}) if pool is not None else {}
        return sorted(p.pid for p in processes.values() if p.pid is not None)

    async def warm_up(self) -> None:
        """Start every process now, rather than on the first task's clock."""
        await asyncio.gather(*(self._submit(hash_password, "warm-up", CHECK_COST["time_cost"],
                                            CHECK_COST["memory_kib"])
                               for _ in range(self.processes)))

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Stop the processes: they finish what they hold (for `timeout` at most, then they
        are killed; they ignore SIGTERM), queued work is dropped."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is None:
            return
        children = list((pool._processes or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        # wait on the processes' sentinels, not join(): the executor's own thread joins them
        pending = [c.sentinel for c in children]
        ready = wait(pending, timeout) if pending else []
        for child in children:
            if child.sentinel not in ready:
                with contextlib.suppress(OSError):
                    child.kill()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._slots:
            return await self._submit(fn, *args)

    async def _submit(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in a process, on a fresh pool when the current one broke."""
        for attempt in range(1, TRIES + 1):
            pool = self._executor()
            try:
                future: Future[T] = pool.submit(fn, *args)
                return await asyncio.wrap_future(future)
            except BrokenProcessPool:
                self._discard(pool)
                if attempt == TRIES:
                    log.error("hashing failed: its processes died %s times in a row", TRIES)
                    raise
        raise AssertionError("unreachable")

    def _executor(self) -> ProcessPoolExecutor:
        if self._closed:
            raise BrokenProcessPool("the hashing pool is closed")
        if self._pool is None:
            # spawn, not fork: forking a process that runs an event loop and threads is unsafe
            self._pool = ProcessPoolExecutor(self.processes,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_child_init)
        return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        """Drop a broken pool (once: every caller whose work it held ends up here)."""
        if self._pool is pool:
            log.warning("a hashing process died; the pool is replaced and the work it held "
                        "runs again")
            self._pool = None
            # its surviving processes exit on their own; the executor's thread reaps them.
            # Not cancel_futures: the executor fails all it held with BrokenProcessPool,
            # which its callers retry, where a cancellation would look like their own
            pool.shutdown(wait=False)
