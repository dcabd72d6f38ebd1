"""Redis from `REDIS_URL`: one server (`redis://`, `rediss://`, `unix://`), or the master
that Redis Sentinel names (`redis+sentinel://h1:26379,h2:26379/mymaster/0`: the
sentinels, the service name, the database number). Every process makes its clients here,
so web, worker and commands all take either form.

Through Sentinel, a connection asks the sentinels where the master is each time it
connects; on a failover Sentinel disconnects the old master's clients (and a write to a
demoted master fails as read-only), so the next command reconnects to the new master
without a restart. A forced failover (`SENTINEL FAILOVER`) leaves the old master
writable until the sentinels demote it, up to seconds later: `follow_master` asks the
sentinels every second, so idle connections move to the new master at once rather
than then."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import redis.exceptions
from arq.connections import ArqRedis, RedisSettings
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # -> TLS
SENTINEL_PORT = 26379
FORM = "redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]"


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False


def _host_port(text: str) -> tuple[str, int]:
    if text.startswith("["):  # [v6]:port
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"REDIS_URL: sentinel {text!r} has no host ({FORM})")
    try:
        return host, int(port) if port else SENTINEL_PORT
    except ValueError:
        raise ValueError(f"REDIS_URL: sentinel {text!r} has a bad port ({FORM})") from None


def sentinel_target(url: str) -> SentinelTarget | None:
    """The sentinels, service and database of a `redis+sentinel://` URL; None for any
    other scheme. A malformed URL is a ValueError naming REDIS_URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SENTINEL_SCHEMES:
        return None
    netloc, _, path = rest.partition("/")
    netloc = netloc.partition("?")[0]
    userinfo, _, hosts = netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    parts = [p for p in path.partition("?")[0].split("/") if p]
    if not hosts or not parts or len(parts) > 2:
        raise ValueError(f"REDIS_URL: expected {FORM}")
    if len(parts) == 2 and not parts[1].isdigit():
        raise ValueError(f"REDIS_URL: the database {parts[1]!r} is not a number ({FORM})")
    return SentinelTarget(
        sentinels=[_host_port(h) for h in hosts.split(",") if h],
        service=unquote(parts[0]), db=int(parts[1]) if len(parts) == 2 else 0,
        username=unquote(username) or None, password=unquote(password) or None,
        ssl=SENTINEL_SCHEMES[scheme])


def check_url(url: str) -> None:
    """Raise ValueError, naming REDIS_URL, when `url` is no form this module takes."""
    if sentinel_target(url) is None:
        try:
            RedisSettings.from_dsn(url)
        except (RuntimeError, ValueError):
            raise ValueError(f"REDIS_URL {url.partition('://')[0]!r}: expected redis://, "
                             f"rediss://, unix:// or {FORM}") from None


def redis_settings(url: str, **changes: Any) -> RedisSettings:
    """arq's settings for `url` (its workers and `create_pool`), with `changes` applied."""
    target = sentinel_target(url)
    if target is None:
        base = RedisSettings.from_dsn(url)
    else:
        base = RedisSettings(host=target.sentinels, sentinel=True, sentinel_master=target.service,
                             database=target.db, username=target.username,
                             password=target.password, ssl=target.ssl)
    return dataclasses.replace(base, **changes)


# A command is sent again, once, on a fresh connection when its own was closed under it:
# uvloop raises RuntimeError ("the handler is closed") for a write to a closed transport,
# which a failover's disconnect of the old master's connections leaves in the pool. (The
# write failed, so the command was not sent.) redis-py adds its connection errors and
# timeouts to the same single retry.
RETRY_ON: list[type[Exception]] = [RuntimeError]


def arq_redis(url: str, *, connect_timeout: float) -> ArqRedis:
    """A client that connects on demand (no ping here: the caller decides what a down
    Redis means), with a short connect timeout to a server or a sentinel."""
    target = sentinel_target(url)
    if target is None:
        return ArqRedis.from_url(url, socket_connect_timeout=connect_timeout,
                                 retry_on_error=RETRY_ON)
    sentinel = Sentinel(target.sentinels, ssl=target.ssl,
                        sentinel_kwargs={"socket_connect_timeout": connect_timeout,
                                         "socket_timeout": connect_timeout},
                        socket_connect_timeout=connect_timeout)
    return sentinel.master_for(target.service, redis_class=ArqRedis, db=target.db,
                               username=target.username, password=target.password,
                               retry_on_error=RETRY_ON)


async def follow_master(client: Redis, every_s: float = 1.0) -> None:
    """Until cancelled: ask the sentinels where the master is; when it moved, the pool
    drops its idle connections, and the next command connects to the new master (one in
    use moves when the old master, demoted, refuses its write). Returns at once for a
    client of one server."""
    pool = client.connection_pool
    if not isinstance(pool, SentinelConnectionPool):
        return
    while True:
        await asyncio.sleep(every_s)
        try:
            await pool.get_master_address()
        except (OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            continue  # no sentinel answers, or none names a master: the next turn asks again
