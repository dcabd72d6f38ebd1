"""Fixtures shared by every test: real Postgres, real Redis, the real arq worker.

Servers: `DATABASE_URL`/`REDIS_URL` when set, else the default local ports when something
answers there, else embedded servers started for this session (service/embedded.py).
Isolation: each test gets its own database, cloned from a template that has the schema,
and its own Redis key prefix; it removes both afterwards and touches nothing else.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from service.core import logs
from service.core.accounts import create_account
from service.core.db import Database
from service.core.migrate import apply_schema
from service.core.passwords import Hasher
from service.core.settings import Settings
from service.web.app import create_app
from worker.main import create_worker

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
# cheap hashing keeps a 1000-mailbox test fast; the format and verification are the same
TEST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 1024}
# MAILPROV_SECRET_KEY for the session; every process a test starts (serve, worker)
# inherits it, as a deployment's processes share theirs
os.environ.setdefault("MAILPROV_SECRET_KEY", secrets.token_urlsafe(32))
SECRET_KEY = os.environ["MAILPROV_SECRET_KEY"]


@dataclass
class Backends:
    admin_dsn: str  # a maintenance database on the server, for CREATE/DROP DATABASE
    redis_url: str

    def dsn(self, database: str) -> str:
        parts = urlsplit(self.admin_dsn)
        return urlunsplit(parts._replace(path=f"/{database}"))


def _reachable(host: str, port: int) -> bool:
    from service.cli.embedded import port_open

    return port_open(host, port)


@pytest.fixture(scope="session")
def backends() -> Iterator[Backends]:
    database_url = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    pg_up = database_url is not None or _reachable("127.0.0.1", 5432)
    redis_up = redis_url is not None or _reachable("127.0.0.1", 6379)
    embedded = None
    if not (pg_up and redis_up):
        from service.cli.embedded import EmbeddedServers

        data_dir = Path(tempfile.mkdtemp(prefix="mailprov-test-"))
        embedded = EmbeddedServers(data_dir)
        embedded.start()
    admin = database_url or (DEFAULT_PG if pg_up else embedded.database_url)  # type: ignore[union-attr]
    admin = urlunsplit(urlsplit(admin)._replace(path="/postgres"))
    yield Backends(admin, redis_url or (DEFAULT_REDIS if redis_up else embedded.redis_url))  # type: ignore[union-attr]
    if embedded is not None:
        embedded.stop()
        shutil.rmtree(embedded.data_dir, ignore_errors=True)


async def _admin(backends: Backends) -> asyncpg.Connection:
    return await asyncpg.connect(backends.admin_dsn)


@pytest.fixture(scope="session")
async def template_db(backends: Backends) -> AsyncIterator[str]:
    name = f"mailprov_tpl_{secrets.token_hex(4)}"
    await apply_schema(backends.dsn(name))  # creates the database
    yield name
    conn = await _admin(backends)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def hasher() -> Iterator[Hasher]:
    pool = Hasher(TEST_ARGON2["argon2_time_cost"], TEST_ARGON2["argon2_memory_kib"], 2)
    yield pool
    pool.close()


@pytest.fixture
async def settings(backends: Backends, template_db: str) -> AsyncIterator[Settings]:
    """Settings of one test: its own database and Redis prefix."""
    token = secrets.token_hex(4)
    name = f"mailprov_t_{token}"
    conn = await _admin(backends)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await conn.close()
    dsn = backends.dsn(name)
    db = await asyncpg.connect(dsn)
    try:
        # arq's job keys are global to a Redis (arq:job:<id>), and the job id is the task id:
        # give each test database its own id range so tests never share a job key
        await db.execute("SELECT setval('tasks_id_seq', $1)", secrets.randbelow(2**40) * 1000 + 1)
    finally:
        await db.close()
    yield Settings(database_url=dsn, redis_url=backends.redis_url,
                   redis_prefix=f"mailprov-test:{token}:", secret_key=SECRET_KEY,
                   **TEST_ARGON2)
    await _cleanup(backends, name, dsn, f"mailprov-test:{token}:")


async def _cleanup(backends: Backends, name: str, dsn: str, prefix: str) -> None:
    db = await asyncpg.connect(dsn)
    try:
        task_ids = [r["id"] for r in await db.fetch("SELECT id FROM tasks")]
    finally:
        await db.close()
    r = aioredis.Redis.from_url(backends.redis_url)
    try:
        keys = [k async for k in r.scan_iter(match=f"{prefix}*", count=1000)]
        keys += [f"arq:{kind}:{task_id}" for task_id in task_ids
                 for kind in ("job", "result", "in-progress", "retry")]
        for i in range(0, len(keys), 1000):
            await r.delete(*keys[i:i + 1000])
    finally:
        await r.aclose()
    conn = await _admin(backends)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = await Database.connect(settings.database_url, min_size=1, max_size=4)
    yield database
    await database.close()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(settings.redis_url)
    yield r
    await r.aclose()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(settings))) as test_client:
        yield test_client


@pytest.fixture
def run_worker(settings: Settings, hasher: Hasher) -> Any:
    """Run the real arq worker in burst mode until the queue is empty."""

    async def run(**overrides: Any) -> Any:
        chosen = overrides.pop("settings", settings)
        worker = create_worker(
            chosen, burst=True, poll_delay=0, handle_signals=False,
            ctx={"settings": chosen, "hasher": hasher}, **overrides,
        )
        try:
            await worker.main()
        finally:
            await worker.close()
        return worker

    return run


class Factory:
    """Accounts, domains and mailboxes made through the real API and worker."""

    def __init__(self, client: TestClient, db: Database, run_worker: Any) -> None:
        self.client = client
        self.db = db
        self.run_worker = run_worker

    async def account(self, name: str = "acme") -> tuple[int, str]:
        return await create_account(self.db, name)

    async def post(self, route: str, body: dict[str, Any], key: str) -> Any:
        r = await self.client.post(url(self.client, route), json={**body, "key": key})
        return r

    async def domain(self, key: str, name: str = "example.com", **params: Any) -> int:
        r = await self.post("create_domain", {"Domain": name, "Params": params}, key)
        assert r.status == 200, await r.text()
        await self.run_worker()
        return (await r.json())["task_id"]

    async def task(self, key: str, task_id: int, route: str = "get_task") -> tuple[int, Any]:
        r = await self.client.get(url(self.client, route), params={"key": key,
                                                                   "task_id": task_id})
        return r.status, await r.json()

    async def rest(self, method: str, route: str, key: str, json: Any = None,
                   params: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                   **parts: Any) -> Any:
        """A resource API request (the key as its Bearer header); the response, its body
        read as `.body`."""
        r = await self.client.request(method, url(self.client, route, **parts), json=json,
                                      params=params,
                                      headers={"Authorization": f"Bearer {key}",
                                               **(headers or {})})
        r.body = await r.json()  # type: ignore[attr-defined]
        return r

    async def rest_url(self, key: str, path: str) -> Any:
        """GET a path as a page's link gives it (its query included)."""
        r = await self.client.get(path, headers={"Authorization": f"Bearer {key}"})
        r.body = await r.json()  # type: ignore[attr-defined]
        return r

    async def done(self, key: str, answer: Any) -> Any:
        """Run the worker, then the task of an accepted write, as GET /tasks/{id} shows it."""
        assert answer.status == 202, answer.body
        await self.run_worker()
        r = await self.rest("GET", "task", key, task_id=answer.body["task_id"])
        assert r.status == 200, r.body
        return r.body


