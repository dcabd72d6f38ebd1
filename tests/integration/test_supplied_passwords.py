"""Passwords a client supplies: sealed in the request, hashed by the worker with a salt per
mailbox, erased in the transaction that writes the mailbox; and hashing shared fairly
between accounts, so one account's bulk does not hold up another's mailbox."""

from __future__ import annotations

import asyncio
import json
import secrets as random
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.core import oversight, passwords, secrets
from service.web.app import create_app
from service.web.state import ARQ, SETTINGS
from tests.conftest import url
from tests.integration.test_recovery import WorkerProcess, until

DOMAIN = {"quota_mb": 10**6, "max_mailboxes": 5000, "default_mailbox_quota_mb": 1}
GIVEN = passwords.hash_password("a migrated secret", 1, 1024)


def bulk(passwords_by_local_part: dict[str, str], domain: str = "example.com") -> dict:
    return {"Email_fullname": "import", "single_bulk": "bulk", "Domain": domain,
            "Params": {"mailboxes": [{"local_part": lp, "password": pw}
                                     for lp, pw in passwords_by_local_part.items()]}}


async def _payload(db, task_id: int) -> dict:
    return await db.pool.fetchval("SELECT payload FROM tasks WHERE id = $1", task_id)


async def test_a_thousand_supplied_passwords_are_sealed_then_hashed_apart_and_erased(
        make, db, settings):
    """Defect 8 (hashing in the request) and the acceptance's end state: the request only
    seals; after the task, 1,000 different hashes and no ciphertext."""
    _, key = await make.account()
    await make.domain(key, **DOMAIN)
    given = {f"user{i}": f"pw-{i}-{random.token_hex(6)}" for i in range(1000)}
    r = await make.post("create_mailbox_bulk", bulk(given), key)
    assert r.status == 200, await r.text()
    task_id = (await r.json())["task_id"]

    # accepted: the payload holds each password sealed, no hash, no plaintext
    payload = await _payload(db, task_id)
    items = payload["items"]
    assert all("password_hash" not in i for i in items)
    sealed = [i[secrets.SEALED_PASSWORD] for i in items]
    assert len(set(sealed)) == 1000
    assert [secrets.unseal(settings.secret_key, s) for s in sealed] == list(given.values())
    text = json.dumps(payload)
    assert not [pw for pw in given.values() if pw in text]

    await make.run_worker()
    status, task = await make.task(key, task_id)
    assert status == 200 and task["status"] == "completed", task
    rows = dict(await db.pool.fetch("SELECT local_part, password_hash FROM mailboxes"))
    assert len(rows) == 1000 and len(set(rows.values())) == 1000
    for local_part in ("user0", "user500", "user999"):
        assert passwords.verify(rows[local_part], given[local_part])
    # nothing of the secrets is left in the task
    text = json.dumps(await _payload(db, task_id))
    assert secrets.SEALED_PASSWORD not in text and "password_hash" not in text
    assert secrets.VERSION not in text and "ARGON2" not in text


async def test_a_shared_password_gets_a_hash_and_salt_per_mailbox(make, db):
    """Defect 7: `Params.password` on a bulk used to be hashed once for every mailbox."""
    _, key = await make.account()
    await make.domain(key)
    r = await make.post("create_mailbox_bulk", {
        "Email_fullname": "team", "single_bulk": "bulk", "Domain": "example.com",
        "Params": {"count": 4, "quota_mb": 10, "password": "one shared secret"}}, key)
    assert r.status == 200, await r.text()
    listed = bulk({"ann": "same for two", "bob": "same for two"})
    assert (await make.post("create_mailbox_bulk", listed, key)).status == 200
    await make.run_worker()
    rows = dict(await db.pool.fetch("SELECT local_part, password_hash FROM mailboxes"))
    team = [rows[f"team{n}"] for n in range(1, 5)]
    assert len(set(team)) == 4
    assert len({h.rsplit("$", 2)[1] for h in team}) == 4  # four salts
    assert all(passwords.verify(h, "one shared secret") for h in team)
    assert rows["ann"] != rows["bob"]
    assert passwords.verify(rows["ann"], "same for two")


