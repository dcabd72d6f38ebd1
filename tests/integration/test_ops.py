"""The queue page: its token, what it shows of a failed task, and retrying from it."""

import re

import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.web.app import create_app

TOKEN = "ops-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "correct horse battery staple"


@pytest.fixture
async def ops(settings):
    """A client of an app with the page on."""
    async with TestClient(TestServer(create_app(settings.replace(ops_token=TOKEN)))) as c:
        yield c


async def test_the_page_is_off_without_a_token_setting(client):
    r = await client.get("/ops", headers=BEARER)
    assert r.status == 404
    assert (await client.get("/ops/tasks/1", headers=BEARER)).status == 404


async def test_the_token_opens_the_page_by_header_or_once_by_address(ops):
    r = await ops.get("/ops")
    assert r.status == 401 and 'name=token' in await r.text()
    assert (await ops.get("/ops", headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await ops.get("/ops", params={"token": "wrong"})).status == 401
    assert (await ops.get("/ops", headers=BEARER)).status == 200

    r = await ops.get("/ops", params={"token": TOKEN}, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/ops"  # the token leaves the address
    cookie = r.cookies["mailprov_ops"]
    assert TOKEN not in cookie.value and cookie["httponly"] and cookie["samesite"] == "Strict"
    r = await ops.get("/ops")  # the client keeps the cookie
    assert r.status == 200 and "mailprov queue" in await r.text()


def _chart_totals(page):
    """(completed, failed) summed over the chart's bars, read from their tooltips."""
    bars = re.findall(r"<title>\d\d:\d\d UTC: (\d+) completed, (\d+) failed</title>", page)
    assert len(bars) == 60
    return sum(int(c) for c, _ in bars), sum(int(f) for _, f in bars)


async def _failed_mailbox(make, ops, db):
    """A domain with room for one mailbox, one created, then a second that fails."""
    make.client = ops
    account_id, key = await make.account()
    await make.domain(key, max_mailboxes=1)
    ok = {"Email_fullname": "john", "single_bulk": "single", "Domain": "example.com",
          "Params": {}}
    assert (await make.post("create_mailbox_single", ok, key)).status == 200
    await make.run_worker()
    over = {**ok, "Email_fullname": "jane", "Params": {"password": SECRET}}
    task_id = (await (await make.post("create_mailbox_single", over, key)).json())["task_id"]
    await make.run_worker()
    assert await db.task_status(task_id=task_id) == "failed"
    return account_id, key, task_id


async def test_a_failed_task_shows_with_its_reason_and_can_be_retried(make, ops, db):
    account_id, key, task_id = await _failed_mailbox(make, ops, db)
    r = await ops.get("/ops", headers=BEARER)
    assert r.status == 200
    page = await r.text()
    assert '<meta http-equiv="refresh"' in page and "<svg" in page
    # everything is inline: no script, no stylesheet, image or font from anywhere
    assert not re.search(r"<script|<link|src=|https?://", page)
    assert "Mailbox limit reached." in page
    assert f'href="/ops/tasks/{task_id}"' in page
    assert _chart_totals(page) == (2, 1)  # the domain and john; jane
    assert re.search(r"<b>2</b>completed, last hour", page)
    assert re.search(r"<b>1</b>failed, not retried", page)

    r = await ops.get(f"/ops/tasks/{task_id}", headers=BEARER)
    assert r.status == 200
    detail = await r.text()
    for shown in ("failed", "Mailbox limit reached.", "jane@example.com", "attempts",
                  "[hidden]", f"<td>{account_id}</td>"):
        assert shown in detail, shown
    # the supplied password waits sealed for a retry; the page shows neither it nor its seal
    sealed = (await db.ops_get_task(task_id=task_id))["payload"]["items"][0]["password_sealed"]
    assert sealed.startswith("v1.")
    for secret in (SECRET, sealed, sealed[3:20], key):
        assert secret not in detail

    # retrying before the cause is fixed fails again, for the same reason
    r = await ops.post(f"/ops/tasks/{task_id}/retry", headers=BEARER, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == f"/ops/tasks/{task_id}"
    assert await db.task_status(task_id=task_id) == "queued"
    await make.run_worker()
    assert await db.task_status(task_id=task_id) == "failed"

    # the operator gives the domain room, and retries: the task completes
    await db.pool.execute("UPDATE domains SET max_mailboxes = 2 WHERE name = 'example.com'")
    r = await ops.post(f"/ops/tasks/{task_id}/retry", headers=BEARER)
    assert r.status == 200 and "queued" in await r.text()  # the redirect shows the task
    await make.run_worker()
    status, body = await make.task(key, task_id)
    assert status == 200 and body["status"] == "completed"
    assert body["results"]["jane@example.com"]["status"] == "Created successfully."
    page = await (await ops.get("/ops", headers=BEARER)).text()
    assert f'href="/ops/tasks/{task_id}"' not in page  # no longer among the failures
    assert _chart_totals(page) == (3, 0)
    assert re.search(r"<b>0</b>failed, not retried", page)

    # only a failed task is retried
    r = await ops.post(f"/ops/tasks/{task_id}/retry", headers=BEARER)
    assert r.status == 409 and "only a failed task" in await r.text()


async def test_unknown_tasks_and_unauthorized_retries_are_refused(make, ops, db):
    _, _, task_id = await _failed_mailbox(make, ops, db)
    assert (await ops.get(f"/ops/tasks/{task_id + 10**6}", headers=BEARER)).status == 404
    assert (await ops.post(f"/ops/tasks/{task_id + 10**6}/retry",
                           headers=BEARER)).status == 404
    assert (await ops.post(f"/ops/tasks/{task_id}/retry")).status == 401
    assert await db.task_status(task_id=task_id) == "failed"


async def test_the_page_shows_live_workers_and_the_queue(make, ops, hasher, settings):
    import asyncio

    from worker.main import create_worker

    make.client = ops
    _, key = await make.account()
    r = await make.post("create_domain", {"Domain": "example.com"}, key)
    assert r.status == 200
    page = await (await ops.get("/ops", headers=BEARER)).text()
    assert "No worker is alive." in page
    assert re.search(r"<b>1</b>jobs in queue \(0 deferred\)", page)

    fast = settings.replace(worker_health_check_interval_s=1)
    worker = create_worker(fast, poll_delay=0.05, handle_signals=False,
                           ctx={"settings": fast, "hasher": hasher})
    running = asyncio.create_task(worker.main())
    try:
        while worker.ctx["worker_id"] not in page or "<b>1</b>completed" not in page:
            assert not running.done(), running.exception()
            await asyncio.sleep(0.1)
            page = await (await ops.get("/ops", headers=BEARER)).text()
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await worker.close()
    assert re.search(r"<b>1</b>workers alive", page) and "j_complete=" in page
    assert "<th>hashing</th>" in page and ">ok</td>" in page
    # nothing is left in the queue: the sweeper is no job of arq's
    assert re.search(r"<b>0</b>jobs in queue \(0 deferred\)", page)
