"""The API client and its CLI commands against the real web app on a TCP port, with the
real arq worker running beside them."""

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from service.cli import main as cli
from service.cli.api import ProgressBar
from service.client import ApiError, MailprovClient, RateLimited, TaskFailed, WaitTimeout
from service.core.accounts import create_account
from service.web.app import create_app

CREATED = "Created successfully."


@asynccontextmanager
async def serving(settings) -> AsyncIterator[str]:
    """The web app on a real port; its base URL."""
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url(""))
    finally:
        await server.close()


@asynccontextmanager
async def working(run_worker, start: asyncio.Event | None = None, **overrides):
    """The real worker, run in burst mode again and again (every 50 ms) until the block
    ends; from when `start` is set, if given."""
    stop = asyncio.Event()

    async def loop():
        if start is not None:
            await start.wait()
        while not stop.is_set():
            await run_worker(**overrides)
            try:
                await asyncio.wait_for(stop.wait(), 0.05)
            except TimeoutError:
                pass

    running = asyncio.create_task(loop())
    try:
        yield
    finally:
        stop.set()
        if start is not None:
            start.set()
        await running


@pytest.fixture
async def base_url(settings) -> AsyncIterator[str]:
    async with serving(settings) as url:
        yield url


@pytest.fixture
async def key(db) -> str:
    return (await create_account(db, "acme"))[1]


async def test_create_domain_and_wait(base_url, key, run_worker):
    seen = []
    async with MailprovClient(base_url, key) as api, working(run_worker):
        task_id = await api.create_domain("Example.COM", quota_mb=20480, description="main")
        task = await api.wait(task_id, on_progress=lambda done, total: seen.append((done, total)))
    assert task["status"] == "completed" and task["Task_id"] == task_id
    assert task["type"] == "domain"
    assert task["results"] == {"example.com": {"status": CREATED}}
    assert seen[-1] == (1, 1)


async def test_a_bulk_reports_progress_until_all_500_are_done(base_url, key, settings,
                                                              run_worker):
    seen = []
    queued = asyncio.Event()

    async def on_progress(done, total):  # a coroutine function works as well as a function
        seen.append((done, total))
        queued.set()

    async with MailprovClient(base_url, key) as api:
        async with working(run_worker):
            await api.wait(await api.create_domain("example.com", max_mailboxes=1000))
        task_id = await api.create_mailboxes("example.com", prefix="team", count=500, quota_mb=10)
        # the worker starts only once the client has seen the task queued
        async with working(run_worker, start=queued, settings=settings.replace(bulk_chunk_size=50)):
            task = await api.wait(task_id, on_progress=on_progress, poll_max=0.05)
    assert task["status"] == "completed" and task["total_email"] == 500
    assert len(task["results"]) == 500
    assert {r["status"] for r in task["results"].values()} == {CREATED}
    assert all(len(r["password"]) >= 16 for r in task["results"].values())
    assert seen[0] == (0, 500) and seen[-1] == (500, 500)
    dones = [done for done, _ in seen]
    assert dones == sorted(set(dones)), seen  # each change reported once, never backwards
    assert {total for _, total in seen} == {500}


async def test_a_failed_task_raises_task_failed(base_url, key, run_worker):
    async with MailprovClient(base_url, key) as api, working(run_worker):
        await api.wait(await api.create_domain("example.com"))
        first = await api.wait(await api.create_mailbox("john@example.com", display_name="J"))
        assert first["results"]["john@example.com"]["status"] == CREATED
        again = await api.create_mailbox("john", "example.com")
        with pytest.raises(TaskFailed) as failed:
            await api.wait(again)
        with pytest.raises(TaskFailed):
            await api.task(again)
    assert failed.value.task_id == again
    assert failed.value.reason == "Mailbox already exists."
    assert failed.value.results == {"john@example.com": {"status": "Already exists."}}
    assert str(failed.value) == f"task {again} failed: Mailbox already exists."