def fill(value: Any, domain: str, example: str = "example.com") -> Any:
    """A documented example with its domain replaced wherever it appears (addresses too)."""
    if isinstance(value, str):
        return value.replace(example, domain)
    if isinstance(value, dict):
        return {k: fill(v, domain, example) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, domain, example) for v in value]
    return value


async def send(client: TestClient, route: Any, key: str, fields: dict[str, Any] | None = None,
               parts: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Any:
    """A request to any API route of the table, in its own face: the MailAPI's key in the
    body or the query, the resource API's as a Bearer header; `fields` are the body of a
    route that has one, else the query; `parts` fill the path."""
    path = url(client, route.name, **(parts or {}))
    headers = dict(headers or {})
    if route.policy.bearer:
        headers["Authorization"] = f"Bearer {key}"
    else:
        fields = {**(fields or {}), "key": key}
    if route.policy.body is not None:
        return await client.request(route.method, path, json=fields or {}, headers=headers)
    return await client.request(route.method, path, params=fields, headers=headers)


def url(client: TestClient, route: str, **parts: Any) -> str:
    """A route's path, built from its name (and its path's parts)."""
    return str(client.app.router[route].url_for(  # type: ignore[union-attr]
        **{k: str(v) for k, v in parts.items()}))


@pytest.fixture
def make(client: TestClient, db: Database, run_worker: Any) -> Factory:
    return Factory(client, db, run_worker)


@pytest.fixture
def captured():
    """Every line any logger writes during the test, as the processes write them."""
    stream = io.StringIO()
    handler = logs.handler("json", stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)
