"""The README's API examples work exactly as written: every `curl` line of its API section is
run, in order, with the real curl, against a real web process on a port and the real
worker, and answers 2xx; together they call every route of the API.

The README's placeholders are filled as a reader would: `KEY` with the account's key,
`TASK_ID` with the task id the request before answered, `ALIAS_ID` with the id the last
`POST /aliases` answered; `1` is the account's user_id (the first account of a fresh
database).
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from pathlib import Path

from service.core.accounts import create_account
from service.web.routes import ROUTES
from tests.integration.test_client import serving, working

README = (Path(__file__).parents[2] / "README.md").read_text()
HOST = "http://127.0.0.1:8080"


def api_section() -> str:
    return README[README.index("## The API\n"):README.index("## Operating mailprov\n")]


def commands(block: str) -> list[str]:
    """A shell block's commands, without comments: split at newlines outside quotes and
    not escaped."""
    found, current, quote, comment = [], [], "", False
    for i, char in enumerate(block):
        if comment:
            comment = char != "\n"
            if comment:
                continue
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or block[i - 1] in " \n"):
            comment = True
            continue
        if char == "\n" and not quote and (i == 0 or block[i - 1] != "\\"):
            found.append("".join(current))
            current = []
            continue
        current.append(char)
    found.append("".join(current))
    return [c.replace("\\\n", " ").strip() for c in found if c.strip()]


def curls() -> list[list[str]]:
    """Every curl of the API section, as argv (comments dropped)."""
    blocks = re.findall(r"```sh\n(.*?)```", api_section(), re.S)
    argvs = [shlex.split(c) for b in blocks for c in commands(b)]
    return [argv for argv in argvs if argv and argv[0] == "curl"]


def request_of(argv: list[str]) -> tuple[str, str]:
    """(method, path) of a curl line."""
    method = argv[argv.index("-X") + 1] if "-X" in argv else "GET"
    url = next(a for a in argv if a.startswith(HOST))
    path = url.removeprefix(HOST).split("?")[0]
    return method, path.replace("TASK_ID", "1").replace("ALIAS_ID", "1")


def _pattern(path: str) -> re.Pattern[str]:
    """An aiohttp route path as a regular expression."""
    parts = re.split(r"(\{\w+(?::(?:[^{}]|\{[^{}]*\})*)?\})", path)
    return re.compile("".join(
        (f"(?:{p[1:-1].split(':', 1)[1]})" if ":" in p else "[^/]+") if p.startswith("{")
        else re.escape(p) for p in parts) + "$")


def test_the_examples_call_every_route_of_the_api():
    called = [request_of(argv) for argv in curls()]
    api_routes = [r for r in ROUTES if r.path.startswith("/api/v1/") and r.policy is not None]
    uncalled = [f"{r.method} {r.path}" for r in api_routes
                if not any(m == r.method and _pattern(r.path).match(p) for m, p in called)]
    assert uncalled == []


async def _settled(db) -> None:
    """Wait for the worker to finish every task (a reader waits for the task too)."""
    async with asyncio.timeout(60):
        while True:
            unfinished = await db.pool.fetchval(
                "SELECT count(*) FROM tasks WHERE status IN ('queued', 'processing')")
            if not unfinished:
                return
            await asyncio.sleep(0.05)  # the task is in Postgres; nothing to wait on but it


async def test_the_readme_examples_work_as_written(settings, db, run_worker):
    account_id, key = await create_account(db, "readme")
    assert account_id == 1
    task_id = alias_id = None
    ran = 0
    # the webhook example's host name resolves nowhere offline: with private addresses
    # allowed, registration does not resolve it (a delivery to it fails, and is retried)
    async with serving(settings.replace(webhook_allow_private=True)) as base, \
            working(run_worker):
        base = base.rstrip("/")
        for argv in curls():
            filled = []
            for arg in argv:
                arg = arg.replace(HOST, base).replace("KEY", key)
                if "TASK_ID" in arg:
                    assert task_id is not None, "TASK_ID before any task"
                    arg = arg.replace("TASK_ID", str(task_id))
                if "ALIAS_ID" in arg:
                    assert alias_id is not None, "ALIAS_ID before any alias"
                    arg = arg.replace("ALIAS_ID", str(alias_id))
                filled.append(arg)
            process = await asyncio.create_subprocess_exec(
                "curl", "-sS", "-w", "\n%{http_code}", *filled[1:],
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await process.communicate()
            assert process.returncode == 0, (argv, err.decode())
            text, _, status = out.decode().rpartition("\n")
            assert 200 <= int(status) < 300, (" ".join(argv), status, text)
            body = json.loads(text)
            if "task_id" in body and isinstance(body["task_id"], int):
                task_id = body["task_id"]
                if "id" in body:
                    alias_id = body["id"]
            ran += 1
            await _settled(db)
    assert ran == len(curls())
    failed = await db.pool.fetch("SELECT id, type, error FROM tasks WHERE status = 'failed'")
    assert failed == []
    # the walk-through's mailboxes all fit the domain made with the README's parameters
    created = await db.pool.fetchval(
        "SELECT count(*) FROM mailboxes m JOIN domains d ON d.id = m.domain_id "
        "WHERE d.name = 'example.com'")
    assert created == 1 + 25 + 2
