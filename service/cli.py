"""`mailprov`: one entry point for every process type and for operators.

Every command prints a short human line, or one JSON document with `--json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

from service import apikeys
from service.db import Database, apply_schema
from service.logs import configure_logging
from service.settings import Settings

log = logging.getLogger("mailprov")


class CommandError(Exception):
    """A command could not do what was asked; the message says why."""


def emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data) if args.json else text)


async def _with_db(settings: Settings, work: Callable[[Database], Coroutine[Any, Any, Any]]) -> Any:
    db = await Database.connect(settings.database_url, min_size=1, max_size=2)
    try:
        return await work(db)
    finally:
        await db.close()


async def create_account(db: Database, name: str) -> tuple[int, str]:
    """A new account and its first API key (the plaintext exists only in the return value)."""
    async with db.transaction() as q:
        account_id = await q.fetchval("create_account", name)
        key = await _new_key(q, account_id)
    return account_id, key


async def _new_key(q: Any, account_id: int) -> str:
    key = apikeys.generate()
    await q.fetchval("create_api_key", account_id, apikeys.digest(key), apikeys.prefix(key))
    return key


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    asyncio.run(apply_schema(settings.database_url))
    emit(args, {"status": "migrated"}, "schema applied")


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    from aiohttp import web

    from service.app import create_app

    web.run_app(create_app(settings), host=settings.host, port=settings.port,
                access_log=None, loop=uvloop.new_event_loop(),
                print=lambda _: log.info("listening on %s:%s", settings.host, settings.port))


def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    if args.check:
        cmd_worker_check(args, settings)
    # supervised: a new worker replaces one that Redis or Postgres made stop
    from worker.supervisor import Supervisor

    uvloop.run(Supervisor(settings).run())


def cmd_worker_check(args: argparse.Namespace, settings: Settings) -> None:
    """Exit 0 when a worker on this host keeps its health key fresh, else 1: a probe."""
    from service import presence

    try:
        workers = asyncio.run(presence.probe(settings))
    except Exception as exc:  # Redis down: the probe fails, and says why
        workers = []
        print(f"mailprov: health check failed: Redis unreachable ({type(exc).__name__})",
              file=sys.stderr)
    emit(args, {"healthy": bool(workers), "workers": [w.id for w in workers]},
         "\n".join(f"{w.id} {w.health}" for w in workers) or "no live worker on this host")
    raise SystemExit(0 if workers else 1)


def cmd_dev(args: argparse.Namespace, settings: Settings) -> None:
    from pathlib import Path

    from service.dev import run

    asyncio.run(run(settings, Path(args.data_dir), args.local_pg, args.local_redis))


def cmd_account_create(args: argparse.Namespace, settings: Settings) -> None:
    account_id, key = asyncio.run(_with_db(settings, lambda db: create_account(db, args.name)))
    emit(args, {"user_id": account_id, "key": key},
         f"user_id: {account_id}\nkey:     {key}\n(the key is shown only this once)")


def cmd_key_create(args: argparse.Namespace, settings: Settings) -> None:
    async def work(db: Database) -> str:
        if not await db.fetchval("account_exists", args.user_id):
            raise CommandError(f"no account with user_id {args.user_id}")
        return await _new_key(db, args.user_id)

    key = asyncio.run(_with_db(settings, work))
    emit(args, {"user_id": args.user_id, "key": key},
         f"key: {key}\n(the key is shown only this once)")


def cmd_key_revoke(args: argparse.Namespace, settings: Settings) -> None:
    given = args.key_or_prefix
    whole = apikeys.digest(given) if apikeys.KEY_FORMAT.fullmatch(given) else ""
    short = apikeys.prefix(given) if len(given) >= apikeys.PREFIX_LENGTH else ""
    if not (whole or short):
        raise CommandError(f"give a whole key or its first {apikeys.PREFIX_LENGTH} characters")

    async def work(db: Database) -> list[Any]:
        found = [k for k in await db.fetch("find_keys", whole, short) if k["revoked_at"] is None]
        if len(found) > 1 and not whole:
            raise CommandError(f"{len(found)} keys start with {short}; give the whole key")
        return await db.fetch("revoke_keys", whole, "" if whole else short)

    revoked = asyncio.run(_with_db(settings, work))
    if not revoked:
        raise CommandError("no active key matches")
    emit(args, {"revoked": [{"prefix": r["prefix"], "user_id": r["account_id"]} for r in revoked]},
         "\n".join(f"revoked {r['prefix']}... of user_id {r['account_id']}" for r in revoked))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="mailprov", description=__doc__)
    top.add_argument("--json", action="store_true", help="print JSON, for scripts")
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply schema.sql (idempotent)").set_defaults(run=cmd_migrate)
    sub.add_parser("serve", help="run the web process on $PORT").set_defaults(run=cmd_serve)
    worker = sub.add_parser("worker", help="run a worker process")
    worker.add_argument("--check", action="store_true",
                        help="exit 0 if a worker on this host is healthy, else 1 (a probe)")
    worker.set_defaults(run=cmd_worker)
    dev = sub.add_parser("dev", help="run everything in one process, with embedded Postgres "
                                     "and Redis when none is configured or running")
    dev.add_argument("--data-dir", default=".mailprov",
                     help="where embedded servers keep their data (default ./.mailprov)")
    dev.add_argument("--local-pg", type=int, default=5432, metavar="PORT",
                     help="port to look for a local Postgres on before embedding one")
    dev.add_argument("--local-redis", type=int, default=6379, metavar="PORT",
                     help="port to look for a local Redis on before embedding one")
    dev.set_defaults(run=cmd_dev)

    account = sub.add_parser("account", help="manage accounts").add_subparsers(
        dest="action", required=True)
    create = account.add_parser("create", help="create an account and its first API key")
    create.add_argument("--name", required=True)
    create.set_defaults(run=cmd_account_create)

    key = sub.add_parser("key", help="manage API keys").add_subparsers(dest="action",
                                                                       required=True)
    key_create = key.add_parser("create", help="create another API key for an account")
    key_create.add_argument("--user-id", type=int, required=True)
    key_create.set_defaults(run=cmd_key_create)
    revoke = key.add_parser("revoke", help="revoke a key, given whole or by its prefix")
    revoke.add_argument("key_or_prefix")
    revoke.set_defaults(run=cmd_key_revoke)

    from service.client_cli import add_client_commands  # `create ...`, `task`: API client

    add_client_commands(sub)

    from service.ops_cli import add_ops_commands  # `queue`, `tasks`: for operators

    add_ops_commands(sub)
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_format)
    try:
        args.run(args, settings)
    except CommandError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        print(f"mailprov: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
