"""Nothing accepted is lost: recovery after kill -9, a Redis flush, SIGTERM, backing
services that go away, and tries that run out.

Workers here are real OS processes (`python -m service.cli worker`), killed for real. A
test that stops Redis or Postgres stops only its own: a redis-server it started on a free
port, or a TCP proxy in front of the shared Postgres, never the machine's services.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from arq import Retry

from service.core import presence
from service.core.settings import Settings
from service.web.app import create_app
from tests.conftest import url
from tests.integration.harness import Proxy, WorkerProcess, until
from worker import jobs
from worker.context import KEY, JobContext

# the fault tests time recovery: one runner takes them all, one after another, so two
# of them never share the cores (pytest-xdist's loadgroup)
pytestmark = pytest.mark.xdist_group("faults")

SINGLE = {"Email_fullname": "john", "single_bulk": "single", "Domain": "example.com",
          "Params": {}}
COUNT = 400
BULK = {"Email_fullname": "team", "single_bulk": "bulk", "Domain": "example.com",
        "Params": {"count": COUNT, "quota_mb": 1}}
# about 10 ms a hash on one process: a bulk task runs for seconds, so it can be cut off
SLOW_HASHING = {"MAILPROV_ARGON2_TIME_COST": "2", "MAILPROV_ARGON2_MEMORY_KIB": "8192",
                "MAILPROV_HASH_PROCESSES": "1", "MAILPROV_BULK_CHUNK_SIZE": "10"}


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


async def test_a_task_processing_when_redis_lost_its_job_is_freed_by_the_sweeper(
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

    # nothing in Redis names the task now: the sweeper finds it by its lease, held by a
    # worker whose heartbeat has stopped, and enqueues it afresh (default settings)
    second = workers(settings, **SLOW_HASHING)

    async def completed() -> bool:
        return (await _task(db, task_id))["status"] == "completed"

    await until(completed, "the sweeper re-runs the task", second.log)
    await _assert_done_once(db, task_id)
    assert "tasks of 1 stopped workers" in second.log()
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


async def _leased(db: Any, redis: Any, settings: Settings, task_id: int, silent_s: int) -> None:
    """The task as a live worker runs it: processing, leased to a worker whose heartbeat
    is fresh, last written `silent_s` ago."""
    await redis.set(presence.health_key(settings, "elsewhere:1:live"), "beating", ex=60)
    await db.pool.execute("UPDATE tasks SET status = 'processing', attempts = 1,"
                          " worker_id = 'elsewhere:1:live',"
                          " updated_at = now() - make_interval(secs => $2) WHERE id = $1",
                          task_id, silent_s)


async def test_a_live_workers_task_is_never_taken_from_it(make, db, settings, redis):
    _, key = await make.account()
    await make.domain(key)
    task_id = (await (await make.post("create_mailbox_single", SINGLE, key)).json())["task_id"]
    # its job is running: the in-progress mark is set, as arq sets it
    await redis.set(f"arq:in-progress:{task_id}", 1, ex=60)
    # silent for far longer than the heartbeat interval, yet within the job timeout
    await _leased(db, redis, settings, task_id, silent_s=200)
    # its startup sweep, with default settings (and no job: the only one is running)
    await make.run_worker(max_burst_jobs=0)
    task = await _task(db, task_id)
    assert (task["status"], task["attempts"]) == ("processing", 1)
    assert await redis.exists(f"arq:in-progress:{task_id}")


async def test_a_run_arq_dropped_while_its_worker_lived_on_is_run_again(make, db, settings,
                                                                       redis):
    _, key = await make.account()
    await make.domain(key)
    task_id = (await (await make.post("create_mailbox_single", SINGLE, key)).json())["task_id"]
    # arq dropped the job (a timeout, its tries used up), and its worker lives on: the
    # lease holds, yet no write for the job timeout + the margin (330 s by default) says
    # that nothing runs the task
    await redis.delete(settings.queue_name, f"arq:job:{task_id}")
    await _leased(db, redis, settings, task_id, silent_s=400)
    await make.run_worker()
    task = await _task(db, task_id)
    assert (task["status"], task["attempts"]) == ("completed", 2)


async def test_a_job_marked_by_a_worker_that_died_before_starting_its_task_runs_again(
        make, db, settings, redis):
    _, key = await make.account()
    await make.domain(key)
    fresh, orphan = [
        (await (await make.post("create_mailbox_single", {**SINGLE, "Email_fullname": name},
                                key)).json())["task_id"] for name in ("fresh", "orphan")]
    # both queued for a while; arq's marks (set for the job timeout + 10 s): the orphan's
    # 6 s ago by a worker killed before its start_task (no lease), the fresh one's just now
    await db.pool.execute("UPDATE tasks SET updated_at = now() - interval '10 seconds'")
    life_ms = (settings.worker_job_timeout_s + 10) * 1000
    await redis.set(f"arq:in-progress:{orphan}", 1, px=life_ms - 6000)
    await redis.set(f"arq:in-progress:{fresh}", 1, px=life_ms)
    await make.run_worker(max_burst_jobs=1)
    assert (await _task(db, orphan))["status"] == "completed"
    # a mark that young may be a live worker's, about to start its task: it stays
    assert (await _task(db, fresh))["status"] == "queued"
    assert await redis.exists(f"arq:in-progress:{fresh}")


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
        # a read needs only Postgres: the rate limit counts it in this process meanwhile
        r = await web.get(url(web, "list_domain"), params={"key": key, "caller_id": account_id})
        assert r.status == 200 and r.headers["X-RateLimit-Limit"] == "36000"
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
