"""Which workers are alive.

arq keeps one health key per worker fresh (written every `worker_health_check_interval_s`,
expiring a second after the next write is due). arq's default is one key per queue, which
every worker overwrites: a container probe would then pass while another container's
worker is the one writing. So each worker gets a key of its own, named in a small registry
(`{prefix}workers`: worker id -> host, pid, start time) that `/ops`, `/metrics`,
`mailprov queue` and `mailprov worker --check` read.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

from arq import create_pool
from redis.asyncio import Redis

from service.core.queue import redis_settings
from service.core.settings import Settings

# a registered worker whose health key is gone this long after it started has died
# without unregistering (SIGKILL, lost host); readers drop it
STALE_AFTER_S = 60


@dataclass(frozen=True)
class WorkerState:
    id: str
    host: str
    pid: int
    started: float
    # arq's own line: "Jan-01 12:00:00 j_complete=3 j_failed=0 j_retried=0 j_ongoing=1 queued=0"
    health: str


def new_worker_id() -> str:
    """`host:pid:random`; the random part tells apart workers one process runs in turn."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


def registry_key(settings: Settings) -> str:
    return f"{settings.redis_prefix}workers"


def health_key(settings: Settings, worker_id: str) -> str:
    return f"{settings.queue_name}:health-check:{worker_id}"


async def register(redis: Redis, settings: Settings, worker_id: str) -> None:
    entry = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    await redis.hset(registry_key(settings), worker_id, json.dumps(entry))  # type: ignore[misc]


async def unregister(redis: Redis, settings: Settings, worker_id: str) -> None:
    await redis.hdel(registry_key(settings), worker_id)  # type: ignore[misc]


async def alive(redis: Redis, settings: Settings) -> list[WorkerState]:
    """The registered workers whose health key is fresh, oldest first."""
    registered: dict[Any, Any] = await redis.hgetall(registry_key(settings))  # type: ignore[misc]
    if not registered:
        return []
    ids = [k.decode() if isinstance(k, bytes) else k for k in registered]
    entries = [json.loads(v) for v in registered.values()]
    health = await redis.mget([health_key(settings, i) for i in ids])
    workers, dead = [], []
    for worker_id, entry, line in zip(ids, entries, health, strict=True):
        if line is not None:
            workers.append(WorkerState(worker_id, entry["host"], entry["pid"], entry["started"],
                                       line.decode() if isinstance(line, bytes) else line))
        elif time.time() - entry["started"] > STALE_AFTER_S:
            dead.append(worker_id)
    if dead:
        await redis.hdel(registry_key(settings), *dead)  # type: ignore[misc]
    return sorted(workers, key=lambda w: w.started)


async def alive_here(redis: Redis, settings: Settings) -> list[WorkerState]:
    """The live workers on this host: what a container probe asks about."""
    host = socket.gethostname()
    return [w for w in await alive(redis, settings) if w.host == host]


async def probe(settings: Settings) -> list[WorkerState]:
    """`alive_here` on a connection of its own, for `mailprov worker --check`."""
    redis = await create_pool(redis_settings(settings.redis_url, conn_timeout=2,
                                             conn_retries=0))
    try:
        return await alive_here(redis, settings)
    finally:
        await redis.aclose()
