"""Whether the worker's hashing pool hashes, checked every health-check interval and
recorded beside the worker's health key, so that `mailprov worker --check` fails while
the pool cannot hash (a process that hangs, processes that cannot be started)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from service.core import presence
from service.core.errors import BACKEND_DOWN
from service.core.passwords import CHECK_TIMEOUT_S, Hasher
from worker.context import context

log = logging.getLogger("mailprov.worker")


async def hashing_state(hasher: Hasher) -> str:
    """"ok", or "failing (...)" with the kind of failure."""
    try:
        await hasher.check()
    except TimeoutError:
        return f"failing (no hash within {CHECK_TIMEOUT_S:g} s)"
    except Exception as exc:
        return f"failing ({type(exc).__name__})"
    return "ok"


async def check_hashing(ctx: dict[str, Any], last: str = presence.UNKNOWN) -> str:
    """Check the pool once and record the outcome; the outcome."""
    job = context(ctx)
    state = await hashing_state(job.hasher)
    if state != last:
        log.log(logging.INFO if state == "ok" else logging.ERROR, "hashing pool: %s", state)
    interval = job.settings.worker_health_check_interval_s
    # kept until a check that is due has had time to finish
    ttl = interval + CHECK_TIMEOUT_S + 1
    with contextlib.suppress(*BACKEND_DOWN):  # Redis down: arq's loop stops anyway
        await presence.record_hashing(job.redis, job.settings, ctx["worker_id"], state, ttl)
    return state


async def watch_hashing(ctx: dict[str, Any], state: str) -> None:
    """The loop (its first check ran at startup)."""
    interval = context(ctx).settings.worker_health_check_interval_s
    while True:
        await asyncio.sleep(interval)
        state = await check_hashing(ctx, state)
