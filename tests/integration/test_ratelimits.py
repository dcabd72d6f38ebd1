"""Hourly rate limits in Redis: headers, 429, atomicity, one account never drains another."""

import asyncio
import time

from aiohttp.test_utils import TestClient, TestServer

from service.web.app import create_app
from tests.conftest import url


async def test_limits_count_per_account_and_carry_headers(make, settings):
    a_id, a_key = await make.account("a")
    _b_id, b_key = await make.account("b")
    tight = settings.replace(rate_create_domain=2, rate_get=3)
    async with TestClient(TestServer(create_app(tight))) as client:
        statuses = []
        for n in range(3):
            r = await client.post(url(client, "create_domain"),
                                  json={"Domain": f"d{n}.example", "key": a_key})
            statuses.append(r.status)
            assert r.headers["X-RateLimit-Limit"] == "2"
            assert int(r.headers["X-RateLimit-Reset"]) > time.time()
        assert statuses == [200, 200, 429]
        assert r.headers["X-RateLimit-Remaining"] == "0"
        assert 1 <= int(r.headers["Retry-After"]) <= 3600
        assert (await r.json())["status"] == "error"
        r = await client.post(url(client, "create_domain"),
                              json={"Domain": "other.example", "key": b_key})
        assert r.status == 200 and r.headers["X-RateLimit-Remaining"] == "1"

        remaining = []
        for _ in range(4):
            r = await client.get(url(client, "list_domain"),
                                 params={"key": a_key, "caller_id": a_id})
            remaining.append((r.status, r.headers.get("X-RateLimit-Remaining")))
        assert remaining == [(200, "2"), (200, "1"), (200, "0"), (429, "0")]


async def test_concurrent_requests_never_exceed_the_limit(make, settings):
    _, key = await make.account()
    tight = settings.replace(rate_create_domain=5)
    async with TestClient(TestServer(create_app(tight))) as client:
        responses = await asyncio.gather(*(
            client.post(url(client, "create_domain"), json={"Domain": f"c{n}.example",
                                                            "key": key})
            for n in range(30)))
        statuses = [r.status for r in responses]
    assert statuses.count(200) == 5 and statuses.count(429) == 25


async def test_reads_are_limited_by_the_web_process_while_redis_is_down(make, settings,
                                                                        own_redis):
    account_id, key = await make.account()
    # own_redis is not started: nothing listens on its port
    down = settings.replace(redis_url=own_redis.url, rate_get=2)
    async with TestClient(TestServer(create_app(down))) as client:
        seen = []
        for _ in range(3):
            r = await client.get(url(client, "list_domain"),
                                 params={"key": key, "caller_id": account_id})
            seen.append((r.status, r.headers.get("X-RateLimit-Remaining")))
        assert seen == [(200, "1"), (200, "0"), (429, "0")]
        # one request back every 30 minutes, at 2 an hour
        assert 1700 <= int(r.headers["Retry-After"]) <= 1800
        # writes need the queue and the limits every web process shares
        r = await client.post(url(client, "create_domain"),
                              json={"Domain": "d.example", "key": key})
        assert r.status == 503


async def test_a_refused_write_leaves_no_task_and_queues_no_job(make, settings, db, redis,
                                                                 own_redis):
    """A mailbox's task is recorded before its count (counted with its job's enqueue, in
    one script): a refused request's task is taken back, and only the accepted are queued."""
    _, key = await make.account()
    await make.domain(key, "limits.example")
    before = await db.pool.fetchval("SELECT count(*) FROM tasks")
    tight = settings.replace(rate_create_mailbox_single=4)
    async with TestClient(TestServer(create_app(tight))) as client:
        responses = await asyncio.gather(*(
            client.post(url(client, "create_mailbox_single"), json={
                "Email_fullname": f"m{n}", "single_bulk": "single",
                "Domain": "limits.example", "Params": {}, "key": key})
            for n in range(12)))
        accepted = [(await r.json())["task_id"] for r in responses if r.status == 200]
        statuses = sorted(r.status for r in responses)
    assert statuses == [200] * 4 + [429] * 8
    tasks = await db.pool.fetch("SELECT id FROM tasks ORDER BY id OFFSET $1", before)
    assert sorted(t["id"] for t in tasks) == sorted(accepted)
    queued = await redis.zrange(settings.queue_name, 0, -1)
    assert sorted(int(j) for j in queued) == sorted(accepted)

    # Redis lost between the key's check (a key seen working a moment ago is not checked
    # again in Redis) and the job's enqueue: 503, and no task stays behind
    await own_redis.start()
    async with TestClient(TestServer(create_app(settings.replace(
            redis_url=own_redis.url)))) as client:
        body = {"Email_fullname": "late", "single_bulk": "single",
                "Domain": "limits.example", "Params": {}, "key": key}
        r = await client.post(url(client, "create_mailbox_single"), json=body)
        assert r.status == 200
        own_redis.stop()
        r = await client.post(url(client, "create_mailbox_single"),
                              json={**body, "Email_fullname": "later"})
        assert r.status == 503
    assert await db.pool.fetchval("SELECT count(*) FROM tasks") == before + 5
