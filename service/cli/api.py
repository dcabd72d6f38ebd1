"""`mailprov create ...` and `mailprov task ...`: the API client (service/client.py) as
commands, for operators and shell scripts.

The API's URL and key come from `--url`/`--key` or `MAILPROV_URL`/`MAILPROV_KEY`. With
`--json` each command prints one JSON document on stdout. Exit codes: 0 done,
1 the task failed or the API answered an error (the message goes to stderr), 2 misuse.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TextIO

import aiohttp

from service.cli.common import command, emit
from service.client import ApiError, MailprovClient, MailprovError, TaskFailed

DEFAULT_URL = "http://127.0.0.1:8080"

Submit = Callable[[MailprovClient], Awaitable[int]]


class ProgressBar:
    """A task's progress on `stream`: one bar redrawn in place on a terminal, one line per
    change otherwise (a log file or a pipe should not fill with carriage returns)."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.drawn = False

    def update(self, done: int, total: int) -> None:
        if self.tty:
            filled = self.WIDTH * done // total if total else self.WIDTH
            percent = 100 * done // total if total else 100
            bar = "#" * filled + "." * (self.WIDTH - filled)
            self.stream.write(f"\r[{bar}] {done}/{total} {percent:3d}%")
            self.drawn = True
        else:
            self.stream.write(f"progress: {done}/{total}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def summary(results: dict[str, Any]) -> dict[str, int]:
    """How many items ended with each result status, most frequent first."""
    return dict(Counter(item.get("status") for item in results.values()).most_common())


def _hide_passwords(task: dict[str, Any], show: bool) -> tuple[dict[str, Any], int]:
    """The task with its generated passwords left out unless `show`; how many were hidden."""
    if show:
        return task, 0
    results = task.get("results") or {}
    hidden = sum(1 for item in results.values() if item.get("password"))
    shown = {name: {k: v for k, v in item.items() if k != "password"}
             for name, item in results.items()}
    return {**task, "results": shown}, hidden


def _report(args: argparse.Namespace, task: dict[str, Any], status: str) -> tuple[dict[str, Any],
                                                                                  list[str]]:
    """The JSON document and the text lines that describe a task."""
    shown, hidden = _hide_passwords(task, getattr(args, "show_passwords", False))
    counts = summary(shown.get("results") or {})
    data = {"task_id": int(task["Task_id"]), "status": status, "summary": counts, "task": shown}
    head = f"task {task['Task_id']}"
    if "type" in task:
        head += f" ({task['type']}, {task['domain']})"
    head += f": {status}"
    if "progress" in task:
        head += f" {task['progress']['done']}/{task['progress']['total']}"
    lines = [head]
    if counts:
        lines.append(", ".join(f"{name}: {n}" for name, n in counts.items()))
    if hidden:
        lines.append(f"({hidden} generated passwords not shown; --show-passwords prints them)")
    lines += [f"{name}  {item['password']}" for name, item in shown["results"].items()
              if item.get("password")]
    return data, lines


def _fail(args: argparse.Namespace, message: str, data: dict[str, Any],
          lines: list[str] | None = None) -> NoReturn:
    if args.json:
        print(json.dumps({"error": message, **data}))
    elif lines:
        print("\n".join(lines))
    print(f"mailprov: {message}", file=sys.stderr)
    raise SystemExit(1)


def _client(args: argparse.Namespace) -> MailprovClient:
    key = args.key or os.environ.get("MAILPROV_KEY", "")
    if not key:
        args.usage_error("no API key: give --key or set MAILPROV_KEY")
    return MailprovClient(args.url or os.environ.get("MAILPROV_URL") or DEFAULT_URL, key)


def _call(args: argparse.Namespace, work: Callable[[MailprovClient], Awaitable[Any]]) -> Any:
    """Run `work` with a client; turn what can go wrong into a message and exit code 1."""
    api = _client(args)

    async def run() -> Any:
        async with api:
            return await work(api)

    try:
        return asyncio.run(run())
    except TaskFailed as exc:
        data, lines = _report(args, exc.body, "failed")
        _fail(args, str(exc), {**data, "reason": exc.reason}, lines[1:])
    except ApiError as exc:
        _fail(args, str(exc), {"http_status": exc.status, "reason": exc.reason,
                               "errors": exc.errors})
    except MailprovError as exc:
        _fail(args, str(exc), {})
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        # no URL in the message: a GET's URL holds the key
        _fail(args, f"cannot reach the API at {api.base_url}: {type(exc).__name__} {exc}", {})


def _create(args: argparse.Namespace, submit: Submit, progress: bool = False) -> None:
    async def work(api: MailprovClient) -> tuple[int, dict[str, Any] | None]:
        task_id = await submit(api)
        if not args.wait:
            return task_id, None
        bar = ProgressBar(sys.stderr) if progress else None
        try:
            return task_id, await api.wait(task_id, timeout=args.timeout,
                                           on_progress=bar.update if bar else None)
        finally:
            if bar:
                bar.close()

    task_id, task = _call(args, work)
    if task is None:
        emit(args, {"task_id": task_id, "status": "queued"},
             f"task {task_id} queued; `mailprov task {task_id}` shows it")
    else:
        data, lines = _report(args, task, "completed")
        emit(args, data, "\n".join(lines))


def _password(args: argparse.Namespace) -> str | None:
    # `-` reads it from stdin, so it stays out of the shell history and the process list
    if args.password == "-":  # noqa: S105 - the stdin marker, not a password
        return sys.stdin.readline().rstrip("\r\n")
    return args.password


def cmd_create_domain(args: argparse.Namespace, settings: Any) -> None:
    _create(args, lambda api: api.create_domain(
        args.domain, quota_mb=args.quota_mb, max_mailboxes=args.max_mailboxes,
        default_mailbox_quota_mb=args.default_mailbox_quota_mb, description=args.description))


def cmd_create_mailbox(args: argparse.Namespace, settings: Any) -> None:
    if args.domain is None and "@" not in args.address:
        args.usage_error("give a full address (john@example.com) or --domain")
    password = _password(args)
    _create(args, lambda api: api.create_mailbox(
        args.address, args.domain, display_name=args.display_name, quota_mb=args.quota_mb,
        password=password))


def cmd_create_mailboxes(args: argparse.Namespace, settings: Any) -> None:
    password = _password(args)
    _create(args, lambda api: api.create_mailboxes(
        args.domain, prefix=args.prefix, count=args.count, start=args.start,
        display_name=args.display_name, quota_mb=args.quota_mb, password=password),
        progress=True)


def cmd_task(args: argparse.Namespace, settings: Any) -> None:
    task = _call(args, lambda api: api.task(args.task_id))
    data, lines = _report(args, task, task["status"])
    emit(args, data, "\n".join(lines))


def add_commands(subparsers: Any) -> None:
    """Register `create domain|mailbox|mailboxes` and `task` on mailprov's subparsers."""
    api = argparse.ArgumentParser(add_help=False)
    api.add_argument("--url", help=f"API base URL (default $MAILPROV_URL, else {DEFAULT_URL})")
    api.add_argument("--key", help="API key (default $MAILPROV_KEY, which keeps it out of "
                                   "the process list)")
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--wait", action="store_true",
                         help="poll the task until it is done and print its results")
    waiting.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                         help="how long --wait waits (default 600)")
    reveal = argparse.ArgumentParser(add_help=False)
    reveal.add_argument("--show-passwords", action="store_true",
                         help="print generated passwords (hidden by default)")
    mailbox = argparse.ArgumentParser(add_help=False)
    mailbox.add_argument("--display-name")
    mailbox.add_argument("--quota-mb", type=int)
    mailbox.add_argument("--password", help="a password (`-` reads it from stdin); "
                                            "default: one is generated")

    create = subparsers.add_parser("create", help="create through the API (as a client)")
    kinds = create.add_subparsers(dest="what", required=True)

    domain = command(kinds, "domain", cmd_create_domain, "create a domain", [api, waiting])
    domain.add_argument("domain")
    domain.add_argument("--quota-mb", type=int, help="the domain's total (default 10240)")
    domain.add_argument("--max-mailboxes", type=int, help="default 100")
    domain.add_argument("--default-mailbox-quota-mb", type=int, help="default 1024")
    domain.add_argument("--description")

    one = command(kinds, "mailbox", cmd_create_mailbox, "create one mailbox",
                  [api, waiting, reveal, mailbox])
    one.add_argument("address", help="john@example.com, or john with --domain")
    one.add_argument("--domain")

    many = command(kinds, "mailboxes", cmd_create_mailboxes,
                   "create PREFIX1..PREFIXn; --wait shows progress on stderr",
                   [api, waiting, reveal, mailbox])
    many.add_argument("--domain", required=True)
    many.add_argument("--prefix", required=True)
    many.add_argument("--count", type=int, required=True)
    many.add_argument("--start", type=int, default=1, help="the first number (default 1)")

    task = command(subparsers, "task", cmd_task, "show a task", [api, reveal])
    task.add_argument("task_id", type=int)
