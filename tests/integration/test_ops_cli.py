"""`mailprov queue` and `mailprov tasks list|show|retry`, run as an operator runs them."""

import asyncio
import json
import os
import sys

from tests.integration.test_ops import SECRET

JOHN = {"Email_fullname": "john", "single_bulk": "single", "Domain": "example.com",
        "Params": {}}


def _env(settings):
    return {**os.environ, "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url, "MAILPROV_REDIS_PREFIX": settings.redis_prefix}


async def mailprov(settings, *argv):
    """(exit code, stdout, stderr) of `mailprov ARGV`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", *argv, env=_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def as_json(settings, *argv):
    code, out, err = await mailprov(settings, "--json", *argv)
    assert code == 0, err
    return json.loads(out)


async def _failing_account(make, name, domain):
    """An account whose domain has room for one mailbox: john fits, jane fails."""
    account_id, key = await make.account(name)
    await make.domain(key, domain, max_mailboxes=1)
    assert (await make.post("create_mailbox_single", {**JOHN, "Domain": domain}, key)).status \
        == 200
    await make.run_worker()
    r = await make.post("create_mailbox_single",
                        {**JOHN, "Domain": domain, "Email_fullname": "jane",
                         "Params": {"password": SECRET}}, key)
    await make.run_worker()
    return account_id, key, (await r.json())["task_id"]


async def test_a_failed_task_is_listed_shown_and_retried_once_fixed(make, settings, db):
    account_id, key, task_id = await _failing_account(make, "acme", "example.com")
    _, _, other_task = await _failing_account(make, "other", "example.org")

    failed = await as_json(settings, "tasks", "list", "--status", "failed")
    assert [t["id"] for t in failed["tasks"]] == [other_task, task_id]  # newest first
    assert failed["tasks"][1]["error"] == "Mailbox limit reached."
    mine = await as_json(settings, "tasks", "list", "--status", "failed", "--since", "1h",
                         "--account", str(account_id))
    assert [t["id"] for t in mine["tasks"]] == [task_id]
    everything = await as_json(settings, "tasks", "list", "--account", str(account_id))
    assert len(everything["tasks"]) == 3  # domain, john, jane
    code, out, _ = await mailprov(settings, "tasks", "list", "--status", "failed")
    assert code == 0 and f"{task_id}" in out and "Mailbox limit reached." in out
    code, _, err = await mailprov(settings, "tasks", "list", "--since", "yesterday")
    assert code == 2 and "not a duration" in err

    shown = await as_json(settings, "tasks", "show", str(task_id))
    assert shown["status"] == "failed" and shown["attempts"] == 1
    assert shown["error"] == "Mailbox limit reached."
    assert shown["results"] == {"jane@example.com": {"status": "Mailbox limit reached."}}
    # the supplied password waits sealed for a retry, and is never shown
    assert shown["payload"]["items"][0]["password_sealed"] == "[hidden]"
    assert shown["created_at"] and shown["finished_at"] and shown["ran_s"] is not None
    code, out, _ = await mailprov(settings, "tasks", "show", str(task_id))
    assert code == 0 and "v1." not in out and SECRET not in out
    assert "jane@example.com: Mailbox limit reached." in out

    summary = await as_json(settings, "queue")
    assert summary["failed"] == 2 and summary["queued"] == 0 and summary["depth"] == 0
    assert summary["failed_last_hour"] == 2 and summary["completed_last_hour"] == 4
    code, out, _ = await mailprov(settings, "queue")
    assert code == 0 and "failed tasks    2 not retried" in out

    # the cause is fixed (the domain gets room for jane), then the task is retried
    await db.pool.execute("UPDATE domains SET max_mailboxes = 2 WHERE name = 'example.com'")
    retried = await as_json(settings, "tasks", "retry", str(task_id))
    assert retried == {"task_id": task_id, "status": "queued", "enqueued": True}
    summary = await as_json(settings, "queue")
    assert summary["queued"] == 1 and summary["depth"] == 1 and summary["failed"] == 1
    await make.run_worker()
    status, body = await make.task(key, task_id)
    assert status == 200 and body["status"] == "completed"
    assert body["results"]["jane@example.com"]["status"] == "Created successfully."
    failed = await as_json(settings, "tasks", "list", "--status", "failed")
    assert [t["id"] for t in failed["tasks"]] == [other_task]

    # a task that is not failed, or not there, is refused
    code, out, err = await mailprov(settings, "tasks", "retry", str(task_id))
    assert code == 1 and "is completed; only a failed task can be retried" in err
    code, _, err = await mailprov(settings, "tasks", "show", str(task_id + 10**6))
    assert code == 1 and "no task" in err
    code, _, err = await mailprov(settings, "tasks", "retry", str(task_id + 10**6))
    assert code == 1 and "no task" in err


async def test_queue_watch_refreshes_until_stopped(make, settings):
    _, key = await make.account()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "--json", "queue", "--watch", "--interval",
        "0.1", env=_env(settings), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
        assert first["depth"] == 0 and first["workers_alive"] == 0
        assert (await make.post("create_domain", {"Domain": "example.com"}, key)).status == 200
        while True:  # a later refresh shows the new task
            later = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
            if later["queued"] == 1:
                break
        assert later["depth"] == 1 and later["oldest_queued_age_s"] is not None
        assert len(later["per_minute"]) == 60
    finally:
        proc.terminate()
        await proc.wait()


async def test_json_goes_before_or_after_the_command(make, settings):
    account_id, _, task_id = await _failing_account(make, "acme", "example.com")
    before = await as_json(settings, "tasks", "list", "--status", "failed")
    code, out, err = await mailprov(settings, "tasks", "list", "--status", "failed", "--json")
    assert code == 0, err
    assert json.loads(out) == before and before["tasks"][0]["id"] == task_id
    code, out, err = await mailprov(settings, "account", "create", "--name", "x", "--json")
    assert code == 0, err
    made = json.loads(out)
    assert made["user_id"] > account_id and len(made["key"]) == 32
    code, out, _ = await mailprov(settings, "tasks", "show", "1", "--json")
    assert code == 1 and json.loads(out) == {"error": "no task 1"}
