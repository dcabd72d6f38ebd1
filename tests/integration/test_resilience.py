"""Nothing fails that should have waited, and recovery takes seconds, with DEFAULT settings.

Each test runs the real `mailprov worker` process (its supervisor, its arq worker, its
hashing pool), real Postgres and real Redis, and breaks them for real: kill -9 of a hashing
process, SIGTERM to the worker's process group, kill -9 of workers mid-run, a FLUSHALL, a
Redis that is gone for 20 s. Every recovery setting is the default (job timeout 300 s,
sweeper, heartbeat, shutdown grace); only the argon2 cost is lowered where a bulk task's
own hashing would otherwise outlast the deadline, and it says so.

A deadline here is the acceptance itself ("completes within 20 s of the kill").
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import psutil
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from service.core import passwords, presence
from service.core.migrate import apply_schema
from service.core.settings import Settings
from service.web.app import create_app
from tests.conftest import url
from tests.integration.harness import OwnRedis, WorkerProcess, until

# the fault tests time recovery: one runner takes them all, one after another, so two
# of them never share the cores (pytest-xdist's loadgroup)
pytestmark = pytest.mark.xdist_group("faults")

# the default argon2 cost and one hashing process per core, as `mailprov worker` runs
DEFAULT_HASHING = {"MAILPROV_ARGON2_TIME_COST": "3", "MAILPROV_ARGON2_MEMORY_KIB": "65536",
                   "MAILPROV_HASH_PROCESSES": "0"}
# about 10 ms a hash: a bulk of 400 hashes for a second or two on two processes, so that a
# kill cuts it off part-way and its second run fits the deadline (at the default cost its
# own hashing alone would take 40 s)
BULK_HASHING = {"MAILPROV_ARGON2_TIME_COST": "2", "MAILPROV_ARGON2_MEMORY_KIB": "8192",
                "MAILPROV_HASH_PROCESSES": "0"}
COUNT = 400
CREATED = "Created successfully."


def _single(name: str) -> dict[str, Any]:
    return {"Email_fullname": name, "single_bulk": "single", "Domain": "example.com",
            "Params": {"quota_mb": 1}}


BULK = {"Email_fullname": "team", "single_bulk": "bulk", "Domain": "example.com",
        "Params": {"count": COUNT, "quota_mb": 1}}


async def _post(web: TestClient, route: str, body: dict[str, Any], key: str) -> int:
    r = await web.post(url(web, route), json={**body, "key": key})
    assert r.status == 200, await r.text()
    return (await r.json())["task_id"]


async def _statuses(db: Any, ids: list[int]) -> dict[str, int]:
    rows = await db.pool.fetch("SELECT status, count(*) AS n FROM tasks WHERE id = ANY($1)"
                               " GROUP BY status", ids)
    return {r["status"]: r["n"] for r in rows}


def _all_finished(db: Any, ids: list[int]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        statuses = await _statuses(db, ids)
        return statuses.get("completed", 0) + statuses.get("failed", 0) == len(ids)
    return check


async def _assert_each_made_once(db: Any, ids: list[int]) -> None:
    """Every task completed, each of its items created, every mailbox made once, by the
    task that asked for it."""
    tasks = await db.pool.fetch("SELECT id, status, error, results FROM tasks"
                                " WHERE id = ANY($1)", ids)
    assert {t["status"] for t in tasks} == {"completed"}, [
        (t["id"], t["status"], t["error"]) for t in tasks if t["status"] != "completed"]
    asked = {address: t["id"] for t in tasks for address in t["results"]}
    assert all(r["status"] == CREATED for t in tasks for r in t["results"].values())
    rows = await db.pool.fetch("SELECT address, task_id FROM mailboxes")
    assert {r["address"]: r["task_id"] for r in rows} == asked
    assert len(rows) == len(asked)


async def _hashing_processes(worker: WorkerProcess, count: int) -> list[psutil.Process]:
    async def started() -> list[psutil.Process]:
        found = worker.hashing_processes()
        return found if len(found) >= count else []

    return await until(started, f"the worker's {count} hashing processes", worker.log)


def _status(process: psutil.Process) -> str:
    try:
        return process.status()
    except psutil.NoSuchProcess:
        return psutil.STATUS_DEAD


async def _alive(redis: Any, settings: Settings, n: int, log: Callable[[], str]) -> None:
    async def registered() -> bool:
        return len(await presence.alive(redis, settings)) >= n

    await until(registered, f"{n} live workers", log)


@asynccontextmanager
async def _web(settings: Settings) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(settings))) as web:
        yield web


async def test_a_killed_hashing_process_is_replaced_and_its_work_run_again(make, db, settings,
                                                                           workers):
    _, key = await make.account()
    await make.domain(key)
    worker = workers(settings, **DEFAULT_HASHING)
    warm = await _post(make.client, "create_mailbox_single", _single("warm"), key)
    await until(_all_finished(db, [warm]), "a task before the kill", worker.log)
    # as the OOM killer would: one hashing process, kill -9, while the worker is idle
    (await _hashing_processes(worker, 1))[0].kill()
    first = [await _post(make.client, "create_mailbox_single", _single(f"a{n}"), key)
             for n in range(20)]
    await until(_all_finished(db, first), "the 20 tasks after the kill", worker.log)
    await _assert_each_made_once(db, [warm, *first])

    # and while it hashes: the work the dead process held runs again on a new pool
    second = [await _post(make.client, "create_mailbox_single", _single(f"b{n}"), key)
              for n in range(20)]

    async def busy() -> list[psutil.Process]:
        return [p for p in worker.hashing_processes() if _status(p) == psutil.STATUS_RUNNING]

    (await until(busy, "a hashing process at work", worker.log))[0].kill()
    await until(_all_finished(db, second), "the 20 tasks hashing at the kill", worker.log)
    await _assert_each_made_once(db, [warm, *first, *second])
    # the pool healed inside each run: no task needed a second one
    attempts = await db.pool.fetch("SELECT DISTINCT attempts FROM tasks WHERE id = ANY($1)",
                                   first + second)
    assert [r["attempts"] for r in attempts] == [1]
    assert worker.log().count("a hashing process died; the pool is replaced") == 2
    assert "hashing failed" not in worker.log()
    # the generated passwords shown match the stored hashes
    status, body = await make.task(key, second[-1], "get_mailbox_single")
    assert status == 200
    [(address, item)] = body["results"].items()
    stored = await db.pool.fetchval("SELECT password_hash FROM mailboxes WHERE address = $1",
                                    address)
    assert passwords.verify(stored, item["password"])
    assert worker.popen.poll() is None


async def test_sigterm_to_the_process_group_fails_no_hashing_task(make, db, settings, redis,
                                                                  workers):
    _, key = await make.account()
    await make.domain(key)
    worker = workers(settings, **DEFAULT_HASHING)
    await _alive(redis, settings, 1, worker.log)
    ids = [await _post(make.client, "create_mailbox_single", _single(f"u{n}"), key)
           for n in range(60)]

    async def hashing() -> bool:
        return (await _statuses(db, ids)).get("processing", 0) > 0

    await until(hashing, "the tasks to start hashing", worker.log)
    # as honcho, systemd and Kubernetes stop a process: SIGTERM to its whole group
    os.killpg(worker.popen.pid, signal.SIGTERM)
    assert await asyncio.to_thread(worker.popen.wait, 60) == 0
    assert "failed" not in await _statuses(db, ids)

    again = workers(settings, **DEFAULT_HASHING)
    await until(_all_finished(db, ids), "the 60 tasks after the restart", again.log)
    assert await _statuses(db, ids) == {"completed": 60}
    await _assert_each_made_once(db, ids)
    assert again.stop() == 0


async def _account_with_room(make: Any) -> tuple[int, str]:
    """An account, its key, and a domain with room for every bulk of a test."""
    account_id, key = await make.account()
    await make.domain(key, quota_mb=10**6, max_mailboxes=10**5)
    return account_id, key


async def _on(own_redis: OwnRedis, settings: Settings) -> Settings:
    """The test's settings on its own redis-server, started."""
    await own_redis.start()
    return settings.replace(redis_url=own_redis.url)


