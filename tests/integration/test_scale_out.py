"""Past one machine: two `mailprov serve` and three `mailprov worker` processes on a Redis
that Sentinel watches. The master fails over in the middle of a mixed load; every task
accepted around it completes, none twice, and the limits every process shares hold."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.cli.embedded import free_port
from service.core.accounts import create_account
from service.core.db import Database
from service.core.migrate import apply_schema
from service.web.app import create_app
from tests.conftest import url
from tests.integration.harness import ROOT, PostgresPair, SentinelRedis, until
from tests.integration.test_served import Served, serving

CREATED = "Created successfully."
PARENTS = [f"p{i}.example" for i in range(4)]
LIMITED = "limited.example"
# every task is final this long after the failover is asked for (the sweeper's re-enqueue
# of a job the old master lost comes after MAILPROV_SWEEP_QUEUED_AFTER_S, 5 s)
FINAL_WITHIN_S = 30.0


@asynccontextmanager
async def running(servers: Any) -> AsyncIterator[Any]:
    try:
        await servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture
async def sentinel_redis(tmp_path: Path) -> AsyncIterator[SentinelRedis]:
    async with running(SentinelRedis(tmp_path)) as servers:
        yield servers


@pytest.fixture
async def postgres_pair(tmp_path: Path) -> AsyncIterator[PostgresPair]:
    async with running(PostgresPair(tmp_path)) as pair:
        yield pair


class Webs:
    """Requests spread over the web processes in turn; a 503 (Redis between masters) is
    asked again, as a client would: it recorded nothing."""

    def __init__(self, session: aiohttp.ClientSession, webs: list[Served], key: str) -> None:
        self.session, self.key = session, key
        self.ports = itertools.cycle([w.port for w in webs])

    async def post(self, path: str, body: dict[str, Any], port: int | None = None) -> Any:
        port = port or next(self.ports)
        for _ in range(200):
            async with self.session.post(f"http://127.0.0.1:{port}/api/v1/{path}",
                                         json={**body, "key": self.key}) as r:
                if r.status != 503:
                    return r.status, await r.json()
            await asyncio.sleep(0.1)
        pytest.fail(f"{path}: 503 for 20 s")

    async def single(self, domain: str, name: str) -> int:
        status, body = await self.post("create/mailbox/single", {
            "Email_fullname": name, "single_bulk": "single", "Domain": domain, "Params": {}})
        assert status == 200, body
        return body["task_id"]

    async def bulk(self, prefix: str) -> int:
        status, body = await self.post("create/mailbox/bulk", {
            "Email_fullname": prefix, "single_bulk": "bulk", "Domain": LIMITED,
            "Params": {"count": 100}})
        assert status == 200, body
        return body["task_id"]

    async def sub_domains(self, parent: str, port: int) -> int:
        status, body = await self.post("create/sub-domain", {
            "Domain": parent, "Params": {"sub_domains": ["team", "sales"]}}, port)
        assert status in (200, 429), body
        return status


async def test_a_sentinel_failover_loses_nothing_and_doubles_nothing(
        settings, sentinel_redis, workers, tmp_path):
    settings = settings.replace(redis_url=sentinel_redis.url)
    async with Database.opened(settings.database_url) as db:
        _, key = await create_account(db, "acme")
    started = [workers(settings) for _ in range(3)]
    async with serving(settings, tmp_path / "web-a.log") as web_a, \
            serving(settings, tmp_path / "web-b.log") as web_b, \
            aiohttp.ClientSession() as session, \
            Database.opened(settings.database_url) as db:
        webs = Webs(session, [web_a, web_b], key)
        for name in PARENTS:
            assert (await webs.post("create/domain", {"Domain": name, "Params": {}}))[0] == 200
        status, _ = await webs.post("create/domain", {"Domain": LIMITED, "Params": {
            "max_mailboxes": 150, "quota_mb": 100000, "default_mailbox_quota_mb": 10}})
        assert status == 200

        async def all_final() -> bool:
            return not await db.pool.fetchval(
                "SELECT count(*) FROM tasks WHERE status NOT IN ('completed', 'failed')")

        await until(all_final, "the domains are made")
        singles: dict[int, str] = {}  # task -> address
        sub_domain_answers: dict[str, list[int]] = {p: [] for p in PARENTS}

        async def load(round_: int) -> list[int]:
            bulks = [await webs.bulk(f"r{round_}-")]
            for i in range(12):
                parent = PARENTS[i % len(PARENTS)]
                singles[await webs.single(parent, f"r{round_}-u{i}")] = (
                    f"r{round_}-u{i}@{parent}")
            # half the parents have their first request while the masters switch
            for parent in PARENTS if round_ else PARENTS[:2]:
                for web in (web_a, web_b):
                    sub_domain_answers[parent].append(
                        await webs.sub_domains(parent, web.port))
            return bulks

        bulks = await load(0)
        old_master = sentinel_redis.master()
        began = asyncio.get_running_loop().time()
        sentinel_redis.call(sentinel_redis.sentinel_ports[0], "SENTINEL", "FAILOVER",
                            sentinel_redis.SERVICE)
        bulks += await load(1)  # while the sentinels switch masters

        async def switched() -> bool:
            return sentinel_redis.master() != old_master

        await until(switched, "the sentinels name the replica master")
        bulks += await load(2)
        # no process was started again to follow the new master
        assert all(w.popen.poll() is None for w in started)
        await until(all_final, "every task is final", log=lambda: web_a.log()[-2000:],
                    within_s=FINAL_WITHIN_S - (asyncio.get_running_loop().time() - began))

        tasks = {r["id"]: r for r in await db.pool.fetch(
            "SELECT id, type, domain, status, results, error FROM tasks")}
        # nothing lost: every accepted single made its mailbox, every bulk finished
        for task_id, address in singles.items():
            assert tasks[task_id]["status"] == "completed", tasks[task_id]
            assert list(tasks[task_id]["results"]) == [address]
            assert tasks[task_id]["results"][address]["status"] == CREATED
        for task_id in bulks:
            assert tasks[task_id]["status"] == "completed", tasks[task_id]
        # nothing done twice: the rows and what the tasks report agree one for one
        rows = {(r["address"], r["task_id"]) for r in await db.pool.fetch(
            "SELECT address, task_id FROM mailboxes")}
        reported = {(address, task_id) for task_id, t in tasks.items()
                    if t["type"].startswith("mailbox")
                    for address, result in (t["results"] or {}).items()
                    if result["status"] == CREATED}
        assert rows == reported
        # limits: max_mailboxes exact under three bulks on three workers, and counters true
        assert len([a for a, _ in rows if a.endswith("@" + LIMITED)]) == 150
        counters = {r["name"]: r["mailbox_count"] for r in await db.pool.fetch(
            "SELECT name, mailbox_count FROM domains WHERE parent_id IS NULL")}
        assert counters[LIMITED] == 150
        for parent in PARENTS:
            assert counters[parent] == sum(a.endswith("@" + parent) for a, _ in rows)
            # one sub-domain request per parent per hour, across both webs
            answers = sub_domain_answers[parent]
            assert sorted(answers) == [200] + [429] * (len(answers) - 1), parent
        # a command finds the new master the same way, and there it sees all three
        # workers' heartbeats: each worker moved to the new master, none stayed behind
        env = {**os.environ, "DATABASE_URL": settings.database_url,
               "REDIS_URL": settings.redis_url, "MAILPROV_REDIS_PREFIX": settings.redis_prefix}

        async def queue_summary() -> dict[str, Any] | None:
            queue = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "service.cli", "queue", "--json", cwd=ROOT, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(queue.communicate(), 60)
            assert queue.returncode == 0, err.decode()
            summary: dict[str, Any] = json.loads(out)
            return summary if len(summary["workers"]) == 3 else None

        summary = await until(queue_summary, "mailprov queue sees the 3 workers")
        assert summary["queued"] == summary["processing"] == 0
        sub_tasks = [t for t in tasks.values() if t["type"] == "sub_domain"]
        assert sorted(t["domain"] for t in sub_tasks) == sorted(PARENTS)
        assert all(t["status"] == "completed" for t in sub_tasks)
        assert await db.pool.fetchval(
            "SELECT count(*) FROM domains WHERE parent_id IS NOT NULL") == 2 * len(PARENTS)


async def test_a_multi_host_database_url_finds_the_primary_and_lists_read_the_replica(
        settings, postgres_pair, run_worker):
    pair = postgres_pair
    # the first host is down, the second a standby: the pools pass both by
    hosts = ",".join(f"127.0.0.1:{p}" for p in (free_port(), pair.standby_port,
                                                pair.primary_port))
    multi = f"postgresql://postgres@{hosts}/mailprov?target_session_attrs=read-write"
    # a new database: made on the primary, and there on the standby a moment later (asyncpg
    # tries the next host only when one does not answer, not when it lacks the database)
    await apply_schema(pair.dsn(pair.primary_port, "mailprov"))
    settings = settings.replace(database_url=multi,
                                database_replica_url=pair.dsn(pair.standby_port, "mailprov"))

    async def replicated() -> asyncpg.Connection | None:
        try:
            conn = await asyncpg.connect(settings.database_replica_url)
        except asyncpg.InvalidCatalogNameError:
            return None
        if await conn.fetchval("SELECT to_regclass('tasks') IS NOT NULL"):
            return conn
        await conn.close()
        return None

    standby = await until(replicated, "the standby has the schema")
    async with Database.opened(multi) as db, \
            TestClient(TestServer(create_app(settings))) as client:
        # arq's job keys are global to a Redis: ids of this database's own (tests/conftest.py)
        await db.pool.execute("SELECT setval('tasks_id_seq', $1)",
                              secrets.randbelow(2**40) * 1000 + 1)
        assert tuple(await db.pool.fetchrow(
            "SELECT inet_server_port(), pg_is_in_recovery()")) == (pair.primary_port, False)
        account_id, key = await create_account(db, "acme")

        async def create(name: str) -> int:
            r = await client.post(url(client, "create_domain"),
                                  json={"Domain": name, "Params": {}, "key": key})
            assert r.status == 200, await r.text()
            await run_worker(settings=settings)
            r = await client.get(url(client, "get_task"), params={
                "key": key, "task_id": (await r.json())["task_id"]})
            # a poll of one's own task reads the primary: never behind the worker
            assert (await r.json())["status"] == "completed"
            return r.status

        async def listed() -> list[str]:
            r = await client.get(url(client, "list_domain"),
                                 params={"key": key, "caller_id": account_id})
            assert r.status == 200, await r.text()
            return list((await r.json())["results"])

        await create("a.example")
        await until(lambda: _has(listed, "a.example"), "the list shows a.example")
        # with the standby's replay paused, lists read it as it was
        await standby.execute("SELECT pg_wal_replay_pause()")
        await create("b.example")
        assert await listed() == ["a.example"]
        await standby.execute("SELECT pg_wal_replay_resume()")
        await until(lambda: _has(listed, "b.example"), "the list shows b.example")

        # a switchover: the primary stops, the standby is promoted; the same pools find it
        pair.stop_server(pair.primary_port)
        await standby.execute("SELECT pg_promote()")

        async def on_new_primary() -> bool:
            try:
                return await db.pool.fetchval("SELECT inet_server_port()") == pair.standby_port
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return False

        await until(on_new_primary, "the pool reaches the promoted standby")

        async def web_writes() -> bool:
            r = await client.post(url(client, "create_domain"),
                                  json={"Domain": "c.example", "Params": {}, "key": key})
            return r.status == 200

        await until(web_writes, "the web records a task on the new primary")
        await run_worker(settings=settings)
        assert await db.pool.fetchval(
            "SELECT status FROM domains WHERE name = 'c.example'") == "active"
    await standby.close()


async def _has(listed: Any, name: str) -> bool:
    return name in await listed()
