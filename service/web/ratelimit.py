"""Per-account rate limits over a rolling hour, in Redis, atomic under concurrency.

Each check is one Lua script (one round trip), and uses Redis' clock so that every web
process agrees on what "the last hour" is.

Reads (polls, lists) need only Postgres, so while Redis is unreachable they are counted
by a limiter of the web process's own instead of being refused (`LocalLimiter`). Writes
still answer 503: they need the queue, and limits every web process shares.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from service.core import ratelog
from service.core.errors import BACKEND_DOWN, RateLimited, SubDomainRateLimited
from service.core.queue import Counted, Job

log = logging.getLogger("mailprov.web")

# after Redis failed a read's count, reads skip it this long (a Redis that does not answer
# at all would otherwise cost each of them the connect timeout)
RETRY_REDIS_S = 1.0
# buckets the local limiter keeps before it drops the full ones
LOCAL_BUCKETS_MAX = 10_000

SLIDING_LOG = ratelog.COUNT + """
return count(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3])
"""

# One slot per window, taken only by a request that goes on to succeed (see `release`).
ONCE = """
local taken = redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {taken and 1 or 0, redis.call('PTTL', KEYS[1]), now}
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_ms: int
    now_ms: int
    # set when the slot can be handed back (success-only limits)
    key: str = ""
    token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(self.remaining, 0)),
            "X-RateLimit-Reset": str(math.ceil(self.reset_ms / 1000)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil((self.reset_ms - self.now_ms) / 1000)))
        return headers


class LocalLimiter:
    """The stand-in while Redis is unreachable: a token bucket per account and bucket,
    `limit` deep and refilled at `limit` an hour, in this process's memory. Each web
    process counts alone and starts full, so it is looser than the shared rolling hour;
    it keeps a client from hammering Postgres during an outage, no more."""

    def __init__(self) -> None:
        # (account, bucket) -> (tokens, when they were counted, time.monotonic())
        self._buckets: dict[tuple[int, str], tuple[float, float]] = {}

    def hit(self, account_id: int, bucket: str, limit: int) -> Decision:
        now = time.monotonic()
        per_s = limit / 3600
        tokens, then = self._buckets.get((account_id, bucket), (float(limit), now))
        tokens = min(float(limit), tokens + (now - then) * per_s)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        if len(self._buckets) >= LOCAL_BUCKETS_MAX:
            self._drop_full(now, per_s, limit)
        self._buckets[(account_id, bucket)] = (tokens, now)
        now_ms = int(time.time() * 1000)
        # full again after this long; refused, a token comes back after this long
        wait_s = (limit - tokens) / per_s if allowed else (1 - tokens) / per_s
        return Decision(allowed, limit, int(tokens), now_ms + math.ceil(wait_s * 1000), now_ms)

    def _drop_full(self, now: float, per_s: float, limit: int) -> None:
        self._buckets = {k: (t, then) for k, (t, then) in self._buckets.items()
                         if t + (now - then) * per_s < limit}


class RateLimiter:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.local = LocalLimiter()
        self._redis_retry_at = 0.0
        self._sliding = redis.register_script(SLIDING_LOG)
        self._once = redis.register_script(ONCE)
        self._release = redis.register_script(RELEASE)

    async def hit(self, account_id: int, bucket: str, limit: int, *,
                  local_fallback: bool = False) -> Decision:
        """Count one request of `bucket` for the account; raise RateLimited when over.
        With `local_fallback`, a Redis that cannot be reached hands the count to this
        process's own limiter instead of failing the request."""
        if local_fallback and time.monotonic() < self._redis_retry_at:
            return _allowed(self.local.hit(account_id, bucket, limit))
        key = self._key(bucket, account_id)
        try:
            allowed, remaining, reset, now = await self._sliding(
                keys=[key], args=[ratelog.WINDOW_MS, limit, secrets.token_hex(8)]
            )
        except BACKEND_DOWN as exc:
            if not local_fallback:
                raise
            if self._redis_retry_at == 0.0:
                log.warning("Redis unreachable (%s): reads are rate-limited by each web "
                            "process until it is back", type(exc).__name__)
            self._redis_retry_at = time.monotonic() + RETRY_REDIS_S
            return _allowed(self.local.hit(account_id, bucket, limit))
        if self._redis_retry_at:
            log.warning("Redis is back: reads are rate-limited in Redis again")
            self._redis_retry_at = 0.0
        return _allowed(Decision(bool(allowed), limit, int(remaining), int(reset), int(now)))

    def job(self, account_id: int, bucket: str, limit: int, task_id: int,
            task_type: str) -> Job:
        """The job of an accepted write of `bucket`, counted as it is queued (the
        queue's script runs the same sliding log)."""
        return Job(task_id, task_type,
                   (self._key(bucket, account_id), limit, secrets.token_hex(8)))

    @staticmethod
    def decision(counted: Counted, limit: int) -> Decision:
        """The decision of a job's count; RateLimited, with its headers, when refused."""
        allowed, remaining, reset, now = counted
        return _allowed(Decision(allowed, limit, remaining, reset, now))

    def _key(self, bucket: str, account_id: int) -> str:
        return f"{self.prefix}rl:{bucket}:{account_id}"

    async def once(self, account_id: int, scope: str, window_s: int) -> Decision:
        """Take the one slot per window of `scope`; raise SubDomainRateLimited if taken."""
        key = f"{self.prefix}rl:once:{account_id}:{scope}"
        token = secrets.token_hex(8)
        taken, ttl, now = await self._once(keys=[key], args=[window_s * 1000, token])
        decision = Decision(bool(taken), 1, 0, int(now) + max(int(ttl), 0), int(now),
                            key=key, token=token)
        if not decision.allowed:
            raise SubDomainRateLimited(headers=decision.headers)
        return decision

    async def release(self, decision: Decision) -> None:
        """Give back a slot taken by `once` when the request did not succeed after all."""
        await self._release(keys=[decision.key], args=[decision.token])


def _allowed(decision: Decision) -> Decision:
    """The decision; RateLimited, with its headers, when it refuses."""
    if not decision.allowed:
        raise RateLimited(headers=decision.headers)
    return decision
