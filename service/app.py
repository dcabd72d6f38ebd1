"""The web process: `create_app(settings)` builds it, each resource in a cleanup context."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from arq.connections import ArqRedis

from service import domains, idempotency, mailboxes, ops, tasks
from service.apidoc import setup_docs
from service.db import Database
from service.errors import BACKEND_DOWN
from service.idempotency import idempotent
from service.metrics import observe_middleware
from service.middleware import error_middleware
from service.passwords import Hasher
from service.ratelimit import RateLimiter
from service.settings import Settings
from service.state import ARQ, DB, HASHER, LIMITER, SCHEMAS, SETTINGS, BodySchemas

log = logging.getLogger("mailprov.web")

API = "/api/v1"


async def postgres_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    try:
        # connecting the pool's first connections is the check
        db = await Database.connect(settings.database_url, min_size=settings.db_pool_min,
                                    max_size=settings.db_pool_max)
    except BACKEND_DOWN as exc:
        # start all the same, with a pool that connects on demand: requests answer 503
        # until Postgres is back, then just work, with no restart of this process
        log.warning("Postgres unreachable at startup (%s); answering 503 until it is back",
                    type(exc).__name__)
        db = await Database.connect(settings.database_url, min_size=0,
                                    max_size=settings.db_pool_max)
    app[DB] = db
    yield
    await db.close()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # not arq's create_pool, which pings until it connects or gives up: the web starts while
    # Redis is down, each request that needs it answers 503 (the short connect timeout keeps
    # that quick) until it is back, and redis-py reconnects by itself
    arq = ArqRedis.from_url(settings.redis_url, socket_connect_timeout=2)
    arq.default_queue_name = settings.queue_name
    try:
        await arq.ping()
    except BACKEND_DOWN as exc:
        log.warning("Redis unreachable at startup (%s); answering 503 until it is back",
                    type(exc).__name__)
    app[ARQ] = arq
    app[LIMITER] = RateLimiter(arq, settings.redis_prefix)
    yield
    await arq.aclose()


async def hasher_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # the web process hashes only passwords a client supplies; two processes are plenty
    hasher = Hasher(settings.argon2_time_cost, settings.argon2_memory_kib,
                    min(settings.hash_processes or 2, 2))
    app[HASHER] = hasher
    yield
    hasher.close()


def create_app(settings: Settings) -> web.Application:
    # observe_middleware is outermost: it times, counts and logs each final response
    app = web.Application(middlewares=[observe_middleware, error_middleware],
                          client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[SCHEMAS] = BodySchemas.build(settings)
    app[idempotency.SLOTS] = asyncio.Semaphore(max(1, settings.db_pool_max - 1))
    app.cleanup_ctx.extend([postgres_ctx, redis_ctx, hasher_ctx])
    app.router.add_routes([
        web.get(f"{API}/list/domain", domains.list_domains, name="list_domain"),
        # every create endpoint takes an Idempotency-Key
        web.post(f"{API}/create/domain", idempotent(domains.create_domain),
                 name="create_domain"),
        web.post(f"{API}/create/sub-domain", idempotent(domains.create_sub_domains),
                 name="create_sub_domain"),
        web.post(f"{API}/create/mailbox/single", idempotent(mailboxes.create_single),
                 name="create_mailbox_single"),
        web.post(f"{API}/create/mailbox/bulk", idempotent(mailboxes.create_bulk),
                 name="create_mailbox_bulk"),
        web.get(f"{API}/list/mailbox", mailboxes.list_mailboxes, name="list_mailbox"),
        web.get(f"{API}/get/mailbox/single", tasks.get_mailbox_single,
                name="get_mailbox_single"),
        web.get(f"{API}/get/mailbox/bulk", tasks.get_mailbox_bulk, name="get_mailbox_bulk"),
        web.get(f"{API}/get/task", tasks.get_task, name="get_task"),
    ])
    setup_docs(app, API)
    ops.setup(app)  # /healthz, /readyz, /metrics, /ops: no API key, outside /api/v1
    return app
