"""Operator commands: `mailprov queue [--watch]` and `mailprov tasks list|show|retry`.

They read what the `/ops` page reads (service/core/oversight.py) and print it for a
terminal, or as JSON with `--json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis

from service.cli.common import CommandError, command, emit, group
from service.core import oversight
from service.core.db import Database
from service.core.oversight import age, when
from service.core.redisconn import redis_settings
from service.core.settings import Settings
from service.core.tasks import STATUSES

Work = Callable[[Database, ArqRedis], Coroutine[Any, Any, Any]]


async def _with_backends(settings: Settings, work: Work) -> Any:
    async with Database.opened(settings.database_url) as db:
        arq = await create_pool(redis_settings(settings.redis_url, conn_timeout=2,
                                               conn_retries=0),
                                default_queue_name=settings.queue_name)
        try:
            return await work(db, arq)
        finally:
            await arq.aclose()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def render_summary(now: oversight.QueueSummary) -> str:
    workers = "\n".join(f"  {w.id}  {w.health}" for w in now.workers)
    return "\n".join([
        f"jobs in queue   {now.depth}  ({now.deferred} deferred: retries in their backoff)",
        f"queued          {now.queued}  (oldest waiting {age(now.oldest_queued_age_s)})",
        f"processing      {now.processing}",
        f"workers alive   {len(now.workers)}" + (f"\n{workers}" if workers else ""),
        f"last hour       {now.completed_last_hour} completed, {now.failed_last_hour} failed",
        f"failed tasks    {now.failed} not retried",
    ])


def cmd_queue(args: argparse.Namespace, settings: Settings) -> None:
    async def work(db: Database, arq: ArqRedis) -> None:
        while True:
            now = await oversight.summary(db, arq, settings)
            if args.json:
                print(json.dumps(_jsonable(now.as_dict())), flush=True)
            else:
                if args.watch and sys.stdout.isatty():
                    print("\x1b[H\x1b[2J", end="")  # clear the screen, cursor home
                if args.watch:
                    print(f"mailprov queue at {when(datetime.now(UTC))} UTC "
                          f"(every {args.interval:g} s; Ctrl-C stops)\n")
                print(render_summary(now), flush=True)
            if not args.watch:
                return
            await asyncio.sleep(args.interval)

    asyncio.run(_with_backends(settings, work))


def _duration(text: str) -> int:
    try:
        return oversight.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_tasks_list(args: argparse.Namespace, settings: Settings) -> None:
    async def work() -> list[dict[str, Any]]:
        # Postgres only: the list works while Redis is down
        async with Database.opened(settings.database_url, size=1) as db:
            return await oversight.list_tasks(db, status=args.status, since_s=args.since,
                                              account_id=args.account, limit=args.limit)

    tasks = asyncio.run(work())
    lines = [f"{'task':>14}  {'status':<10} {'type':<14} {'account':>7}  {'tries':>5}  "
             f"{'last change (UTC)':<19}  domain / reason"]
    lines += [f"{t['id']:>14}  {t['status']:<10} {t['type']:<14} {t['account_id']:>7}  "
              f"{t['attempts']:>5}  {when(t['updated_at']):<19}  {t['domain']}"
              + (f"  {t['error']}" if t["error"] else "") for t in tasks]
    emit(args, {"tasks": _jsonable(tasks)}, "\n".join(lines) if tasks else "no tasks")


def cmd_tasks_show(args: argparse.Namespace, settings: Settings) -> None:
    async def work(db: Database, arq: ArqRedis) -> dict[str, Any] | None:
        return await oversight.task_detail(db, arq, settings, args.task_id)

    task = asyncio.run(_with_backends(settings, work))
    if task is None:
        raise CommandError(f"no task {args.task_id}")
    facts = [("task", task["id"]), ("status", task["status"]), ("type", task["type"]),
             ("account", task["account_id"]), ("domain", task["domain"]),
             ("reason", task["error"] or "-"),
             ("progress", f"{task['progress_done']} / {task['progress_total']}"),
             ("attempts", task["attempts"]), ("job in queue", "yes" if task["in_queue"] else "no"),
             ("created", when(task["created_at"])), ("started", when(task["started_at"])),
             ("finished", when(task["finished_at"])), ("waited", age(task["waited_s"])),
             ("ran", age(task["ran_s"]))]
    lines = [f"{k:<13} {v}" for k, v in facts]
    lines.append(f"items ({len(task['results'])}):")
    lines += [f"  {name}: {item['status']}" + (" (password generated)"
                                                if item.get("generated") else "")
              for name, item in task["results"].items()]
    lines.append("payload (password hashes hidden):")
    lines.append(json.dumps(task["payload"], indent=2, ensure_ascii=False))
    emit(args, _jsonable(task), "\n".join(lines))


def cmd_tasks_retry(args: argparse.Namespace, settings: Settings) -> None:
    async def work(db: Database, arq: ArqRedis) -> bool:
        try:
            return await oversight.retry_task(db, arq, args.task_id)
        except oversight.RetryRefused as exc:
            raise CommandError(str(exc)) from None

    enqueued = asyncio.run(_with_backends(settings, work))
    text = (f"task {args.task_id} is queued again" if enqueued else
            f"task {args.task_id} is queued again in Postgres; Redis did not answer, so the "
            "sweeper will enqueue it")
    emit(args, {"task_id": args.task_id, "status": "queued", "enqueued": enqueued}, text)


def add_commands(sub: Any) -> None:
    """Add `queue` and `tasks` to the `mailprov` command's subparsers."""
    queue = command(sub, "queue", cmd_queue, "the queue at a glance: depth, workers, failures")
    queue.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    queue.add_argument("--interval", type=float, default=2.0, metavar="SECONDS",
                       help="how often --watch refreshes (default 2)")

    tasks = group(sub, "tasks", "list, show and retry tasks")
    listing = command(tasks, "list", cmd_tasks_list, "the latest tasks, newest first")
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--since", type=_duration, metavar="DURATION",
                         help="changed within this long: 90s, 30m, 1h, 2d")
    listing.add_argument("--account", type=int, metavar="USER_ID")
    listing.add_argument("--limit", type=int, default=50)
    show = command(tasks, "show", cmd_tasks_show, "one task: items, attempts, timings, payload")
    show.add_argument("task_id", type=int)
    retry = command(tasks, "retry", cmd_tasks_retry,
                    "run a failed task again (jobs are idempotent)")
    retry.add_argument("task_id", type=int)