async def _bulk(web: TestClient, key: str) -> int:
    return await _post(web, "create_mailbox_bulk", BULK, key)


async def _part_way(db: Any, task_id: int, worker: WorkerProcess) -> None:
    async def started() -> bool:
        done = await db.pool.fetchval("SELECT progress_done FROM tasks WHERE id = $1", task_id)
        return done > 0

    await until(started, "the worker starts the bulk", worker.log)


async def _completes_within(db: Any, task_id: int, seconds: float, since: float,
                            log: Callable[[], str]) -> float:
    """Wait for the task until `seconds` after `since` (the loop's clock); how long after
    `since` it completed."""
    loop = asyncio.get_running_loop()

    async def completed() -> bool:
        return await db.pool.fetchval("SELECT status FROM tasks WHERE id = $1",
                                      task_id) == "completed"

    await until(completed, f"the task completes within {seconds:.0f} s", log,
                within_s=since + seconds - loop.time())
    return loop.time() - since


async def _assert_bulk_done(db: Any, task_id: int) -> None:
    """Exactly the right rows: the bulk's 400 mailboxes, each once, by its second run."""
    task = await db.pool.fetchrow("SELECT status, attempts, results FROM tasks WHERE id = $1",
                                  task_id)
    assert (task["status"], task["attempts"]) == ("completed", 2)
    expected = {f"team{n}@example.com" for n in range(1, COUNT + 1)}
    assert set(task["results"]) == expected
    await _assert_each_made_once(db, [task_id])


