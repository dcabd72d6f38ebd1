"""Prometheus metrics: the web's /metrics and the worker's own endpoint, parsed with
prometheus-client's parser, moving as tasks are accepted, refused and run; and both
served when web and worker run as separate Procfile processes."""

import asyncio
import os
import signal
import sys
from types import SimpleNamespace

import aiohttp
import pytest
from arq import Retry
from prometheus_client.parser import text_string_to_metric_families

from service.cli.embedded import free_port
from tests.conftest import url
from worker.context import KEY
from worker.main import create_worker
from worker.metrics import WorkerMetrics
from worker.observe import observed

JOHN = {"Email_fullname": "john", "single_bulk": "single", "Domain": "example.com",
        "Params": {}}
BULK = {"Email_fullname": "team", "single_bulk": "bulk", "Domain": "example.com",
        "Params": {"count": 5}}


def samples(text):
    """{(sample name, sorted labels): value}, through prometheus-client's own parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(found, name, **labels):
    return found.get((name, tuple(sorted(labels.items()))), 0)


async def scrape(client):
    r = await client.get(url(client, "metrics"))
    assert r.status == 200, await r.text()
    assert r.headers["Content-Type"].startswith("text/plain")
    return samples(await r.text())


async def test_web_metrics_move_with_the_queue(make, client, settings):
    _, key = await make.account()
    before = await scrape(client)
    assert value(before, "mailprov_queue_depth") == 0
    assert value(before, "mailprov_tasks", status="queued") == 0
    assert value(before, "mailprov_queue_deferred") == 0
    assert value(before, "mailprov_workers_alive") == 0

    r = await make.post("create_domain", {"Domain": "example.com", "Params": {}}, key)
    assert r.status == 200
    queued = await scrape(client)
    assert value(queued, "mailprov_queue_depth") == 1
    assert value(queued, "mailprov_tasks", status="queued") == 1
    assert value(queued, "mailprov_oldest_queued_task_age_seconds") >= 0
    assert value(queued, "mailprov_tasks_accepted_total", type="domain") == 1
    assert value(queued, "mailprov_http_requests_total", route="create_domain", method="POST",
                 status="200") == 1
    assert value(queued, "mailprov_http_request_duration_seconds_count",
                 route="create_domain") == 1

    await make.run_worker()
    for body, route in ((JOHN, "create_mailbox_single"), (BULK, "create_mailbox_bulk")):
        assert (await make.post(route, body, key)).status == 200
    # the same domain again: refused by the API (409), so no task is accepted
    assert (await make.post("create_domain", {"Domain": "example.com"}, key)).status == 409
    two = await scrape(client)
    assert value(two, "mailprov_queue_depth") == 2
    assert value(two, "mailprov_tasks", status="queued") == 2
    assert value(two, "mailprov_tasks_finished_last_hour", status="completed") == 1
    for kind in ("domain", "mailbox_single", "mailbox_bulk"):
        assert value(two, "mailprov_tasks_accepted_total", type=kind) == 1
    assert value(two, "mailprov_http_requests_total", route="create_domain", method="POST",
                 status="409") == 1

    await make.run_worker()
    drained = await scrape(client)
    assert value(drained, "mailprov_queue_depth") == 0
    assert value(drained, "mailprov_tasks", status="queued") == 0
    assert value(drained, "mailprov_oldest_queued_task_age_seconds") == 0
    assert value(drained, "mailprov_tasks_finished_last_hour", status="completed") == 3
    # the scrapes themselves are requests too, counted by their route
    assert value(drained, "mailprov_http_requests_total", route="metrics", method="GET",
                 status="200") == 3  # this scrape is counted once it is answered


async def test_rate_limit_refusals_are_counted(make, settings):
    from aiohttp.test_utils import TestClient, TestServer

    from service.web.app import create_app

    async with TestClient(TestServer(create_app(settings.replace(rate_create_domain=1)))) as c:
        make.client = c
        _, key = await make.account()
        assert (await make.post("create_domain", {"Domain": "a.example"}, key)).status == 200
        assert (await make.post("create_domain", {"Domain": "b.example"}, key)).status == 429
        found = await scrape(c)
    assert value(found, "mailprov_rate_limited_total", route="create_domain") == 1
    assert value(found, "mailprov_tasks_accepted_total", type="domain") == 1


async def _until(check, what):
    for _ in range(600):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_worker_metrics_count_jobs_and_items(make, db, settings, hasher):
    _, key = await make.account()
    await make.domain(key, max_mailboxes=6)  # 5 in the bulk, then john: the limit is 6
    port = free_port()
    chosen = settings.replace(worker_metrics_port=port, host="127.0.0.1")
    worker = create_worker(chosen, poll_delay=0.02, handle_signals=False,
                           ctx={"settings": chosen, "hasher": hasher})
    running = asyncio.create_task(worker.main())
    try:
        for body, route in ((BULK, "create_mailbox_bulk"), (JOHN, "create_mailbox_single"),
                            ({**JOHN, "Email_fullname": "jane"}, "create_mailbox_single")):
            assert (await make.post(route, body, key)).status == 200
            await _until(lambda: _all_finished(db), "the task to finish")
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{port}/metrics") as r:
            assert r.status == 200
            found = samples(await r.text())
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await worker.close()
    single, bulk = "provision_mailbox_single", "provision_mailbox_bulk"
    assert value(found, "mailprov_worker_jobs_started_total", job=bulk) == 1
    assert value(found, "mailprov_worker_jobs_completed_total", job=bulk) == 1
    assert value(found, "mailprov_worker_jobs_started_total", job=single) == 2
    # john fits, jane is over the domain's limit of 6 mailboxes: her task fails
    assert value(found, "mailprov_worker_jobs_completed_total", job=single) == 1
    assert value(found, "mailprov_worker_jobs_failed_total", job=single) == 1
    assert value(found, "mailprov_worker_jobs_retried_total", job=single) == 0
    assert value(found, "mailprov_worker_items_provisioned_total", type="mailbox_bulk") == 5
    assert value(found, "mailprov_worker_items_provisioned_total", type="mailbox_single") == 1
    assert value(found, "mailprov_worker_job_duration_seconds_count", job=single) == 2
    # the server stopped with the worker
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as http:
            await http.get(f"http://127.0.0.1:{port}/metrics")


async def _all_finished(db):
    return not await db.pool.fetchval(
        "SELECT count(*) FROM tasks WHERE status IN ('queued', 'processing')")


async def test_a_retry_is_counted_as_retried():
    async def provision_flaky(ctx, task_id):
        raise Retry(defer=1)

    metrics = WorkerMetrics()
    with pytest.raises(Retry):
        await observed(provision_flaky)({KEY: SimpleNamespace(metrics=metrics), "job_try": 1}, 7)
    found = samples(_exposition(metrics))
    assert value(found, "mailprov_worker_jobs_retried_total", job="provision_flaky") == 1
    assert value(found, "mailprov_worker_jobs_failed_total", job="provision_flaky") == 0
    assert observed(provision_flaky).__qualname__.endswith("provision_flaky")  # arq's name


def _exposition(metrics):
    from prometheus_client.exposition import generate_latest

    return generate_latest(metrics.registry).decode()


async def test_web_and_worker_as_separate_procfile_processes(make, settings):
    """`mailprov serve` and `mailprov worker`, as the Procfile runs them, each with its
    metrics; the worker's probe passes while it runs and fails once it has stopped."""
    _, key = await make.account()
    web_port, metrics_port = free_port(), free_port()
    env = {**os.environ, "DATABASE_URL": settings.database_url,
           "REDIS_URL": settings.redis_url, "MAILPROV_REDIS_PREFIX": settings.redis_prefix,
           "PORT": str(web_port), "MAILPROV_HOST": "127.0.0.1",
           "MAILPROV_WORKER_METRICS_PORT": str(metrics_port),
           "MAILPROV_ARGON2_TIME_COST": "1", "MAILPROV_ARGON2_MEMORY_KIB": "1024",
           "MAILPROV_HASH_PROCESSES": "1", "MAILPROV_WORKER_HEALTH_CHECK_INTERVAL_S": "1"}

    async def start(*argv):
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service.cli", *argv, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)

    async def check():
        probe = await start("worker", "--check")
        return await probe.wait()

    web, worker = await start("serve"), await start("worker")
    base = f"http://127.0.0.1:{web_port}"
    try:
        async with aiohttp.ClientSession() as http:
            async def answers(address):
                try:
                    async with http.get(address) as r:
                        return r.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await _until(lambda: answers(f"{base}/readyz"), "the web process")
            await _until(lambda: answers(f"http://127.0.0.1:{metrics_port}/metrics"),
                         "the worker's metrics")
            assert await check() == 0
            async with http.post(f"{base}/api/v1/create/domain",
                                 json={"Domain": "example.com", "key": key}) as r:
                assert r.status == 200, await r.text()

            async def finished():
                async with http.get(f"{base}/metrics") as r:
                    found = samples(await r.text())
                return value(found, "mailprov_tasks_finished_last_hour", status="completed")

            await _until(finished, "the domain task to finish")
            async with http.get(f"{base}/metrics") as r:
                web_found = samples(await r.text())
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as r:
                worker_found = samples(await r.text())
        assert value(web_found, "mailprov_tasks_accepted_total", type="domain") == 1
        assert value(web_found, "mailprov_workers_alive") == 1
        assert value(worker_found, "mailprov_worker_jobs_completed_total",
                     job="provision_domain") == 1
        assert value(worker_found, "mailprov_worker_items_provisioned_total",
                     type="domain") == 1
    finally:
        for proc in (web, worker):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (web, worker):
            _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert worker.returncode == 0, err.decode()[-3000:]
    assert await check() == 1
