"""Typed application state: every `app[...]` and `request[...]` key the web process uses."""

from __future__ import annotations

import asyncio

from aiohttp import web
from arq.connections import ArqRedis
from marshmallow import Schema

from service.core.db import Database
from service.core.settings import Settings
from service.web.ratelimit import Decision, RateLimiter
from service.web.route import Route

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", Database)
ARQ = web.AppKey("arq", ArqRedis)
LIMITER = web.AppKey("limiter", RateLimiter)
# each policy route's schema, built once from the settings (marshmallow schemas are reusable)
SCHEMAS = web.AppKey("schemas", dict[str, Schema])
# Idempotency-Key transactions that may run at once (service/web/idempotency.py says why)
IDEMPOTENCY_SLOTS = web.AppKey("idempotency_slots", asyncio.Semaphore)

# per request
REQUEST_ID = web.RequestKey("request_id", str)
RATE = web.RequestKey("rate_decision", Decision)
# the route table by route name (service/web/routes.py)
ROUTES = web.AppKey("routes", dict[str, Route])
