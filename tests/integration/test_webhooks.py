"""Webhooks: endpoints registered through the resource API and the CLI, deliveries signed
and retried by real `mailprov worker` processes, received by a real aiohttp server on
loopback (MAILPROV_WEBHOOK_ALLOW_PRIVATE lets it be registered)."""

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service.cli import main as cli
from service.core.accounts import create_account
from service.web.app import create_app
from tests.conftest import Factory
from tests.integration.harness import until


def verify(secret: str, header: str, body: bytes) -> bool:
    """The README's check of a delivery's signature."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body,
                        hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


class Receiver:
    """A webhook endpoint: answers each request with the next of `answers` (None: hold it
    until `release` is set), keeping what it was sent."""

    def __init__(self, answers: list[int | None]) -> None:
        self.answers = answers
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        self.arrived.set()
        status = self.answers[min(len(self.received), len(self.answers)) - 1]
        if status is None:
            await self.release.wait()
            status = 200
        return web.Response(status=status)


@asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/hook"))
    finally:
        receiver.release.set()
        await server.close()


@pytest.fixture
async def open_client(settings) -> AsyncIterator[TestClient]:
    """The web app with private endpoints allowed (the receiver is on loopback)."""
    app = create_app(settings.replace(webhook_allow_private=True))
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def _register(make: Factory, key: str, url: str) -> dict[str, Any]:
    r = await make.rest("POST", "webhook_create", key, json={"url": url})
    assert r.status == 201, r.body
    assert set(r.body) == {"id", "url", "secret"}
    return r.body


async def _deliveries(make: Factory, key: str, webhook_id: int) -> list[dict[str, Any]]:
    r = await make.rest("GET", "webhook_deliveries", key, id=webhook_id)
    assert r.status == 200, r.body
    return r.body["deliveries"]


async def test_private_addresses_are_refused(client, make):
    _, key = await make.account()
    for url in ("http://10.0.0.1/hook", "http://127.0.0.1:8080/", "https://[::1]/x",
                "http://169.254.169.254/latest/meta-data", "http://192.168.1.5/"):
        r = await make.rest("POST", "webhook_create", key, json={"url": url})
        assert r.status == 422 and "private" in r.body["msg"], (url, r.body)
    for url in ("ftp://example.com/", "example.com/hook", "http:///nohost", ""):
        r = await make.rest("POST", "webhook_create", key, json={"url": url})
        assert r.status == 422, (url, r.body)
    r = await make.rest("GET", "webhooks", key)
    assert r.status == 200 and r.body == {"webhooks": []}


async def test_signed_deliveries_are_retried_until_one_succeeds(settings, open_client, db,
                                                                 workers, run_worker):
    make = Factory(open_client, db, run_worker)
    _, key = await make.account()
    await make.domain(key)
    receiver = Receiver([500, 500, 200])
    async with receiving(receiver) as url:
        hook = await _register(make, key, url)
        listed = await make.rest("GET", "webhooks", key)
        assert [w["url"] for w in listed.body["webhooks"]] == [url]
        assert "secret" not in json.dumps(listed.body)
        worker = workers(settings, MAILPROV_WEBHOOK_ALLOW_PRIVATE="1")
        accepted = await make.rest("POST", "mailbox_create", key,
                                   json={"domain": "example.com", "local_part": "ann"})

        async def delivered() -> Any:
            found = await _deliveries(make, key, hook["id"])
            return found if found and found[0]["state"] == "delivered" else None

        found = await until(delivered, "the delivery succeeds", worker.log)
    assert len(found) == 1
    assert [a["status"] for a in found[0]["attempts"]] == [500, 500, 200]
    assert found[0]["task_id"] == accepted.body["task_id"]
    assert len(receiver.received) == 3
    task = (await make.rest("GET", "task", key, task_id=accepted.body["task_id"])).body
    for item in task["results"].values():
        item["password"] = None  # generated passwords are not sent
    for headers, body in receiver.received:
        assert verify(hook["secret"], headers["Mailprov-Signature"], body)
        assert not verify("whsec_other", headers["Mailprov-Signature"], body)
        assert json.loads(body) == task
        assert headers["Mailprov-Delivery"] == str(found[0]["id"])
    # on the task's ops page too
    worker.stop()


async def test_a_delivery_survives_its_worker_killed(settings, open_client, db, workers,
                                                    run_worker):
    make = Factory(open_client, db, run_worker)
    _, key = await make.account()
    await make.domain(key)
    receiver = Receiver([None, 200])  # the first is held: the worker dies mid-delivery
    async with receiving(receiver) as url:
        hook = await _register(make, key, url)
        first = workers(settings, MAILPROV_WEBHOOK_ALLOW_PRIVATE="1")
        await make.rest("POST", "mailbox_create", key,
                        json={"domain": "example.com", "local_part": "bo"})
        await asyncio.wait_for(receiver.arrived.wait(), 60)
        first.kill()  # kill -9, its process group with it
        second = workers(settings, MAILPROV_WEBHOOK_ALLOW_PRIVATE="1")

        async def delivered() -> Any:
            found = await _deliveries(make, key, hook["id"])
            return found if found and found[0]["state"] == "delivered" else None

        found = await until(delivered, "the delivery succeeds", second.log)
        second.stop()
    assert len(receiver.received) == 2
    assert found[0]["attempts"][-1]["status"] == 200
    assert receiver.received[0][1] == receiver.received[1][1]  # the same task


async def test_webhooks_from_the_cli_and_their_removal(settings, client, db, make, capsys,
                                                       monkeypatch):
    user_id, key = await create_account(db, "hooks")
    for name, value in (("DATABASE_URL", settings.database_url),
                        ("MAILPROV_SECRET_KEY", settings.secret_key),
                        ("MAILPROV_WEBHOOK_ALLOW_PRIVATE", "1")):
        monkeypatch.setenv(name, value)
    await asyncio.to_thread(cli.main, ["webhook", "add", "--user-id", str(user_id),
                                       "http://127.0.0.1:9/hook", "--json"])
    added = json.loads(capsys.readouterr().out)
    assert added["secret"].startswith("whsec_")
    monkeypatch.setenv("MAILPROV_WEBHOOK_ALLOW_PRIVATE", "0")
    with pytest.raises(SystemExit):
        await asyncio.to_thread(cli.main, ["webhook", "add", "--user-id", str(user_id),
                                           "http://10.0.0.1/"])
    assert "private" in capsys.readouterr().err
    r = await make.rest("GET", "webhooks", key)
    assert [w["id"] for w in r.body["webhooks"]] == [added["id"]]
    r = await make.rest("DELETE", "webhook_delete", key, id=added["id"])
    assert r.status == 200, r.body
    r = await make.rest("DELETE", "webhook_delete", key, id=added["id"])
    assert r.status == 404 and r.body["type"] == "error"
    r = await make.rest("GET", "webhook_deliveries", key, id=added["id"])
    assert r.status == 404
