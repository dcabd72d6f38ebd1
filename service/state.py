"""Typed application state: every `app[...]` key the web process uses."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from arq.connections import ArqRedis

from service.db import Database
from service.passwords import Hasher
from service.ratelimit import Decision, RateLimiter
from service.schemas import (
    CreateDomain,
    CreateMailboxBulk,
    CreateMailboxSingle,
    CreateSubDomain,
)
from service.settings import Settings


@dataclass(frozen=True)
class BodySchemas:
    """Schema instances built once from the settings (marshmallow schemas are reusable)."""

    domain: CreateDomain
    sub_domain: CreateSubDomain
    mailbox_single: CreateMailboxSingle
    mailbox_bulk: CreateMailboxBulk

    @classmethod
    def build(cls, settings: Settings) -> BodySchemas:
        limits = {"bulk_max": settings.bulk_max, "sub_domains_max": settings.sub_domains_max}
        return cls(CreateDomain(**limits), CreateSubDomain(**limits),
                   CreateMailboxSingle(**limits), CreateMailboxBulk(**limits))


SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", Database)
ARQ = web.AppKey("arq", ArqRedis)
LIMITER = web.AppKey("limiter", RateLimiter)
HASHER = web.AppKey("hasher", Hasher)
SCHEMAS = web.AppKey("schemas", BodySchemas)

# per request
REQUEST_ID = web.RequestKey("request_id", str)
RATE = web.RequestKey("rate_decision", Decision)
