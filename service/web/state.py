"""Typed application state: every `app[...]` and `request[...]` key the web process uses."""

from __future__ import annotations

import asyncio
import ipaddress

from aiohttp import web
from arq.connections import ArqRedis
from marshmallow import Schema

from service.core.db import Database
from service.core.settings import Settings
from service.core.waiters import TaskWaiters
from service.web.accepts import Accepts
from service.web.ratelimit import Decision, RateLimiter
from service.web.route import Route
from service.web.throttle import AuthThrottle, KeyUses

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", Database)
# reads that may be a little stale (lists, the ops page, metrics): the pool of
# MAILPROV_DATABASE_REPLICA_URL when it is set, else DB itself. Writes, lookups before a
# write, and polls of one's own task stay on DB, the primary
READS = web.AppKey("reads", Database)
ARQ = web.AppKey("arq", ArqRedis)
LIMITER = web.AppKey("limiter", RateLimiter)
# task-recording writes gathered per turn of the event loop (service/web/accepts.py)
ACCEPTS = web.AppKey("accepts", Accepts)
# requests long-polling a task (service/core/waiters.py)
WAITERS = web.AppKey("waiters", TaskWaiters)
# each policy route's schema, built once from the settings (marshmallow schemas are reusable)
SCHEMAS = web.AppKey("schemas", dict[str, Schema])
# Idempotency-Key transactions that may run at once (service/web/idempotency.py says why)
IDEMPOTENCY_SLOTS = web.AppKey("idempotency_slots", asyncio.Semaphore)

# the failed-auth throttle, the proxies whose X-Forwarded-For is believed, and the keys
# this process saw work (service/web/throttle.py, service/web/auth.py)
THROTTLE = web.AppKey("throttle", AuthThrottle)
TRUSTED_PROXIES = web.AppKey("trusted_proxies", list[Network])
KEY_USES = web.AppKey("key_uses", KeyUses)
# where each request's schema names a domain (service/web/api/schemas.py, domain_paths)
DOMAIN_PATHS = web.AppKey("domain_paths", dict[str, list[tuple[str, ...]]])

# per request
REQUEST_ID = web.RequestKey("request_id", str)
CLIENT = web.RequestKey("client", str)
RATE = web.RequestKey("rate_decision", Decision)
# the route table by route name (service/web/routes.py)
ROUTES = web.AppKey("routes", dict[str, Route])
