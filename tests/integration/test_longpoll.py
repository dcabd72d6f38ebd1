"""Long polling: `wait=N` holds a poll until its task finishes or its progress moves, and
the client's `wait` makes one request per step (counted by a counting session), against
the real web app on a port, the real worker and Postgres's NOTIFY."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestServer

from service.client import MailprovClient
from service.core.accounts import digest
from service.core.waiters import CHANNEL
from service.web.app import create_app
from service.web.state import WAITERS
from tests.conftest import url


@asynccontextmanager
async def serving(settings) -> AsyncIterator[tuple[web.Application, str]]:
    app = create_app(settings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield app, str(server.make_url(""))
    finally:
        await server.close()


@asynccontextmanager
async def counting(base: str, key: str) -> AsyncIterator[tuple[MailprovClient, list[str]]]:
    """A client whose every HTTP request is counted (method and path)."""
    sent: list[str] = []

    async def on_start(session: Any, context: Any, params: Any) -> None:
        sent.append(f"{params.method} {params.url.path}")

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        yield MailprovClient(base, key, session=session), sent


async def until_waiting(app: web.Application, count: int = 1) -> None:
    """Until the server holds `count` polls (the test then moves the task)."""
    while True:
        if app[WAITERS].waiting >= count:
            return
        await asyncio.sleep(0.01)


async def test_a_single_mailbox_task_is_one_request(settings, make, run_worker):
    _, key = await make.account()
    await make.domain(key)
    async with serving(settings) as (app, base), counting(base, key) as (api, sent):
        task_id = await api.create_mailbox("john", "example.com")
        waiting = asyncio.create_task(api.wait(task_id))
        await until_waiting(app)  # held by the server, before the worker has run
        await run_worker()
        task = await waiting
    assert task["status"] == "completed"
    assert sent == ["POST /api/v1/create/mailbox/single", "GET /api/v1/get/task"]


async def test_a_bulk_is_one_request_per_progress_step(settings, make, run_worker):
    _, key = await make.account()
    await make.domain(key, max_mailboxes=2000)
    listener = await asyncpg.connect(settings.database_url)
    announced: list[str] = []
    await listener.add_listener(CHANNEL, lambda *args: announced.append(args[-1]))
    try:
        async with serving(settings) as (app, base), counting(base, key) as (api, sent):
            task_id = await api.create_mailboxes("example.com", prefix="team", count=1000)
            seen: list[tuple[int, int]] = []
            waiting = asyncio.create_task(api.wait(task_id, long_poll=30,
                                                   on_progress=lambda *p: seen.append(p)))
            await until_waiting(app)
            await run_worker()
            task = await waiting
    finally:
        await listener.close()
    assert task["status"] == "completed"
    # the events that may wake a poll: progress moved, or the task finished
    steps = [e for e in announced if e.startswith(f"{task_id}:")
             and (e.split(":")[1] == "completed" or int(e.split(":")[2]) > 0)]
    polls = [s for s in sent if s.startswith("GET")]
    assert len(steps) >= 5, announced  # a bulk of 1,000 is written in chunks
    assert 1 <= len(polls) <= len(steps), (sent, steps)
    assert seen[-1] == (1000, 1000)


async def test_wait_in_the_resource_api_and_its_bounds(settings, client, make, run_worker):
    _, key = await make.account()
    await make.domain(key)
    accepted = await make.rest("POST", "mailbox_create", key,
                               json={"domain": "example.com", "local_part": "ann"})
    task_id = accepted.body["task_id"]
    held = asyncio.create_task(make.rest("GET", "task", key, params={"wait": "30"},
                                         task_id=task_id))
    await until_waiting(client.app)
    await run_worker()
    answer = await held
    assert answer.status == 200, answer.body
    assert answer.body["status"] == "completed"
    # a finished task answers at once, whatever the wait
    again = await make.rest("GET", "task", key, params={"wait": "60"}, task_id=task_id)
    assert again.status == 200 and again.body["status"] == "completed"
    for wrong in ("61", "-1", "soon"):
        r = await make.rest("GET", "task", key, params={"wait": wrong}, task_id=task_id)
        assert r.status == 422 and "wait" in r.body["msg"], r.body
        r = await client.get(url(client, "get_task"),
                             params={"key": key, "task_id": task_id, "wait": wrong})
        body = await r.json()
        assert r.status == 422 and "wait" in body["errors"], body


async def test_a_revoked_key_is_refused_when_the_wait_ends(settings, client, db, make):
    _, key = await make.account()
    await make.domain(key)
    accepted = await make.rest("POST", "mailbox_create", key,
                               json={"domain": "example.com", "local_part": "bob"})
    held = asyncio.create_task(make.rest("GET", "task", key, params={"wait": "30"},
                                         task_id=accepted.body["task_id"]))
    await until_waiting(client.app)
    await db.revoke_keys(key_hash=digest(key), prefix="")
    # the task moves (a retry of it by an operator would do the same)
    await db.record_progress(task_id=accepted.body["task_id"], results={}, done=1)
    answer = await held
    assert answer.status == 401, answer.body


async def test_a_poll_does_not_wait_without_its_subscription(settings, client, make):
    _, key = await make.account()
    await make.domain(key)
    accepted = await make.rest("POST", "mailbox_create", key,
                               json={"domain": "example.com", "local_part": "cy"})
    waiters = client.app[WAITERS]
    held = asyncio.create_task(make.rest("GET", "task", key, params={"wait": "60"},
                                         task_id=accepted.body["task_id"]))
    await until_waiting(client.app)
    # the listening connection ends (Postgres restarted, a proxy dropped it): the waiting
    # poll answers what it has now rather than hear nothing for a minute
    await waiters._conn.close()
    answer = await held
    assert answer.status == 200 and answer.body["status"] == "queued"


async def test_held_polls_answer_at_once_when_the_web_stops(settings, make):
    _, key = await make.account()
    await make.domain(key)
    task_id = (await make.rest("POST", "mailbox_create", key,
                               json={"domain": "example.com", "local_part": "di"})
               ).body["task_id"]
    async with serving(settings) as (app, base), counting(base, key) as (api, _):
        held = asyncio.create_task(api.task(task_id, wait=60))
        await until_waiting(app)
        await app.shutdown()  # what a SIGTERM's graceful stop runs first
        task = await held
    assert task["status"] == "queued"


async def test_a_released_subscription_stops_instead_of_reconnecting(settings):
    """A shutdown (release) while the listening connection is lost: the keeper ends, where
    it used to open connection after connection and drop each unclosed."""
    from service.core.waiters import TaskWaiters
    from tests.integration.harness import until

    waiters = TaskWaiters(settings.database_url)
    await waiters.start()
    try:
        waiters.release()
        assert waiters._conn is not None and waiters._keeper is not None
        await waiters._conn.close()  # Postgres restarting as the web stops

        async def ended() -> bool:
            return waiters._keeper is not None and waiters._keeper.done()

        await until(ended, "the keeper ends once released", within_s=5)
    finally:
        await waiters.close()
