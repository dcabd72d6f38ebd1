"""Password generation and Dovecot-compatible argon2id hashing.

Hashing is deliberately slow, so it runs in a process pool: the event loop never blocks,
and a bulk task keeps every core busy. The web process uses the same pool for passwords a
client supplies (they are hashed before the task is recorded: a plaintext password is
never stored, not even in a task's payload).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import secrets
import string
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

SCHEME = "{ARGON2ID}"
ALPHABET = string.ascii_letters + string.digits
GENERATED_LENGTH = 20


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


class Hasher:
    """A process pool that hashes with one cost setting."""

    def __init__(self, time_cost: int, memory_kib: int, processes: int = 0) -> None:
        self.time_cost = time_cost
        self.memory_kib = memory_kib
        self.processes = processes or os.cpu_count() or 1
        # spawn, not fork: forking a process that runs an event loop and threads is unsafe
        self._pool = ProcessPoolExecutor(self.processes,
                                         mp_context=multiprocessing.get_context("spawn"))

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, hash_password, password,
                                          self.time_cost, self.memory_kib)

    def hash_batches(self, passwords: Iterable[str], batch: int) -> list[asyncio.Future[list[str]]]:
        """Start hashing at once, in batches of `batch`; the futures resolve in order.

        Batches amortise the inter-process round trip; there are enough of them to keep
        every process busy while the caller writes finished batches to Postgres.
        """
        loop = asyncio.get_running_loop()
        items = list(passwords)
        return [
            loop.run_in_executor(self._pool, _hash_many, items[i:i + batch], self.time_cost,
                                 self.memory_kib)
            for i in range(0, len(items), batch)
        ]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
