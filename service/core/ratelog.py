"""A rate limit's sliding log, in Lua: one sorted-set member per admitted request, scored by
its time. Refused requests are not logged, so a client that backs off gets in again.

It uses Redis' clock, so every web process agrees on what "the last hour" is. The web's
RateLimiter runs it alone (service/web/ratelimit.py); an accepted write runs it in the
same script as its job's enqueue (service/core/queue.py), one round trip for both.
"""

# every limit is over a rolling hour
WINDOW_MS = 3600 * 1000

# count(key, window ms, limit, member) -> {allowed (1/0), remaining, reset ms, now ms}
COUNT = """
local function count(key, window, limit, member)
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    local n = redis.call('ZCARD', key)
    local allowed = 0
    if n < limit then
        redis.call('ZADD', key, now, member)
        redis.call('PEXPIRE', key, window)
        n = n + 1
        allowed = 1
    end
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local reset = now + window
    if oldest[2] then reset = tonumber(oldest[2]) + window end
    return {allowed, limit - n, reset, now}
end
"""
