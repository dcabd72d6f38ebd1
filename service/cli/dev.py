"""`mailprov dev`: the whole system in one process, for a newcomer's first minutes.

It uses Postgres and Redis from `DATABASE_URL`/`REDIS_URL`, else servers answering at the
default local ports, else embedded servers whose data lives under `./.mailprov/`. It
applies the schema, makes a demo account on first run, and runs web and worker together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from service.cli.embedded import EmbeddedServers, port_open
from service.core import accounts
from service.core.db import Database
from service.core.migrate import apply_schema
from service.core.settings import Settings
from service.web.app import create_app
from service.web.server import Runner
from worker.main import create_worker

log = logging.getLogger("mailprov.dev")

DEMO_FILE = "demo-account.json"
SECRET_FILE = "secret-key"  # noqa: S105 - a file name


def choose_servers(settings: Settings, data_dir: Path, local_pg: int, local_redis: int,
                   env: dict[str, str]) -> tuple[Settings, EmbeddedServers | None]:
    """Settings pointing at servers that answer, starting embedded ones where needed."""
    pg = "DATABASE_URL" in env or port_open("127.0.0.1", local_pg)
    redis = "REDIS_URL" in env or port_open("127.0.0.1", local_redis)
    if "DATABASE_URL" not in env and pg:
        settings = settings.replace(
            database_url=f"postgresql://postgres@127.0.0.1:{local_pg}/mailprov")
    if "REDIS_URL" not in env and redis:
        settings = settings.replace(redis_url=f"redis://127.0.0.1:{local_redis}/0")
    if pg and redis:
        return settings, None
    servers = EmbeddedServers(data_dir)
    servers.start()
    if not pg:
        # our own database on the embedded server, not its maintenance database
        parts = urlsplit(servers.database_url)
        settings = settings.replace(database_url=urlunsplit(parts._replace(path="/mailprov")))
    if not redis:
        settings = settings.replace(redis_url=servers.redis_url)
    return settings, servers


async def demo_key(settings: Settings, data_dir: Path) -> tuple[int, str]:
    """The demo account's id and key, made on first run and kept in `data_dir`.

    The database keeps only the key's hash, so the plaintext is kept (mode 0600) in the
    local data directory; this is a development convenience, not how keys are handled.
    """
    path = data_dir / DEMO_FILE
    async with Database.opened(settings.database_url) as db:
        if path.exists():
            saved = json.loads(path.read_text())
            # a key that does not resolve belongs to another database: make a new one
            live = await db.resolve_key(key_hash=accounts.digest(saved["key"]))
            if live is not None and live["account_id"] == saved["user_id"]:
                return saved["user_id"], saved["key"]
        user_id, key = await accounts.create_account(db, "demo")
    _write_private(path, json.dumps({"user_id": user_id, "key": key}))
    return user_id, key


def secret_key(settings: Settings, data_dir: Path) -> Settings:
    """Settings with a MAILPROV_SECRET_KEY: the environment's, else the one made for
    `data_dir` on first run and kept there (mode 0600), so tasks queued before a restart
    can still be unsealed after it."""
    if settings.secret_key:
        return settings
    path = data_dir / SECRET_FILE
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(32))
    return settings.replace(secret_key=path.read_text().strip())


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(text)


def banner(url: str, user_id: int, key: str) -> str:
    body = json.dumps({"Domain": "example.com", "Params": {}, "key": key})
    return "\n".join([
        "",
        f"mailprov is running at {url}",
        f"  demo user_id: {user_id}",
        f"  demo API key: {key}",
        "",
        "Try it:",
        f"  curl -X POST {url}/api/v1/create/domain -H 'Content-Type: application/json' "
        f"-d '{body}'",
        f"  curl '{url}/api/v1/list/domain?key={key}&caller_id={user_id}'",
        "",
        "Press Ctrl-C to stop.",
        "",
    ])


async def run(settings: Settings, data_dir: Path, local_pg: int, local_redis: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    settings, servers = choose_servers(secret_key(settings, data_dir), data_dir, local_pg,
                                       local_redis, dict(os.environ))
    runner: web.AppRunner | None = None
    worker: Any = None
    try:
        await apply_schema(settings.database_url)
        user_id, key = await demo_key(settings, data_dir)
        runner = Runner(create_app(settings), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", settings.port).start()
        worker = create_worker(settings, handle_signals=False)
        working = asyncio.create_task(worker.main())
        print(banner(f"http://127.0.0.1:{settings.port}", user_id, key), flush=True)
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({working, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if working.done():
            working.result()  # the worker died: say why
        working.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await working
    finally:
        if worker is not None:
            await worker.close()
        if runner is not None:
            await runner.cleanup()
        if servers is not None:
            servers.stop()
        log.info("stopped")
