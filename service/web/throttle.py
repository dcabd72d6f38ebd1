"""Brakes on bad keys: failed key checks are counted per client address in Redis, and an
address past `auth_failures_per_minute` gets 429 before any key lookup.

- Every check of a key this process has not seen work in the last minute takes a slot of
  its address's window first (one Lua call: count, then allow or refuse), so however many
  requests arrive at once, at most the limit reach Postgres per address and minute.
- A key that turns out good gives its slot back and is remembered as good (in Redis, a
  day): good keys from an address that is being refused keep working, whatever the other
  clients behind the same address send. A key this process saw work within the minute is
  not checked against the throttle at all, so the hot path costs no Redis round trip.
- The address is the client's as service/web/clients.py finds it.
- When Redis is unreachable the throttle lets checks through (and says so in the log):
  availability over a brake that only matters under attack.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from redis.asyncio import Redis

from service.core.errors import BACKEND_DOWN, RateLimited
from service.core.store import Row
from service.web.ratelimit import Decision

log = logging.getLogger("mailprov.web")

WINDOW_S = 60
# a key that worked is trusted from any address for this long
GOOD_FOR_S = 24 * 3600

# KEYS: the address's failures, the key's "known good" mark (or "" without a key)
# -> {allowed, counted, seconds left in the window, now}
ADMIT = """
local t = redis.call('TIME')
if KEYS[2] ~= '' and redis.call('EXISTS', KEYS[2]) == 1 then return {1, 0, 0, t[1]} end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
local ttl = redis.call('TTL', KEYS[1])
if n > tonumber(ARGV[1]) then return {0, 1, ttl, t[1]} end
return {1, 1, ttl, t[1]}
"""
# a check that succeeded: give its slot back (when it took one), and mark the key good
TRUST = """
if ARGV[1] == '1' and tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
    redis.call('DECR', KEYS[1])
end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
return 1
"""


# how long a key that worked is taken as good without asking the throttle, and how often
# its last use is written
RECENT_S = 60.0
# keys remembered at most; past it, the ones not seen within RECENT_S are forgotten
REMEMBERED = 10_000

K = TypeVar("K")
V = TypeVar("V")


class KeyUses:
    """The keys this process saw work, and when (by their hash); and, for a recent key,
    what its reusable lookups found (Lookup.reusable), for the key's next write to build
    on and check again as it records its task."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._found: dict[tuple[str, Any], tuple[float, Row]] = {}

    def recent(self, key_hash: str) -> bool:
        seen = self._seen.get(key_hash)
        return seen is not None and time.monotonic() - seen < RECENT_S

    def mark(self, key_hash: str) -> None:
        self._seen = _remember(self._seen, key_hash, time.monotonic(), lambda t: t)

    def forget(self, key_hash: str) -> None:
        self._seen.pop(key_hash, None)

    def found(self, key_hash: str, value: Any) -> Row | None:
        """What the key's lookup of `value` found within the last RECENT_S, while the key
        is recent; None otherwise."""
        entry = self._found.get((key_hash, value))
        if (entry is None or time.monotonic() - entry[0] >= RECENT_S
                or not self.recent(key_hash)):
            return None
        return entry[1]

    def remember(self, key_hash: str, value: Any, row: Row) -> None:
        now = time.monotonic()
        self._found = _remember(self._found, (key_hash, value), (now, row), lambda e: e[0])

    def forget_found(self, key_hash: str, value: Any) -> None:
        self._found.pop((key_hash, value), None)


def _remember(entries: dict[K, V], key: K, value: V, when: Callable[[V], float]) -> dict[K, V]:
    """`entries` with `key` set, at most REMEMBERED of them: past it, those older than
    RECENT_S go (all of them, if every one is newer)."""
    if len(entries) >= REMEMBERED:
        now = time.monotonic()
        entries = {k: v for k, v in entries.items() if now - when(v) < RECENT_S}
        if len(entries) >= REMEMBERED:
            entries = {}
    entries[key] = value
    return entries


class AuthThrottled(RateLimited):
    """Too many failed API key checks from this address; try again later."""


class AuthThrottle:
    def __init__(self, redis: Redis, prefix: str, per_minute: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.per_minute = per_minute
        self._admit = redis.register_script(ADMIT)
        self._trust = redis.register_script(TRUST)

    def _failures(self, client: str) -> str:
        return f"{self.prefix}auth:fail:{client}"

    def _good(self, key_hash: str | None) -> str:
        return f"{self.prefix}auth:good:{key_hash}" if key_hash else ""

    async def _count(self, client: str, key_hash: str | None) -> tuple[bool, bool, int, int]:
        """(allowed, counted, seconds left in the window, now); when Redis is unreachable,
        allowed and not counted."""
        try:
            allowed, counted, ttl, now = await self._admit(
                keys=[self._failures(client), self._good(key_hash)],
                args=[self.per_minute, WINDOW_S])
        except BACKEND_DOWN as exc:
            log.warning("auth throttle off while Redis is unreachable (%s)",
                        type(exc).__name__)
            return True, False, 0, 0
        return bool(allowed), bool(counted), int(ttl), int(now)

    async def admit(self, client: str, key_hash: str | None) -> bool:
        """Take a slot of the address's window for a key check; AuthThrottled (429, with
        when to retry) when none is left. True when a slot was taken (a key known to be
        good takes none)."""
        allowed, counted, ttl, now = await self._count(client, key_hash)
        if not allowed:
            reset_ms = (now + max(ttl, 1)) * 1000
            raise AuthThrottled(headers=Decision(False, self.per_minute, 0, reset_ms,
                                                 now * 1000).headers)
        return counted

    async def failed(self, client: str) -> None:
        """A key that took no slot failed after all (it stopped working since this
        process last saw it): count it."""
        await self._count(client, None)

    async def trust(self, client: str, key_hash: str, counted: bool) -> None:
        """A key checked good: its slot back (when it took one), and known good."""
        try:
            await self._trust(keys=[self._failures(client), self._good(key_hash)],
                              args=["1" if counted else "0", GOOD_FOR_S])
        except BACKEND_DOWN as exc:
            log.warning("auth throttle off while Redis is unreachable (%s)",
                        type(exc).__name__)