async def test_kill_9_mid_bulk_then_a_restart_completes_within_20_s(make, db, settings,
                                                                   workers):
    _, key = await _account_with_room(make)
    task_id = await _bulk(make.client, key)
    first = workers(settings, **BULK_HASHING)
    await _part_way(db, task_id, first)
    first.kill()
    killed = asyncio.get_running_loop().time()
    again = workers(settings, **BULK_HASHING)
    took = await _completes_within(db, task_id, 20, killed, again.log)
    await _assert_bulk_done(db, task_id)
    print(f"kill -9, restart: completed {took:.1f} s after the kill")


async def test_kill_9_mid_bulk_and_a_flushall_then_a_restart_completes_within_20_s(
        make, db, settings, workers, own_redis):
    _, key = await _account_with_room(make)
    ours = await _on(own_redis, settings)
    async with _web(ours) as web:
        task_id = await _bulk(web, key)
    first = workers(ours, **BULK_HASHING)
    await _part_way(db, task_id, first)
    first.kill()
    killed = asyncio.get_running_loop().time()
    flushed = aioredis.Redis.from_url(own_redis.url)
    await flushed.flushall()  # the test's own redis-server: every key, heartbeats included
    await flushed.aclose()
    again = workers(ours, **BULK_HASHING)
    took = await _completes_within(db, task_id, 20, killed, again.log)
    await _assert_bulk_done(db, task_id)
    assert "tasks of 1 stopped workers" in again.log()
    print(f"kill -9 + FLUSHALL, restart: completed {took:.1f} s after the kill")


async def test_a_live_worker_writes_its_lost_heartbeat_again_at_once(settings, redis,
                                                                    workers):
    worker = workers(settings)
    await _alive(redis, settings, 1, worker.log)
    [state] = await presence.alive(redis, settings)
    key = presence.health_key(settings, state.id)
    await redis.delete(key)  # what a flush does to it
    # back at the worker's next poll, not its next 5 s interval: the sweeper's grace after
    # a flush relies on it

    async def back() -> bool:
        return bool(await redis.exists(key))

    await until(back, "the heartbeat back", worker.log, within_s=presence.REBEAT_S)


async def test_kill_9_mid_bulk_with_another_worker_alive_completes_within_20_s(
        make, db, settings, redis, workers):
    _, key = await _account_with_room(make)
    pair = [workers(settings, **BULK_HASHING) for _ in range(2)]
    await _alive(redis, settings, 2, pair[0].log)
    task_id = await _bulk(make.client, key)
    await _part_way(db, task_id, pair[0])
    holder = await db.pool.fetchval("SELECT worker_id FROM tasks WHERE id = $1", task_id)
    running, other = pair if pair[0].runs(holder) else pair[::-1]
    assert running.runs(holder)
    running.kill()
    killed = asyncio.get_running_loop().time()
    took = await _completes_within(db, task_id, 20, killed, other.log)
    await _assert_bulk_done(db, task_id)
    assert other.runs(await db.pool.fetchval("SELECT worker_id FROM tasks WHERE id = $1",
                                             task_id))
    print(f"kill -9, another worker alive: completed {took:.1f} s after the kill")


async def test_five_workers_killed_with_100_processing_one_new_worker_finishes_in_30_s(
        make, db, settings, redis, workers):
    _, key = await make.account()
    await make.domain(key, max_mailboxes=1000)
    five = [workers(settings) for _ in range(5)]
    await _alive(redis, settings, 5, five[0].log)
    # hold every job the five start: their hashing processes stop (SIGSTOP), so the 100
    # jobs (20 a worker, the default max_jobs) wait for a hash while they are killed
    for worker in five:
        for process in await _hashing_processes(worker, 1):
            process.suspend()
    ids = [await _post(make.client, "create_mailbox_single", _single(f"u{n}"), key)
           for n in range(110)]

    async def hundred_processing() -> bool:
        return await _statuses(db, ids) == {"processing": 100, "queued": 10}

    await until(hundred_processing, "100 tasks processing", five[0].log)
    for worker in five:
        worker.kill()
    killed = asyncio.get_running_loop().time()
    # at the head of the queue: 100 jobs whose in-progress marks live for the job timeout
    new = workers(settings)
    ids.append(await _post(make.client, "create_mailbox_single", _single("late"), key))
    await until(_all_finished(db, ids), "all 111 tasks within 30 s", new.log,
                within_s=killed + 30 - asyncio.get_running_loop().time())
    took = asyncio.get_running_loop().time() - killed
    await _assert_each_made_once(db, ids)
    # each task ran once more than it had: the 100 cut off twice, the rest once
    attempts = await db.pool.fetch("SELECT attempts, count(*) AS n FROM tasks"
                                   " WHERE id = ANY($1) GROUP BY attempts", ids)
    assert {r["attempts"]: r["n"] for r in attempts} == {2: 100, 1: 11}
    print(f"5 workers killed, 1 started: all 111 completed {took:.1f} s after the kill")