async def test_other_errors_raise_api_error(base_url, key):
    async with MailprovClient(base_url, "A" * 32) as stranger:
        with pytest.raises(ApiError) as denied:
            await stranger.create_domain("example.com")
        assert (denied.value.status, denied.value.reason) == (401, "Invalid API key.")
        with pytest.raises(ApiError) as denied:
            await stranger.task(1)
        assert denied.value.status == 401
    async with MailprovClient(base_url + "/api/v1/", key) as api:
        with pytest.raises(ApiError) as invalid:
            await api.create_domain("no_such..name", description="x")
        assert invalid.value.status == 422 and not isinstance(invalid.value, TaskFailed)
        assert list(invalid.value.errors) == ["Domain"]
        with pytest.raises(ApiError) as missing:
            await api.wait(10**12)
        assert missing.value.status == 404
        assert missing.value.reason == "Task ID was not found for this API key."
        with pytest.raises(ValueError):
            await api.create_mailbox("john")
    assert key not in repr(api)


async def test_a_long_retry_after_raises_rate_limited(settings, db, run_worker):
    _, key = await create_account(db, "acme")
    async with serving(settings.replace(rate_get=2)) as url:
        async with MailprovClient(url, key, max_retry_after=30) as api:
            task_id = await api.create_domain("example.com")
            # nothing runs the task, so the third poll meets the hourly limit of 2 GETs
            with pytest.raises(RateLimited) as limited:
                await api.wait(task_id, poll_min=0.01)
    assert limited.value.status == 429
    assert limited.value.retry_after > 30
    assert limited.value.reason.startswith("Rate limit exceeded")


async def test_wait_gives_up_at_its_timeout(base_url, key):
    async with MailprovClient(base_url, key) as api:
        task_id = await api.create_domain("example.com")
        with pytest.raises(WaitTimeout) as late:
            await api.wait(task_id, timeout=0.3, poll_min=0.05)
    assert isinstance(late.value, TimeoutError)
    assert late.value.task["status"] == "queued"
    assert str(late.value) == f"task {task_id} is not finished after 0.3 s (queued 0/1)"


async def test_a_short_retry_after_is_slept_then_polling_goes_on(caplog):
    # The real server's limits are hourly, so a server that asks for short waits stands in:
    # 503 (Retry-After: 0), 429 (Retry-After: 1), still running, then done.
    answers = [
        (503, {"status": "error", "reason": "Unavailable."}, {"Retry-After": "0"}),
        (429, {"status": "error", "reason": "Slow down."}, {"Retry-After": "1"}),
        (200, {"Task_id": 7, "status": "processing", "results": {},
               "progress": {"done": 1, "total": 2}}, {}),
        (200, {"Task_id": 7, "status": "completed", "total_email": 2,
               "results": {"a@x.org": {"status": CREATED}, "b@x.org": {"status": CREATED}}},
         {}),
    ]
    asked = []

    async def get_task(request):
        asked.append(dict(request.query))
        status, body, headers = answers[len(asked) - 1]
        return web.json_response(body, status=status, headers=headers)

    app = web.Application()
    app.router.add_get("/api/v1/get/task", get_task)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    seen = []
    try:
        with caplog.at_level(logging.INFO, "mailprov.client"):
            async with MailprovClient(str(server.make_url("")), "K" * 32) as api:
                task = await api.wait(7, on_progress=lambda *p: seen.append(p))
    finally:
        await server.close()
    assert task["status"] == "completed" and len(asked) == 4
    assert asked[0] == {"key": "K" * 32, "task_id": "7", "wait": "30"}  # a long poll
    waits = [r.getMessage() for r in caplog.records if r.name == "mailprov.client"]
    assert waits == ["task 7: HTTP 503, polling again in 0.0 s",
                     "task 7: HTTP 429, polling again in 1.0 s"]
    assert seen == [(1, 2), (2, 2)]


def test_the_progress_bar_redraws_on_a_terminal_and_writes_lines_elsewhere():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Terminal(), io.StringIO()
    for stream in (tty, pipe):
        bar = ProgressBar(stream)
        for done in (0, 250, 500):
            bar.update(done, 500)
        bar.close()
    assert pipe.getvalue() == "progress: 0/500\nprogress: 250/500\nprogress: 500/500\n"
    assert tty.getvalue().count("\r") == 3 and tty.getvalue().endswith("] 500/500 100%\n")
    assert "[" + "#" * 15 + "." * 15 + "] 250/500  50%" in tty.getvalue()


