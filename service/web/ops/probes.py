"""Probes for the web process: `/healthz` (alive) and `/readyz` (able to serve: Postgres,
Redis and the schema, and the pool that hashes the passwords clients send).

Neither takes a key: a load balancer or an orchestrator calls them. A failing check names
the dependency and the kind of failure, never an address or a message from the server.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from aiohttp import web

from service.core.sql import SCHEMA
from service.web.state import ARQ, DB

log = logging.getLogger("mailprov.health")

# a probe that waits longer than this is answered "not ready" rather than left hanging
CHECK_TIMEOUT_S = 2.0
# every table and index schema.sql creates: a release that has not migrated lacks some
SCHEMA_OBJECTS = re.findall(r"CREATE (?:UNIQUE )?(?:TABLE|INDEX) IF NOT EXISTS (\w+)", SCHEMA)


async def healthz(request: web.Request) -> web.Response:
    """The process is up and its event loop answers."""
    return web.json_response({"status": "ok"})


async def _check(name: str, probe: Any, within_s: float = CHECK_TIMEOUT_S) -> str:
    try:
        return await asyncio.wait_for(probe, within_s)
    except TimeoutError:
        return f"no answer within {within_s:g} s"
    except Exception as exc:
        log.warning("readiness: %s unavailable", name, exc_info=True)
        return f"unavailable ({type(exc).__name__})"


async def _postgres(request: web.Request) -> str:
    missing = await request.app[DB].schema_missing(names=SCHEMA_OBJECTS)
    if missing:
        names = ", ".join(missing)
        return f"schema not applied (missing {names}); run `mailprov migrate`"
    return "ok"


async def _redis(request: web.Request) -> str:
    await request.app[ARQ].ping()
    return "ok"


async def readyz(request: web.Request) -> web.Response:
    """Postgres and Redis answer, and the schema is applied: 200, else 503 with the cause.
    (The web hashes nothing: the workers' pools are checked by `mailprov worker --check`.)"""
    postgres, redis = await asyncio.gather(_check("postgres", _postgres(request)),
                                           _check("redis", _redis(request)))
    checks = {"postgres": postgres, "redis": redis}
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"status": "ready" if ready else "unavailable", "checks": checks},
                             status=200 if ready else 503)