async def test_polls_answer_through_a_redis_outage_and_cut_off_tasks_complete_after_it(
        make, db, settings, workers, own_redis):
    account_id, key = await _account_with_room(make)
    ours = await _on(own_redis, settings)
    worker = workers(ours, **BULK_HASHING)
    async with _web(ours) as web:
        done = await _post(web, "create_mailbox_single", _single("early"), key)
        await until(_all_finished(db, [done]), "a task before the outage", worker.log)
        bulks = [await _bulk(web, key)]
        await _part_way(db, bulks[0], worker)
        bulks.append(await _post(web, "create_mailbox_bulk",
                                 {**BULK, "Email_fullname": "crew"}, key))

        own_redis.stop()
        loop = asyncio.get_running_loop()
        outage_ends = loop.time() + 20
        polls = 0
        while loop.time() < outage_ends:
            for task_id in bulks:
                r = await web.get(url(web, "get_mailbox_bulk"),
                                  params={"key": key, "task_id": task_id})
                assert r.status == 200, await r.text()
                body = await r.json()
                assert body["status"] in ("queued", "processing"), body
                assert "X-RateLimit-Remaining" in r.headers
                polls += 1
            r = await web.get(url(web, "list_domain"),
                              params={"key": key, "caller_id": account_id})
            assert r.status == 200
            await asyncio.sleep(0.5)
        # a write needs the queue and the shared limits: 503, as before
        r = await web.post(url(web, "create_mailbox_single"), json={**_single("x"), "key": key})
        assert r.status == 503
        # a finished task whose generated password only Redis holds waits for Redis,
        # rather than answer with a password that looks expired
        r = await web.get(url(web, "get_mailbox_single"), params={"key": key, "task_id": done})
        assert r.status == 503

        await own_redis.start()  # empty: a restart without persistence loses everything
        back = loop.time()
        await until(_all_finished(db, bulks), "the tasks cut off by the outage within 20 s",
                    worker.log, within_s=back + 20 - loop.time())
        took = loop.time() - back
    await _assert_each_made_once(db, [done, *bulks])
    assert worker.popen.poll() is None  # the same process all along
    print(f"Redis down 20 s ({polls} polls, all 200): the cut-off tasks completed "
          f"{took:.1f} s after it came back")


async def test_hashing_processes_ignore_sigterm_and_leave_with_their_parent(settings, redis,
                                                                            workers):
    worker = workers(settings)
    await _alive(redis, settings, 1, worker.log)
    [child] = await _hashing_processes(worker, 1)
    child.terminate()  # SIGTERM: the worker, not the signal, decides when it stops
    await asyncio.sleep(1)
    assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    # the worker alone is killed (not its group): its hashing process does not linger
    os.kill(worker.popen.pid, signal.SIGKILL)
    worker.popen.wait()
    gone, alive = await asyncio.to_thread(psutil.wait_procs, [child], 10)
    assert gone and not alive


async def test_an_older_database_gains_leases_in_place(scratch_db):
    _, dsn = await scratch_db()
    old = await asyncpg.connect(dsn)
    try:
        # the tasks table as releases before leases made it, with a task running
        await old.execute("ALTER TABLE tasks DROP COLUMN worker_id")
        account = await old.fetchval("INSERT INTO accounts (name) VALUES ('a') RETURNING id")
        task = await old.fetchval(
            "INSERT INTO tasks (account_id, type, domain, payload, progress_total, status)"
            " VALUES ($1, 'domain', 'example.com', '{}', 1, 'processing') RETURNING id",
            account)
    finally:
        await old.close()
    await apply_schema(dsn)
    await apply_schema(dsn)  # and again: idempotent
    new = await asyncpg.connect(dsn)
    try:
        row = await new.fetchrow("SELECT status, worker_id FROM tasks WHERE id = $1", task)
    finally:
        await new.close()
    assert (row["status"], row["worker_id"]) == ("processing", None)