async def test_secrets_stay_only_as_long_as_a_retry_may_need_them(make, db, settings,
                                                                 run_worker):
    arq = make.client.app[ARQ]
    _, key = await make.account()
    await make.domain(key, max_mailboxes=2)
    # completed, with one item refused for the limit: no secret kept at all, neither a
    # sealed password nor a hash the client supplied
    body = bulk({"ann": "anns secret 1", "bob": "bobs secret 1", "cat": "cats secret 1"})
    body["Params"]["mailboxes"][1] = {"local_part": "bob", "password_hash": GIVEN}
    r = await make.post("create_mailbox_bulk", body, key)
    done = (await r.json())["task_id"]
    await run_worker()
    results = (await make.task(key, done))[1]["results"]
    assert results["cat@example.com"]["status"] == "Mailbox limit reached."
    assert await db.pool.fetchval("SELECT password_hash FROM mailboxes WHERE local_part = "
                                  "'bob'") == GIVEN
    text = json.dumps(await _payload(db, done))
    assert secrets.SEALED_PASSWORD not in text and "secrets_kept" not in text
    assert "password_hash" not in text and GIVEN not in text

    # failed for the limit: its password stays sealed, so a retry makes it as asked
    dan = {"Email_fullname": "dan", "single_bulk": "single", "Domain": "example.com",
           "Params": {"password": "dans own secret"}}
    failed = (await (await make.post("create_mailbox_single", dan, key)).json())["task_id"]
    eve = {**dan, "Email_fullname": "eve", "Params": {"password": "eves own secret"}}
    expired = (await (await make.post("create_mailbox_single", eve, key)).json())["task_id"]
    await run_worker()
    for task_id in (failed, expired):
        assert (await make.task(key, task_id))[1]["reason"] == "Mailbox limit reached."
        payload = await _payload(db, task_id)
        assert payload["secrets_kept"] is True and "own secret" not in json.dumps(payload)
        assert secrets.unseal(settings.secret_key,
                              payload["items"][0][secrets.SEALED_PASSWORD]).endswith("secret")
    await db.pool.execute("UPDATE domains SET max_mailboxes = 3")
    assert await oversight.retry_task(db, arq, failed)
    await run_worker()
    assert (await make.task(key, failed))[1]["status"] == "completed"
    stored = await db.pool.fetchval(
        "SELECT password_hash FROM mailboxes WHERE address = 'dan@example.com'")
    assert passwords.verify(stored, "dans own secret")
    assert secrets.SEALED_PASSWORD not in json.dumps(await _payload(db, failed))

    # the sweeper erases what a failed task kept once its time is up; no retry then
    await run_worker(settings=settings.replace(failed_task_secrets_ttl_s=0))
    (item,) = (await _payload(db, expired))["items"]
    assert item == {"local_part": "eve", "quota_mb": 1024, "secret_erased": True}
    with pytest.raises(oversight.RetryRefused, match="were erased"):
        await oversight.retry_task(db, arq, expired)


async def test_the_web_holds_no_hashing_pool(client):
    app = client.app
    assert app[SETTINGS].secret_key
    assert not [k for k in app if getattr(k, "name", "") == "hasher"]


async def test_one_accounts_bulk_does_not_hold_up_anothers_mailbox(make, db, settings,
                                                                   tmp_path: Path):
    """Defect 2: B's single mailbox, sent while A's bulk of supplied passwords is being
    hashed, finishes long before A's bulk does (it used to wait for all of A's hashes).
    Both sides are timed in the same run, so a slow machine slows both."""
    # about 10 ms a hash per process: A's bulk takes seconds, B's one hash milliseconds
    slow = settings.replace(argon2_time_cost=2, argon2_memory_kib=8192)
    worker = WorkerProcess(slow, tmp_path / "worker.log", MAILPROV_HASH_PROCESSES="2",
                           MAILPROV_WORKER_JOB_TIMEOUT_S="300")
    try:
        async with TestClient(TestServer(create_app(slow))) as web:
            _, a_key = await make.account("a")
            _, b_key = await make.account("b")
            for name, k in (("a.example", a_key), ("b.example", b_key)):
                r = await web.post(url(web, "create_domain"),
                                   json={"Domain": name, "Params": DOMAIN, "key": k})
                assert r.status == 200, await r.text()
            await until(lambda: db.pool.fetchval(
                "SELECT count(*) = 2 FROM domains WHERE status = 'active'"),
                "the domains are provisioned", worker.log)
            loop = asyncio.get_running_loop()
            began = loop.time()
            a_body = bulk({f"a{i}": f"a-secret-{i}" for i in range(600)}, "a.example")
            b_body = {"Email_fullname": "bee", "single_bulk": "single",
                      "Domain": "b.example", "Params": {"password": "bees own secret"}}
            a_post = asyncio.create_task(web.post(url(web, "create_mailbox_bulk"),
                                                  json={**a_body, "key": a_key}))
            await asyncio.sleep(0.05)
            b = await web.post(url(web, "create_mailbox_single"),
                               json={**b_body, "key": b_key})
            a = await a_post
            assert a.status == 200 and b.status == 200, (await a.text(), await b.text())
            a_task, b_task = (await a.json())["task_id"], (await b.json())["task_id"]

            async def finished(task_id: int) -> float | None:
                done = await db.pool.fetchval(
                    "SELECT status = 'completed' FROM tasks WHERE id = $1", task_id)
                return loop.time() if done else None

            b_done = await until(lambda: finished(b_task), "B's mailbox", worker.log)
            a_progress = await db.pool.fetchval(
                "SELECT progress_done FROM tasks WHERE id = $1", a_task)
            a_done = await until(lambda: finished(a_task), "A's bulk", worker.log)
    finally:
        worker.stop()
    b_took, a_took = b_done - began, a_done - began
    assert b_took < a_took / 2, (b_took, a_took)
    assert a_progress < 600, a_progress
