"""Fixtures of the fault tests: worker processes, a redis-server and a Postgres proxy of
the test's own (tests/integration/harness.py), each stopped when the test ends, and
databases a test may break."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from service.core.settings import Settings
from tests.integration.harness import OwnRedis, Proxy, WorkerProcess


@pytest.fixture
async def workers(tmp_path: Path, settings: Settings,
                  redis: Any) -> AsyncIterator[Callable[..., WorkerProcess]]:
    """Start `mailprov worker` processes (`workers(settings, **env)`); killed at the end."""
    started: list[WorkerProcess] = []

    def start(settings: Settings, **env: str) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(started)}.log", **env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.popen.poll() is None:
            worker.kill()
    # what older releases left behind: arq named the sweeper's cron jobs after the queue,
    # but outside its prefix (arq:job:<queue>:sweep:<time>)
    stray = [k async for k in redis.scan_iter(match=f"arq:*:{settings.redis_prefix}*")]
    if stray:
        await redis.delete(*stray)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    yield server
    server.stop()


@pytest.fixture
async def postgres_proxy(settings: Settings) -> AsyncIterator[Proxy]:
    parts = urlsplit(settings.database_url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    yield proxy
    await proxy.close()


@pytest.fixture
async def scratch_db(backends, template_db):
    """A database of this test's own, which it may drop or leave empty; `template` picks
    whether it has the schema."""
    made = []

    async def make(template=True):
        name = f"mailprov_h_{secrets.token_hex(4)}"
        conn = await asyncpg.connect(backends.admin_dsn)
        try:
            clause = f' TEMPLATE "{template_db}"' if template else ""
            await conn.execute(f'CREATE DATABASE "{name}"{clause}')
        finally:
            await conn.close()
        made.append(name)
        return name, backends.dsn(name)

    yield make
    conn = await asyncpg.connect(backends.admin_dsn)
    try:
        for name in made:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
