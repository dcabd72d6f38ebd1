"""The process types and the administrator's commands: `migrate`, `serve`, `worker`, `dev`,
`account create`, `key create|revoke`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from service.cli.common import CommandError, command, emit, group
from service.core import accounts, secrets
from service.core.db import Database
from service.core.migrate import apply_schema
from service.core.settings import Settings

log = logging.getLogger("mailprov")

T = TypeVar("T")


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    asyncio.run(apply_schema(settings.database_url))
    emit(args, {"status": "migrated"}, "schema applied")


def require_secret_key(settings: Settings) -> None:
    """Refuse to start a process that would seal or fingerprint without a usable key."""
    try:
        secrets.check_secret_key(settings.secret_key)
    except secrets.SecretKeyMissing as exc:
        raise CommandError(str(exc)) from None


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    require_secret_key(settings)
    from service.web.app import create_app
    from service.web.server import serve

    uvloop.run(serve(create_app(settings), settings.host, settings.port, lambda: log.info(
        "listening on %s:%s", settings.host, settings.port)))


def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    if args.check:
        cmd_worker_check(args, settings)
    require_secret_key(settings)
    # supervised: a new worker replaces one that Redis or Postgres made stop
    from worker.supervisor import Supervisor

    uvloop.run(Supervisor(settings).run())


def cmd_worker_check(args: argparse.Namespace, settings: Settings) -> None:
    """Exit 0 when a worker on this host keeps its health key fresh, else 1: a probe."""
    from service.core import presence

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
    from service.cli.dev import run

    asyncio.run(run(settings, Path(args.data_dir), args.local_pg, args.local_redis))


def _with_db(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run `work` on a database of its own; what it cannot find is the command's error."""
    async def run() -> T:
        async with Database.opened(settings.database_url) as db:
            return await work(db)

    try:
        return asyncio.run(run())
    except LookupError as exc:  # accounts.NoSuchAccount, accounts.KeyNotRevoked
        raise CommandError(str(exc)) from None


def cmd_account_create(args: argparse.Namespace, settings: Settings) -> None:
    account_id, key = _with_db(settings, lambda db: accounts.create_account(db, args.name))
    emit(args, {"user_id": account_id, "key": key},
         f"user_id: {account_id}\nkey:     {key}\n(the key is shown only this once)")


def cmd_key_create(args: argparse.Namespace, settings: Settings) -> None:
    key = _with_db(settings, lambda db: accounts.create_key(db, args.user_id))
    emit(args, {"user_id": args.user_id, "key": key},
         f"key: {key}\n(the key is shown only this once)")


def cmd_key_revoke(args: argparse.Namespace, settings: Settings) -> None:
    revoked = _with_db(settings, lambda db: accounts.revoke_key(db, args.key_or_prefix))
    emit(args, {"revoked": [{"prefix": r["prefix"], "user_id": r["account_id"]} for r in revoked]},
         "\n".join(f"revoked {r['prefix']}... of user_id {r['account_id']}" for r in revoked))


def add_commands(sub: Any) -> None:
    command(sub, "migrate", cmd_migrate, "apply schema.sql (idempotent)")
    command(sub, "serve", cmd_serve, "run the web process on $PORT")
    worker = command(sub, "worker", cmd_worker, "run a worker process")
    worker.add_argument("--check", action="store_true",
                        help="exit 0 if a worker on this host is healthy, else 1 (a probe)")
    dev = command(sub, "dev", cmd_dev, "run everything in one process, with embedded "
                                       "Postgres and Redis when none is configured or running")
    dev.add_argument("--data-dir", default=".mailprov",
                     help="where embedded servers keep their data (default ./.mailprov)")
    dev.add_argument("--local-pg", type=int, default=5432, metavar="PORT",
                     help="port to look for a local Postgres on before embedding one")
    dev.add_argument("--local-redis", type=int, default=6379, metavar="PORT",
                     help="port to look for a local Redis on before embedding one")

    account = group(sub, "account", "manage accounts")
    create = command(account, "create", cmd_account_create,
                     "create an account and its first API key")
    create.add_argument("--name", required=True)

    key = group(sub, "key", "manage API keys")
    key_create = command(key, "create", cmd_key_create, "create another API key for an account")
    key_create.add_argument("--user-id", type=int, required=True)
    revoke = command(key, "revoke", cmd_key_revoke, "revoke a key, given whole or by its prefix")
    revoke.add_argument("key_or_prefix")
