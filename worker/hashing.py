"""Hashing capacity shared fairly between accounts.

One account's bulk of 1,000 passwords must not make another account's single mailbox
wait for all of them. Every account with passwords to hash has a queue of its own, and the
queues are served round robin, one small batch at a time: whoever arrives waits for at
most the batches already running, one per hashing process, before its own is next.

Round robin rather than a bounded share per account: it needs no tuning, and it wastes
nothing. A lone account gets every process; two get half each; a newcomer gets the next
free process. A bounded share would leave processes idle while one account works alone,
or need a share small enough for the worst case and large enough for the usual one.

Batches are sized from the measured cost of a hash, so that each holds about
`BATCH_TARGET_S` of work: with argon2id at its default cost that is one or two passwords
(a short wait for a newcomer), and at a test's cheap cost it is dozens (the round trip to
the process pool is amortised). Only as many batches run as there are processes, so no
batch waits inside the pool, where it could no longer be overtaken.

Built only on `service.core.passwords.Hasher`'s public `hash_batches` and `processes`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from service.core.passwords import Hasher

# the work one batch should hold: what a newcomer may wait behind each busy process
BATCH_TARGET_S = 0.1
MAX_BATCH = 32
# how much each finished batch moves the estimate of a hash's cost
SMOOTHING = 0.3


@dataclass
class _Password:
    plain: str
    hashed: asyncio.Future[str]


class FairHasher:
    """Hashes passwords for accounts, each account's in order, the accounts in turn."""

    def __init__(self, hasher: Hasher) -> None:
        self.hasher = hasher
        self._queues: dict[int, deque[_Password]] = {}
        self._turns: deque[int] = deque()  # accounts with queued passwords, next first
        self._running = 0
        self._per_hash_s: float | None = None  # measured; None until a batch finishes

    @property
    def batch_size(self) -> int:
        """Passwords per batch: about BATCH_TARGET_S of work (one until it is measured)."""
        if self._per_hash_s is None:
            return 1
        return max(1, min(MAX_BATCH, int(BATCH_TARGET_S / max(self._per_hash_s, 1e-6))))

    def submit(self, account_id: int, passwords: Sequence[str]) -> list[asyncio.Future[str]]:
        """Queue `passwords` for the account; their hashes, in order, as futures. A
        cancelled future is skipped, never hashed."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(account_id)
        if queue is None:
            queue = self._queues[account_id] = deque()
            self._turns.append(account_id)
        queued = [_Password(p, loop.create_future()) for p in passwords]
        queue.extend(queued)
        self._dispatch()
        return [p.hashed for p in queued]

    async def hashes(self, account_id: int,
                     passwords: Sequence[str]) -> AsyncGenerator[str, None]:
        """The hashes of `passwords`, in order, as they are ready. A caller that stops
        early (its job cancelled, or failed) leaves none of its passwords queued."""
        futures = self.submit(account_id, passwords)
        try:
            for future in futures:
                yield await future
        finally:
            for future in futures:
                future.cancel()
            self._forget_cancelled(account_id)

    def _forget_cancelled(self, account_id: int) -> None:
        queue = self._queues.get(account_id)
        if queue is None:
            return
        live = [p for p in queue if not p.hashed.done()]
        if live:
            self._queues[account_id] = deque(live)
        else:
            del self._queues[account_id]
            self._turns.remove(account_id)

    def _dispatch(self) -> None:
        """Start batches, the accounts in turn, while a process is free."""
        while self._running < self.hasher.processes and self._turns:
            account_id = self._turns.popleft()
            queue = self._queues[account_id]
            batch: list[_Password] = []
            while queue and len(batch) < self.batch_size:
                password = queue.popleft()
                if not password.hashed.done():  # not cancelled meanwhile
                    batch.append(password)
            if queue:
                self._turns.append(account_id)  # to the back of the line
            else:
                del self._queues[account_id]
            if batch:
                self._start(batch)

    def _start(self, batch: list[_Password]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            [work] = self.hasher.hash_batches([p.plain for p in batch], len(batch))
        except Exception as exc:  # the pool refused the work (it is broken or closed)
            for password in batch:
                if not password.hashed.done():
                    password.hashed.set_exception(exc)
            return
        self._running += 1

        def finished(done: asyncio.Future[list[str]]) -> None:
            self._running -= 1
            failure = None if done.cancelled() else done.exception()
            if failure is None and not done.cancelled():
                per_hash = (loop.time() - started) / len(batch)
                self._per_hash_s = per_hash if self._per_hash_s is None else (
                    (1 - SMOOTHING) * self._per_hash_s + SMOOTHING * per_hash)
                results: list[str | None] = list(done.result())
            else:
                results = [None] * len(batch)
            for password, hashed in zip(batch, results, strict=True):
                if password.hashed.done():
                    continue
                if hashed is not None:
                    password.hashed.set_result(hashed)
                elif failure is not None:
                    password.hashed.set_exception(failure)
                else:
                    password.hashed.cancel()
            self._dispatch()

        asyncio.ensure_future(work).add_done_callback(finished)
