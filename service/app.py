"""The web process: `create_app(settings)` builds it, each resource in a cleanup context."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from arq import create_pool

from service import domains, mailboxes, tasks
from service.db import Database
from service.middleware import error_middleware
from service.passwords import Hasher
from service.queue import redis_settings
from service.ratelimit import RateLimiter
from service.settings import Settings
from service.state import ARQ, DB, HASHER, LIMITER, SCHEMAS, SETTINGS, BodySchemas

log = logging.getLogger("mailprov.web")

API = "/api/v1"


async def postgres_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    db = await Database.connect(settings.database_url, min_size=settings.db_pool_min,
                                max_size=settings.db_pool_max)
    await db.pool.fetchval("SELECT 1")
    app[DB] = db
    yield
    await db.close()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # fail fast when Redis is down: a request should get its 503 within seconds
    arq = await create_pool(redis_settings(settings.redis_url, conn_timeout=2, conn_retries=0),
                            default_queue_name=settings.queue_name)
    await arq.ping()
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
    app = web.Application(middlewares=[error_middleware],
                          client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[SCHEMAS] = BodySchemas.build(settings)
    app.cleanup_ctx.extend([postgres_ctx, redis_ctx, hasher_ctx])
    app.router.add_routes([
        web.get(f"{API}/list/domain", domains.list_domains, name="list_domain"),
        web.post(f"{API}/create/domain", domains.create_domain, name="create_domain"),
        web.post(f"{API}/create/sub-domain", domains.create_sub_domains,
                 name="create_sub_domain"),
        web.post(f"{API}/create/mailbox/single", mailboxes.create_single,
                 name="create_mailbox_single"),
        web.post(f"{API}/create/mailbox/bulk", mailboxes.create_bulk,
                 name="create_mailbox_bulk"),
        web.get(f"{API}/list/mailbox", mailboxes.list_mailboxes, name="list_mailbox"),
        web.get(f"{API}/get/mailbox/single", tasks.get_mailbox_single,
                name="get_mailbox_single"),
        web.get(f"{API}/get/mailbox/bulk", tasks.get_mailbox_bulk, name="get_mailbox_bulk"),
        web.get(f"{API}/get/task", tasks.get_task, name="get_task"),
    ])
    return app
