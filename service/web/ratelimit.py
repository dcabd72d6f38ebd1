"""Per-account rate limits over a rolling hour, in Redis, atomic under concurrency.

Each check is one Lua script (one round trip), and uses Redis' clock so that every web
process agrees on what "the last hour" is.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

from service.core.errors import RateLimited, SubDomainRateLimited

HOUR_MS = 3600 * 1000

# A sliding log: one sorted-set member per admitted request, scored by its time.
# Refused requests are not logged, so a client that backs off gets in again.
SLIDING_LOG = """
local key, window, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local n = redis.call('ZCARD', key)
local allowed = 0
if n < limit then
    redis.call('ZADD', key, now, ARGV[3])
    redis.call('PEXPIRE', key, window)
    n = n + 1
    allowed = 1
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
local reset = now + window
if oldest[2] then reset = tonumber(oldest[2]) + window end
return {allowed, limit - n, reset, now}
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


class RateLimiter:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._sliding = redis.register_script(SLIDING_LOG)
        self._once = redis.register_script(ONCE)
        self._release = redis.register_script(RELEASE)

    async def hit(self, account_id: int, bucket: str, limit: int) -> Decision:
        """Count one request of `bucket` for the account; raise RateLimited when over."""
        key = f"{self.prefix}rl:{bucket}:{account_id}"
        allowed, remaining, reset, now = await self._sliding(
            keys=[key], args=[HOUR_MS, limit, secrets.token_hex(8)]
        )
        decision = Decision(bool(allowed), limit, int(remaining), int(reset), int(now))
        if not decision.allowed:
            raise RateLimited(headers=decision.headers)
        return decision

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
