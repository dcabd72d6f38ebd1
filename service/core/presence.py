"""Which workers are alive, and whether they can hash.

arq keeps one health key per worker fresh (written every `worker_health_check_interval_s`,
expiring a second after the next write is due). arq's default is one key per queue, which
every worker overwrites: a container probe would then pass while another container's
worker is the one writing. So each worker gets a key of its own, named in a small registry
(`{prefix}workers`: worker id -> host, pid, start time) that `/ops`, `/metrics`,
`mailprov queue` and `mailprov worker --check` read.

The health key is also the worker's heartbeat: the tasks a worker runs are leased to it
(`tasks.worker_id`) for as long as its key lives, and the sweeper frees the tasks of a
worker whose key is gone (`stopped`). Beside it, each worker records whether its hashing
pool hashes (`record_hashing`), which the probe reports.
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

from service.core.redisconn import redis_settings
from service.core.settings import Settings

# a registered worker whose health key is gone this long after it started has died
# without unregistering (SIGKILL, lost host); readers drop it
STALE_AFTER_S = 60
# what a worker that has not yet recorded the state of its hashing pool shows
UNKNOWN = "unknown"
# a live worker whose heartbeat Redis lost writes it again at its next poll (every
# worker_poll_delay_s; worker/polling.py): after a flush no worker counts as dead for
# this long beyond a poll delay
REBEAT_S = 2.0


@dataclass(frozen=True)
class WorkerState:
    id: str
    host: str
    pid: int
    started: float
    # arq's own line: "Jan-01 12:00:00 j_complete=3 j_failed=0 j_retried=0 j_ongoing=1 queued=0"
    health: str
    # "ok", "failing (...)", or UNKNOWN (service/core/passwords.py: Hasher.check)
    hashing: str = UNKNOWN


def new_worker_id() -> str:
    """`host:pid:random`; the random part tells apart workers one process runs in turn."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


def registry_key(settings: Settings) -> str:
    return f"{settings.redis_prefix}workers"


def health_key(settings: Settings, worker_id: str) -> str:
    return f"{settings.queue_name}:health-check:{worker_id}"


def hashing_key(settings: Settings, worker_id: str) -> str:
    return f"{settings.queue_name}:hashing:{worker_id}"


def kept_since_key(settings: Settings) -> str:
    """Since when (Redis' clock, in ms) this Redis has kept the heartbeats; see `stopped`."""
    return f"{settings.redis_prefix}heartbeats-kept-since"


async def register(redis: Redis, settings: Settings, worker_id: str) -> None:
    entry = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    await redis.hset(registry_key(settings), worker_id, json.dumps(entry))  # type: ignore[misc]


async def unregister(redis: Redis, settings: Settings, worker_id: str) -> None:
    await redis.hdel(registry_key(settings), worker_id)  # type: ignore[misc]


async def record_hashing(redis: Redis, settings: Settings, worker_id: str, state: str,
                         ttl_s: float) -> None:
    """What the worker's hashing pool did at its last check, kept for `ttl_s`."""
    await redis.set(hashing_key(settings, worker_id), state, px=int(ttl_s * 1000))


async def stopped(redis: Redis, settings: Settings, worker_ids: list[str]) -> list[str]:
    """Of `worker_ids`, those whose heartbeat (health key) is gone: the worker died (kill -9,
    a lost host), or stopped, or its supervisor replaced it after losing Redis.

    A Redis that lost its data (FLUSHALL, a restart without persistence) has lost every
    heartbeat at once, live workers' too, until they write them again. A key without
    expiry records since when (ms) this Redis has kept them: when it is missing, Redis is
    new, and no worker counts as stopped for REBEAT_S and a poll delay."""
    # kept up at every sweep, leases or none, so that it dates Redis' loss, not the first
    # lease that came after it
    seconds, micros = await redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    key = kept_since_key(settings)
    await redis.set(key, now_ms, nx=True)
    since = await redis.get(key)
    grace_ms = (REBEAT_S + settings.worker_poll_delay_s) * 1000
    if not worker_ids or since is None or now_ms - int(since) < grace_ms:
        return []
    beats = await redis.mget([health_key(settings, w) for w in worker_ids])
    return [w for w, beat in zip(worker_ids, beats, strict=True) if beat is None]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def alive(redis: Redis, settings: Settings) -> list[WorkerState]:
    """The registered workers whose health key is fresh, oldest first."""
    registered: dict[Any, Any] = await redis.hgetall(registry_key(settings))  # type: ignore[misc]
    if not registered:
        return []
    ids = [_text(k) for k in registered]
    entries = [json.loads(v) for v in registered.values()]
    keys = [health_key(settings, i) for i in ids] + [hashing_key(settings, i) for i in ids]
    found = await redis.mget(keys)
    health, hashing = found[:len(ids)], found[len(ids):]
    workers, dead = [], []
    for worker_id, entry, line, pool in zip(ids, entries, health, hashing, strict=True):
        if line is not None:
            workers.append(WorkerState(worker_id, entry["host"], entry["pid"], entry["started"],
                                       _text(line), UNKNOWN if pool is None else _text(pool)))
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