async def mailprov(*argv: str) -> int:
    """Run the CLI (it runs its own event loop, hence a thread); its exit code."""
    try:
        await asyncio.to_thread(cli.main, list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture
def cli_env(base_url, key, monkeypatch):
    monkeypatch.setenv("MAILPROV_URL", base_url)
    monkeypatch.setenv("MAILPROV_KEY", key)


async def test_cli_creates_and_waits(cli_env, run_worker, capsys):
    async with working(run_worker):
        assert await mailprov("--json", "create", "domain", "example.com", "--max-mailboxes",
                              "1000", "--description", "main", "--wait") == 0
        out = json.loads(capsys.readouterr().out)
        assert out["status"] == "completed" and out["summary"] == {CREATED: 1}

        assert await mailprov("create", "mailboxes", "--domain", "example.com", "--prefix",
                              "team", "--count", "10", "--quota-mb", "10", "--wait") == 0
        shown = capsys.readouterr()
        assert f"{CREATED}: 10" in shown.out and "(10 generated passwords not shown" in shown.out

        assert await mailprov("--json", "create", "mailboxes", "--domain", "example.com",
                              "--prefix", "team", "--count", "500", "--quota-mb", "10",
                              "--wait") == 0
        shown = capsys.readouterr()
    out = json.loads(shown.out)
    assert out["status"] == "completed"
    assert out["summary"] == {CREATED: 490, "Already exists.": 10}
    assert len(out["task"]["results"]) == 500
    assert not any("password" in r for r in out["task"]["results"].values())
    # stderr is not a terminal here: one line per change of progress, ending at 500/500
    lines = [line for line in shown.err.splitlines() if line.startswith("progress: ")]
    assert lines and lines[-1] == "progress: 500/500"
    dones = [int(line.split()[1].split("/")[0]) for line in lines]
    assert dones == sorted(set(dones))

    assert await mailprov("--json", "task", str(out["task_id"])) == 0
    again = json.loads(capsys.readouterr().out)
    assert again == out  # the same task, shown the same way
    assert await mailprov("task", str(out["task_id"])) == 0
    assert capsys.readouterr().out.startswith(
        f"task {out['task_id']} (mailbox_bulk, example.com): completed\n"
        f"{CREATED}: 490, Already exists.: 10\n")


async def test_cli_single_mailbox_passwords_and_failures(cli_env, run_worker, capsys,
                                                         monkeypatch):
    async with working(run_worker):
        assert await mailprov("create", "domain", "example.com", "--wait") == 0
        capsys.readouterr()
        assert await mailprov("--json", "create", "mailbox", "john@example.com",
                              "--display-name", "John", "--wait", "--show-passwords") == 0
        out = json.loads(capsys.readouterr().out)
        password = out["task"]["results"]["john@example.com"]["password"]
        assert len(password) >= 16

        assert await mailprov("task", str(out["task_id"])) == 0
        assert password not in capsys.readouterr().out
        assert await mailprov("task", str(out["task_id"]), "--show-passwords") == 0
        assert f"john@example.com  {password}" in capsys.readouterr().out

        # the same mailbox again: the task fails, exit code 1
        assert await mailprov("--json", "create", "mailbox", "john", "--domain", "example.com",
                              "--wait") == 1
        shown = capsys.readouterr()
        out = json.loads(shown.out)
        assert out["status"] == "failed" and out["reason"] == "Mailbox already exists."
        assert out["summary"] == {"Already exists.": 1}
        assert shown.err.strip() == (f"mailprov: task {out['task_id']} failed: "
                                     "Mailbox already exists.")

        # a password from stdin; without --wait only the task id is printed
        monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
        assert await mailprov("--json", "create", "mailbox", "jane@example.com",
                              "--password", "-") == 0
        queued = json.loads(capsys.readouterr().out)
        assert queued["status"] == "queued" and queued["task_id"] > out["task_id"]


async def test_cli_errors_and_usage(cli_env, capsys, monkeypatch):
    monkeypatch.setenv("MAILPROV_KEY", "A" * 32)
    assert await mailprov("--json", "create", "domain", "example.com") == 1
    shown = capsys.readouterr()
    assert json.loads(shown.out) == {"error": "HTTP 401: Invalid API key.", "http_status": 401,
                                     "reason": "Invalid API key.", "errors": {}}
    assert shown.err.strip() == "mailprov: HTTP 401: Invalid API key."
    assert "A" * 32 not in shown.out + shown.err

    assert await mailprov("create", "mailbox", "john") == 2
    assert "give a full address" in capsys.readouterr().err
    assert await mailprov("create", "mailboxes", "--domain", "example.com") == 2
    monkeypatch.delenv("MAILPROV_KEY")
    assert await mailprov("task", "1") == 2
    assert "no API key" in capsys.readouterr().err


async def test_the_client_drives_the_whole_lifecycle(base_url, key, run_worker, db):
    async with MailprovClient(base_url, key) as api, working(run_worker):
        await api.wait(await api.create_domain("example.com"))
        await api.wait(await api.create_mailbox("john@example.com", display_name="John"))
        await api.wait(await api.change_password("john@example.com", "a-long-new-secret"))
        stored = await db.pool.fetchval("SELECT password_hash FROM mailboxes")
        assert stored.startswith("{ARGON2ID}")
        done = await api.wait(await api.update_mailbox("john@example.com", quota=512,
                                                       active=False))
        assert done["type"] == "mailbox_update"
        mailbox = await api.get_mailbox("john@example.com")
        assert mailbox["quota"] == 512 and mailbox["status"] == "inactive"

        task_id, alias_id = await api.create_alias("sales@example.com", ["john@example.com"])
        await api.wait(task_id)
        assert (await api.get_alias(alias_id))["goto"] == ["john@example.com"]
        await api.wait(await api.update_alias(alias_id, goto=["a@elsewhere.org"]))
        page = await api.list_aliases(domain="example.com")
        assert [a["goto"] for a in page["data"]] == [["a@elsewhere.org"]]
        await api.wait(await api.alias_action("deactivate", [alias_id]))
        await api.wait(await api.delete_alias(alias_id))
        await api.wait(await api.restore_alias(alias_id))
        await api.wait(await api.forget_alias(alias_id))
        with pytest.raises(ApiError) as missing:
            await api.get_alias(alias_id)
        assert missing.value.status == 404
        assert missing.value.reason == "Alias not found for this account."

        await api.wait(await api.create_alias_domain("example.net", "example.com"))
        await api.wait(await api.update_alias_domain("example.net", active=False))
        assert not (await api.get_alias_domain("example.net"))["active"]
        assert (await api.list_alias_domains())["meta"]["total"] == 1
        await api.wait(await api.delete_alias_domain("example.net"))

        await api.wait(await api.delete_mailbox("john@example.com"))
        deleted = await api.list_mailboxes(deleted="only")
        assert [m["email"] for m in deleted["data"]] == ["john@example.com"]
        await api.wait(await api.restore_mailbox("john@example.com"))
        await api.wait(await api.mailbox_action("delete", ["john@example.com"]))
        await api.wait(await api.delete_mailbox("john@example.com", purge=True))
        assert (await api.list_mailboxes(deleted="with"))["data"] == []

        await api.wait(await api.update_domain("example.com", description="main",
                                               mailboxes=10))
        assert (await api.get_domain("example.com"))["mailboxes"] == 10
        await api.wait(await api.delete_domain("example.com"))
        # a bulk task completes, with a result per domain
        bulk = await api.wait(await api.delete_domains(["example.com"]))
        assert bulk["results"] == {"example.com": {"status": "Already deleted."}}
        # the single route refuses it at once
        with pytest.raises(ApiError) as twice:
            await api.delete_domain("example.com")
        assert twice.value.status == 409 and "?purge=true" in twice.value.reason
        await api.wait(await api.restore_domain("example.com"))
        assert (await api.list_domains(search="example"))["data"][0]["status"] == "active"
        await api.wait(await api.delete_domain("example.com", purge=True))
        assert (await api.list_domains())["meta"]["total"] == 0
        with pytest.raises(ApiError) as refused:
            await api.update_mailbox("john@example.com", quota=1)
        assert refused.value.status == 404
        with pytest.raises(ValueError, match="password"):
            await api.change_password("john@example.com")


async def test_cli_lifecycle_commands(cli_env, run_worker, capsys, monkeypatch, db):
    async with working(run_worker):
        assert await mailprov("create", "domain", "example.com", "--wait") == 0
        assert await mailprov("create", "mailbox", "john@example.com", "--wait") == 0
        capsys.readouterr()

        monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
        assert await mailprov("mailbox", "passwd", "john@example.com", "--wait") == 0
        out = capsys.readouterr().out
        assert out.startswith("task ") and "Updated successfully.: 1" in out
        assert "correct horse" not in out
        stored = await db.pool.fetchval("SELECT password_hash FROM mailboxes")
        from service.core import passwords
        assert passwords.verify(stored, "correct horse battery")

        assert await mailprov("--json", "alias", "create", "sales@example.com", "--to",
                              "a@example.com", "--to", "b@elsewhere.org", "--wait") == 0
        made = json.loads(capsys.readouterr().out)
        assert made["status"] == "completed" and isinstance(made["alias_id"], int)
        assert await mailprov("--json", "alias", "show", str(made["alias_id"])) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["goto"] == ["a@example.com", "b@elsewhere.org"]
        assert await mailprov("alias", "list") == 0
        assert capsys.readouterr().out == "sales@example.com  active\npage 1 of 1 (1 in all)\n"

        assert await mailprov("mailbox", "update", "john@example.com", "--quota", "512",
                              "--no-active", "--force-pw-update", "--wait") == 0
        capsys.readouterr()
        assert await mailprov("mailbox", "show", "john@example.com") == 0
        text = capsys.readouterr().out
        assert "quota: 512\n" in text and "status: inactive\n" in text
        assert "force_pw_update: true\n" in text

        assert await mailprov("mailbox", "delete", "john@example.com", "--wait") == 0
        assert await mailprov("mailbox", "list", "--deleted", "only") == 0
        assert "john@example.com  deleted" in capsys.readouterr().out
        assert await mailprov("mailbox", "restore", "john@example.com", "--wait") == 0
        assert await mailprov("--json", "mailbox", "bulk", "delete", "john@example.com",
                              "nobody@example.com", "--wait") == 0
        out = capsys.readouterr().out.strip().splitlines()[-1]
        assert json.loads(out)["summary"] == {"Deleted successfully.": 1, "Not found.": 1}

        assert await mailprov("alias-domain", "create", "example.net", "--target",
                              "example.com", "--wait") == 0
        assert await mailprov("alias-domain", "update", "example.net", "--no-active",
                              "--wait") == 0
        assert await mailprov("alias-domain", "delete", "example.net", "--wait") == 0
        assert await mailprov("alias", "delete", str(made["alias_id"]), "--purge",
                              "--wait") == 0
        assert await mailprov("domain", "update", "example.com", "--mailboxes", "5",
                              "--wait") == 0
        assert await mailprov("domain", "delete", "example.com", "--wait") == 0
        capsys.readouterr()
        # a refusal: exit code 1, the API's sentence on stderr
        assert await mailprov("domain", "update", "example.com", "--quota", "10") == 1
        assert capsys.readouterr().err.strip() == (
            "mailprov: HTTP 409: The domain is deleted; restore it first.")
        assert await mailprov("domain", "restore", "example.com", "--wait") == 0
        assert await mailprov("--json", "domain", "show", "example.com") == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["mailboxes"] == 5
        assert await mailprov("domain", "bulk-delete", "example.com", "--wait") == 0
        assert await mailprov("domain", "list", "--deleted", "only") == 0
        assert "example.com  deleted" in capsys.readouterr().out
