"""The process types and the administrator's commands: `migrate`, `serve`, `worker`, `dev`,
`account create`, `key create|list|revoke`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from service.cli.common import CommandError, command, emit, group
from service.core import accounts, dkim, dnscheck, names, secrets, webhooks
from service.core.db import Database
from service.core.errors import ApiError
from service.core.migrate import apply_schema
from service.core.oversight import parse_duration, when
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

    try:
        app = create_app(settings)
    except ValueError as exc:  # a setting that is not what it should be, named
        raise CommandError(str(exc)) from None
    uvloop.run(serve(app, settings.host, settings.port, lambda: log.info(
        "listening on %s:%s", settings.host, settings.port)))


def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    if args.check:
        cmd_worker_check(args, settings)
    require_secret_key(settings)
    # settings a job would trip on, named before the worker starts
    try:
        dkim.check_algorithm(settings.dkim_algorithm)
        dnscheck.check_resolver_setting(settings)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    # supervised: a new worker replaces one that Redis or Postgres made stop
    from worker.supervisor import Supervisor

    uvloop.run(Supervisor(settings).run())


def cmd_worker_check(args: argparse.Namespace, settings: Settings) -> None:
    """Exit 0 when the workers on this host keep their health keys fresh and their hashing
    pools hash, else 1: a probe."""
    from service.core import presence

    try:
        workers = asyncio.run(presence.probe(settings))
    except Exception as exc:  # Redis down: the probe fails, and says why
        workers = []
        print(f"mailprov: health check failed: Redis unreachable ({type(exc).__name__})",
              file=sys.stderr)
    healthy = bool(workers) and all(w.hashing == "ok" for w in workers)
    emit(args, {"healthy": healthy, "workers": [w.id for w in workers],
                "hashing": {w.id: w.hashing for w in workers}},
         "\n".join(f"{w.id} {w.health} hashing={w.hashing}" for w in workers)
         or "no live worker on this host")
    raise SystemExit(0 if healthy else 1)


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


def _scope(args: argparse.Namespace) -> accounts.Scope:
    """The power `key create` gives: --read-only, --domains, --expires."""
    domains = None
    if args.domains is not None:
        try:
            domains = frozenset(names.domain(d) for d in args.domains.split(",") if d.strip())
        except ValueError as exc:
            raise CommandError(f"--domains: {exc}") from None
        if not domains:
            raise CommandError("--domains: give at least one domain")
    expires_at = None
    if args.expires is not None:
        try:
            expires_at = datetime.now(UTC) + timedelta(seconds=parse_duration(args.expires))
        except ValueError as exc:
            raise CommandError(f"--expires: {exc}") from None
    return accounts.Scope(args.read_only, domains, expires_at)


def describe_scope(read_only: bool, domains: Iterable[str] | None) -> str:
    """`read-only`, `read-write`, with `on a.com, b.com` when limited to domains."""
    power = "read-only" if read_only else "read-write"
    return power if domains is None else f"{power} on {', '.join(sorted(domains))}"


def cmd_key_create(args: argparse.Namespace, settings: Settings) -> None:
    scope = _scope(args)
    key = _with_db(settings, lambda db: accounts.create_key(db, args.user_id, scope))
    expires = None if scope.expires_at is None else scope.expires_at.isoformat()
    emit(args, {"user_id": args.user_id, "key": key, "prefix": accounts.prefix(key),
                "read_only": scope.read_only,
                "domains": None if scope.domains is None else sorted(scope.domains),
                "expires_at": expires},
         f"key: {key}\n{describe_scope(scope.read_only, scope.domains)}, "
         f"{'expires ' + when(scope.expires_at) + ' UTC' if expires else 'no end date'}\n"
         "(the key is shown only this once)")


def cmd_key_list(args: argparse.Namespace, settings: Settings) -> None:
    rows = _with_db(settings, lambda db: accounts.list_keys(db, args.user_id))
    keys = [{"prefix": r["prefix"], "read_only": r["read_only"], "domains": r["domains"],
             "created_at": r["created_at"].isoformat(),
             "expires_at": r["expires_at"] and r["expires_at"].isoformat(),
             "last_used_at": r["last_used_at"] and r["last_used_at"].isoformat(),
             "revoked_at": r["revoked_at"] and r["revoked_at"].isoformat()} for r in rows]
    lines = [f"{'prefix':<10}  {'scope':<30}  {'expires':<19}  {'last used':<19}  state"]
    lines += [f"{r['prefix'] + '...':<10}  {describe_scope(r['read_only'], r['domains']):<30}  "
              f"{when(r['expires_at']):<19}  {when(r['last_used_at']):<19}  "
              f"{_state(r)}" for r in rows]
    emit(args, {"user_id": args.user_id, "keys": keys}, "\n".join(lines))


def _state(row: Any) -> str:
    if row["revoked_at"] is not None:
        return f"revoked {when(row['revoked_at'])}"
    if row["expires_at"] is not None and row["expires_at"] <= datetime.now(UTC):
        return "expired"
    return "live"


def cmd_key_revoke(args: argparse.Namespace, settings: Settings) -> None:
    revoked = _with_db(settings, lambda db: accounts.revoke_key(db, args.key_or_prefix))
    emit(args, {"revoked": [{"prefix": r["prefix"], "user_id": r["account_id"]} for r in revoked]},
         "\n".join(f"revoked {r['prefix']}... of user_id {r['account_id']}" for r in revoked))


async def _account_webhook(db: Database, settings: Settings, account_id: int,
                           url: str) -> webhooks.NewWebhook:
    await accounts.require_account(db, account_id)
    return await webhooks.register(db, settings.secret_key, account_id, url,
                                   settings.webhook_allow_private)


def cmd_webhook_add(args: argparse.Namespace, settings: Settings) -> None:
    require_secret_key(settings)
    try:
        new = _with_db(settings, lambda db: _account_webhook(db, settings, args.user_id,
                                                             args.url))
    except ApiError as exc:  # the URL refused, in the API's words
        raise CommandError(f"{args.url}: {exc.reason}") from None
    emit(args, {"id": new.id, "url": new.url, "secret": new.secret},
         f"webhook {new.id}: {new.url}\nsecret: {new.secret}\n(the secret is shown only "
         "this once; it signs every delivery)")


def cmd_webhook_list(args: argparse.Namespace, settings: Settings) -> None:
    rows = _with_db(settings, lambda db: db.list_webhooks(account_id=args.user_id))
    emit(args, {"user_id": args.user_id, "webhooks": [
        {"id": r["id"], "url": r["url"], "created_at": r["created_at"].isoformat()}
        for r in rows]},
        "\n".join(f"{r['id']:>6}  {r['url']}  (since {when(r['created_at'])})" for r in rows)
        or "no webhooks")


def cmd_webhook_remove(args: argparse.Namespace, settings: Settings) -> None:
    if not _with_db(settings, lambda db: db.delete_webhook(account_id=args.user_id,
                                                           webhook_id=args.id)):
        raise CommandError(f"user_id {args.user_id} has no webhook {args.id}")
    emit(args, {"removed": args.id}, f"removed webhook {args.id}")


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
    key_create.add_argument("--read-only", action="store_true",
                            help="the key can read, and is refused every write (403)")
    key_create.add_argument("--domains", metavar="A.COM,B.COM",
                            help="the key sees only these domains (the others are 404)")
    key_create.add_argument("--expires", metavar="DURATION",
                            help="the key stops working after this long: 90d, 12h, 1h30m")
    key_list = command(key, "list", cmd_key_list, "list an account's keys: prefix, scope, "
                                                  "expiry and last use (never the key)")
    key_list.add_argument("--user-id", type=int, required=True)
    revoke = command(key, "revoke", cmd_key_revoke, "revoke a key, given whole or by its prefix")
    revoke.add_argument("key_or_prefix")

    hook = group(sub, "webhook", "manage an account's webhook endpoints")
    hook_add = command(hook, "add", cmd_webhook_add,
                       "register an endpoint told of every finished task; prints its secret")
    hook_add.add_argument("--user-id", type=int, required=True)
    hook_add.add_argument("url")
    hook_list = command(hook, "list", cmd_webhook_list, "list an account's endpoints")
    hook_list.add_argument("--user-id", type=int, required=True)
    hook_remove = command(hook, "remove", cmd_webhook_remove, "remove an endpoint")
    hook_remove.add_argument("--user-id", type=int, required=True)
    hook_remove.add_argument("id", type=int)
