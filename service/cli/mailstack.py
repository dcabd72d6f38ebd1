"""`mailprov mailstack ...`: files the mail stack reads, generated from the database.

`mailstack dkim --out DIR` writes OpenDKIM's KeyTable, SigningTable, opendkim.conf and the
signing keys (service/core/opendkim.py). Run it after a domain is provisioned or its key
rotated (a cron line or a deploy hook), then `kill -USR1` OpenDKIM so it reloads.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from service.cli.admin import require_secret_key
from service.cli.common import CommandError, command, emit, group
from service.core import opendkim, secrets
from service.core.db import Database
from service.core.settings import Settings


def cmd_dkim(args: argparse.Namespace, settings: Settings) -> None:
    require_secret_key(settings)
    out = Path(args.out).resolve()

    async def keys() -> list[Any]:
        async with Database.opened(settings.database_url) as db:
            return await db.signing_keys()

    try:
        names = opendkim.write(out, asyncio.run(keys()), settings.secret_key, args.socket)
    except secrets.Unsealable:
        raise CommandError("a DKIM key was sealed under another MAILPROV_SECRET_KEY") from None
    except OSError as exc:
        raise CommandError(f"{out}: {exc.strerror}") from None
    # names only: the keys themselves go to the files and nowhere else
    emit(args, {"out": str(out), "signing": names},
         f"{len(names)} signing keys in {out}; point Postfix's milters at "
         f"{args.socket} and send OpenDKIM SIGUSR1 to reload")


def add_commands(sub: Any) -> None:
    stack = group(sub, "mailstack", "files the mail stack reads, from the database")
    dkim = command(stack, "dkim", cmd_dkim, "write OpenDKIM's KeyTable, SigningTable, "
                                            "opendkim.conf and key files")
    dkim.add_argument(
        "--out", required=True, metavar="DIR",
        help="where to write them (created; keys 0600 under DIR/keys, mode 0700)")
    dkim.add_argument("--socket", default=opendkim.DEFAULT_SOCKET,
                      help=f"OpenDKIM's milter socket (default {opendkim.DEFAULT_SOCKET})")
