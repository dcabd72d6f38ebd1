"""The web process: `create_app(settings)` builds it from the route table, each resource
in a cleanup context."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from marshmallow import Schema

from service.core.db import Database
from service.core.errors import BACKEND_DOWN
from service.core.redisconn import arq_redis, follow_master
from service.core.settings import Settings
from service.core.waiters import TaskWaiters
from service.web.accepts import Accepts
from service.web.api.apidoc import DOCUMENT
from service.web.api.schemas import Limits, domain_paths
from service.web.clients import trusted_networks
from service.web.middleware import error_middleware
from service.web.ops.metrics import METRICS, WebMetrics, observe_middleware
from service.web.policy import wrap
from service.web.ratelimit import RateLimiter
from service.web.routes import ROUTES
from service.web.server import hide_banner
from service.web.state import (
    ACCEPTS,
    ARQ,
    DB,
    DOMAIN_PATHS,
    IDEMPOTENCY_SLOTS,
    KEY_USES,
    LIMITER,
    READS,
    SCHEMAS,
    SETTINGS,
    THROTTLE,
    TRUSTED_PROXIES,
    WAITERS,
)
from service.web.state import ROUTES as ROUTE_TABLE
from service.web.throttle import AuthThrottle, KeyUses

log = logging.getLogger("mailprov.web")


async def _pool(settings: Settings, dsn: str, what: str) -> Database:
    try:
        # connecting the pool's first connections is the check
        return await Database.connect(dsn, min_size=settings.db_pool_min,
                                      max_size=settings.db_pool_max)
    except BACKEND_DOWN as exc:
        # start all the same, with a pool that connects on demand: requests answer 503
        # until Postgres is back, then just work, with no restart of this process
        log.warning("%s unreachable at startup (%s); answering 503 until it is back",
                    what, type(exc).__name__)
        return await Database.connect(dsn, min_size=0, max_size=settings.db_pool_max)


async def postgres_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[DB] = db = await _pool(settings, settings.database_url, "Postgres")
    app[READS] = reads = db
    if settings.database_replica_url:
        app[READS] = reads = await _pool(settings, settings.database_replica_url,
                                         "The Postgres replica")
    yield
    if reads is not db:
        await reads.close()
    await db.close()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # not arq's create_pool, which pings until it connects or gives up: the web starts while
    # Redis is down, each request that needs it answers 503 (the short connect timeout keeps
    # that quick) until it is back, and redis-py reconnects by itself (through Sentinel,
    # to whichever server is the master then)
    arq = arq_redis(settings.redis_url, connect_timeout=2)
    arq.default_queue_name = settings.queue_name
    try:
        await arq.ping()
    except BACKEND_DOWN as exc:
        log.warning("Redis unreachable at startup (%s); answering 503 until it is back",
                    type(exc).__name__)
    app[ARQ] = arq
    app[LIMITER] = RateLimiter(arq, settings.redis_prefix)
    app[ACCEPTS] = Accepts(app[DB], arq)
    app[THROTTLE] = AuthThrottle(arq, settings.redis_prefix, settings.auth_failures_per_minute)
    following = asyncio.create_task(follow_master(arq), name="follow-master")
    yield
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)
    await arq.aclose()


async def waiters_ctx(app: web.Application) -> AsyncIterator[None]:
    # one listening connection per process, whatever the number of waiting requests
    waiters = TaskWaiters(app[SETTINGS].database_url)
    await waiters.start()
    app[WAITERS] = waiters
    yield
    await waiters.close()


async def release_polls(app: web.Application) -> None:
    # on_shutdown runs before the server waits for requests in flight: held polls answer
    # at once instead of holding a graceful stop for up to their 60 s
    app[WAITERS].release()


def _schema(kind: type[Schema], settings: Settings) -> Schema:
    if issubclass(kind, Limits):
        return kind(bulk_max=settings.bulk_max, sub_domains_max=settings.sub_domains_max)
    return kind()


def create_app(settings: Settings) -> web.Application:
    # observe_middleware is outermost: it times, counts and logs each final response
    app = web.Application(middlewares=[observe_middleware, error_middleware],
                          client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[ROUTE_TABLE] = {route.name: route for route in ROUTES}
    app[SCHEMAS] = {route.name: _schema(route.policy.schema, settings)
                    for route in ROUTES if route.policy is not None}
    app[DOMAIN_PATHS] = {name: domain_paths(schema) for name, schema in app[SCHEMAS].items()}
    app[TRUSTED_PROXIES] = trusted_networks(settings.trusted_proxies)
    app[KEY_USES] = KeyUses()
    app[METRICS] = WebMetrics()
    app[DOCUMENT] = {}
    # sized db_pool_max - 1: service/web/idempotency.py says why
    app[IDEMPOTENCY_SLOTS] = asyncio.Semaphore(max(1, settings.db_pool_max - 1))
    app.cleanup_ctx.extend([postgres_ctx, redis_ctx, waiters_ctx])
    app.on_response_prepare.append(hide_banner)
    app.on_shutdown.append(release_polls)
    for route in ROUTES:
        if route.method == "GET":
            app.router.add_get(route.path, wrap(route), name=route.name)
        else:
            app.router.add_route(route.method, route.path, wrap(route), name=route.name)
    return app
