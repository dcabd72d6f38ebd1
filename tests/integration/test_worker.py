"""The real arq worker: idempotent jobs, the outbox sweeper, progress, concurrency."""

import asyncio

from arq import create_pool

from service.core.db import Database
from service.core.passwords import Hasher
from service.core.redisconn import redis_settings
from worker import jobs
from worker.context import KEY, JobContext
from worker.metrics import WorkerMetrics

BULK = {"Email_fullname": "team", "single_bulk": "bulk", "Domain": "example.com",
        "Params": {"count": 250, "quota_mb": 10}}


async def _snapshot(db):
    rows = await db.pool.fetch("SELECT address, password_hash, quota_mb, task_id FROM mailboxes"
                               " ORDER BY address")
    tasks = await db.pool.fetch("SELECT id, status, results, progress_done, error FROM tasks"
                                " ORDER BY id")
    return [tuple(r) for r in rows], [tuple(t) for t in tasks]


async def _big_domain(make, key):
    await make.domain(key, quota_mb=1024 * 1024, max_mailboxes=10000)


async def test_running_a_job_again_changes_nothing(make, db, settings, redis):
    _, key = await make.account()
    await _big_domain(make, key)
    task_id = (await (await make.post("create_mailbox_bulk", BULK, key)).json())["task_id"]
    single = {**BULK, "single_bulk": "single", "Email_fullname": "solo", "Params": {}}
    single_id = (await (await make.post("create_mailbox_single", single, key)).json())["task_id"]
    await make.run_worker()
    before = await _snapshot(db)
    _, shown = await make.task(key, task_id)

    arq = await create_pool(redis_settings(settings.redis_url),
                            default_queue_name=settings.queue_name)
    try:
        for tid, name in ((task_id, "provision_mailbox_bulk"),
                          (single_id, "provision_mailbox_single")):
            assert await arq.enqueue_job(name, tid, _job_id=str(tid)) is not None
    finally:
        await arq.aclose()
    worker = await make.run_worker()
    assert worker.jobs_complete >= 2
    assert await _snapshot(db) == before
    _, again = await make.task(key, task_id)
    assert again == shown  # same results, same generated passwords


async def test_two_runs_of_one_task_at_once_create_everything_once(make, db, settings, hasher):
    _, key = await make.account()
    await _big_domain(make, key)
    task_id = (await (await make.post("create_mailbox_bulk", BULK, key)).json())["task_id"]
    arq = await create_pool(redis_settings(settings.redis_url),
                            default_queue_name=settings.queue_name)
    worker_db = await Database.connect(settings.database_url, min_size=2, max_size=6)
    job = JobContext(settings.replace(bulk_chunk_size=25), worker_db, arq, hasher,
                     WorkerMetrics())
    ctx = {KEY: job, "job_try": 1}
    try:
        outcomes = await asyncio.gather(jobs.run_task(ctx, task_id), jobs.run_task(ctx, task_id))
    finally:
        await worker_db.close()
        await arq.aclose()
    assert "done" in [o.result for o in outcomes]
    assert await db.pool.fetchval("SELECT count(*) FROM mailboxes") == 250
    status, task = await make.task(key, task_id)
    assert status == 200 and task["status"] == "completed"
    assert {v["status"] for v in task["results"].values()} == {"Created successfully."}
    # every generated password shown is the one whose hash was stored
    from service.core.passwords import verify
    stored = dict(await db.pool.fetch("SELECT address, password_hash FROM mailboxes"))
    for address, result in list(task["results"].items())[::25]:
        assert verify(stored[address], result["password"])


async def test_a_task_survives_redis_losing_its_job(make, settings, redis):
    _, key = await make.account()
    await make.domain(key)
    r = await make.post("create_mailbox_single",
                        {**BULK, "single_bulk": "single", "Email_fullname": "john",
                         "Params": {}}, key)
    task_id = (await r.json())["task_id"]
    # what a Redis flush does to this task: its queue entry and job are gone
    assert await redis.delete(settings.queue_name, f"arq:job:{task_id}") == 2
    await make.run_worker()
    status, task = await make.task(key, task_id)
    assert task["status"] == "queued"  # nothing ran it: only the sweeper can help

    await make.run_worker(settings=settings.replace(sweep_queued_after_s=0))
    status, task = await make.task(key, task_id)
    assert status == 200 and task["status"] == "completed"


async def test_a_head_of_running_jobs_does_not_hide_newer_ones(make, db, settings, redis):
    _, key = await make.account()
    await make.domain(key)
    # more jobs than one poll looks at, all running (or cut off: their marks live on), at
    # the head of the queue; arq alone reads the first 100 ids and starts none of them
    blocked = [f"{settings.redis_prefix}blocked-{n}" for n in range(2500)]
    await redis.zadd(settings.queue_name, {job_id: n for n, job_id in enumerate(blocked)})
    await redis.mset({f"arq:in-progress:{job_id}": 1 for job_id in blocked})
    try:
        r = await make.post("create_mailbox_single", {**BULK, "single_bulk": "single",
                                                      "Email_fullname": "john",
                                                      "Params": {}}, key)
        task_id = (await r.json())["task_id"]
        await asyncio.wait_for(make.run_worker(max_burst_jobs=1), 30)
        assert await db.pool.fetchval("SELECT status FROM tasks WHERE id = $1",
                                      task_id) == "completed"
    finally:
        await redis.delete(*(f"arq:in-progress:{job_id}" for job_id in blocked))


async def test_bulk_progress_is_visible_while_it_runs(make, settings, run_worker):
    _, key = await make.account()
    await _big_domain(make, key)
    task_id = (await (await make.post("create_mailbox_bulk", BULK, key)).json())["task_id"]
    slow = Hasher(time_cost=2, memory_kib=8192, processes=2)
    from worker.main import create_worker

    chunked = settings.replace(bulk_chunk_size=10)
    worker = create_worker(chunked, burst=True, poll_delay=0, handle_signals=False,
                           ctx={"settings": chunked, "hasher": slow})
    running = asyncio.create_task(worker.main())
    seen = []
    try:
        while not running.done():
            status, task = await make.task(key, task_id, "get_mailbox_bulk")
            assert status == 200
            if task["status"] == "processing":
                seen.append((task["progress"]["done"], len(task["results"])))
            await asyncio.sleep(0.02)
        await running
    finally:
        await worker.close()
    partial = [(done, shown) for done, shown in seen if 0 < done < 250]
    assert partial, seen
    assert all(done == shown for done, shown in partial)
    _, task = await make.task(key, task_id, "get_mailbox_bulk")
    assert task["status"] == "completed" and "progress" not in task
