"""`mailprov mailstack ...`: the files the mail stack reads, generated for this
installation's database.

`mailstack config --out DIR` writes the Postfix and Dovecot files (service/core/mailstack.py),
to install as the README says. `mailstack dkim --out DIR` writes OpenDKIM's KeyTable,
SigningTable, opendkim.conf and the signing keys (service/core/opendkim.py): run it after a
domain is provisioned or its key rotated (a cron line or a deploy hook), then `kill -USR1`
OpenDKIM so it reloads.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from service.cli.admin import require_secret_key
from service.cli.common import CommandError, command, emit, group
from service.core import mailstack, opendkim, secrets
from service.core.db import Database
from service.core.settings import Settings


def _doveadm_port(settings: Settings) -> int:
    """The port of MAILPROV_DOVEADM_URL, where the worker will call doveadm; 0 if unset."""
    if not settings.doveadm_url:
        return 0
    try:
        return urlsplit(settings.doveadm_url).port or 80
    except ValueError:
        raise CommandError(f"MAILPROV_DOVEADM_URL={settings.doveadm_url!r} has no valid "
                           "port") from None


def cmd_config(args: argparse.Namespace, settings: Settings) -> None:
    doveadm_port = args.doveadm_port if args.doveadm_port is not None else _doveadm_port(settings)
    site = mailstack.Site(
        database_url=settings.database_url, postfix_dir=args.postfix_dir,
        dovecot_dir=args.dovecot_dir, vmail_root=args.vmail_root.rstrip("/"),
        vmail_uid=args.vmail_uid, vmail_gid=args.vmail_gid, smtp_listen=args.smtp_listen,
        imap_address=args.imap_address, imap_port=args.imap_port, imaps_port=args.imaps_port,
        lmtp_port=args.lmtp_port, postfix_queue_dir=args.postfix_queue_dir,
        tls_cert=args.tls_cert, tls_key=args.tls_key, doveadm_port=doveadm_port,
        doveadm_key=args.doveadm_key or settings.doveadm_key, base_dir=args.base_dir,
        log_path=args.log_path, dkim_milter=args.dkim_milter)
    try:
        written = mailstack.write(site, args.out)
    except (ValueError, OSError) as exc:
        raise CommandError(str(exc)) from None
    emit(args, {"written": [str(p) for p in written]},
         "\n".join(str(p) for p in written)
         + ("" if doveadm_port else "\nno doveadm listener: set MAILPROV_DOVEADM_URL and "
            "MAILPROV_DOVEADM_KEY so that changes end open IMAP sessions"))


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
    config = command(stack, "config", cmd_config, "write Postfix and Dovecot files for "
                     "$DATABASE_URL (README, \"Mail stack\")")
    d = mailstack.Site(database_url="")
    config.add_argument("--out", type=Path, required=True,
                        help="directory to write postfix/ and dovecot/ into")
    for flag, default, text in (
            ("--postfix-dir", d.postfix_dir, "where the postfix/ files will live"),
            ("--dovecot-dir", d.dovecot_dir, "where the dovecot/ files will live"),
            ("--vmail-root", d.vmail_root, "the mailboxes' homes are under it"),
            ("--smtp-listen", d.smtp_listen, "smtpd's master.cf service: smtp or host:port"),
            ("--imap-address", d.imap_address, "Dovecot's IMAP listen address"),
            ("--postfix-queue-dir", d.postfix_queue_dir,
             "Postfix's queue directory (for the LMTP socket)"),
            ("--tls-cert", d.tls_cert, "PEM certificate for smtpd and Dovecot"),
            ("--tls-key", d.tls_key, "its private key"),
            ("--doveadm-key", "", "doveadm HTTP API key (default: $MAILPROV_DOVEADM_KEY)"),
            ("--base-dir", d.base_dir, "dovecot.conf's base_dir (a Dovecot of its own)"),
            ("--log-path", d.log_path, "dovecot.conf's log_path (a Dovecot of its own)"),
            ("--dkim-milter", d.dkim_milter, "the DKIM signer's milter, e.g. "
             "inet:127.0.0.1:8891 (`mailstack dkim`); empty: mail leaves unsigned")):
        config.add_argument(flag, default=default, help=f"{text} (default: {default!r})")
    for flag, number, text in (
            ("--vmail-uid", d.vmail_uid, "owner of every mailbox's files"),
            ("--vmail-gid", d.vmail_gid, "their group"),
            ("--imap-port", d.imap_port, "IMAP (STARTTLS with TLS files)"),
            ("--imaps-port", d.imaps_port, "IMAP over TLS, with TLS files"),
            ("--lmtp-port", d.lmtp_port, "0: Postfix delivers on a socket in its queue "
             "directory; else on 127.0.0.1:PORT")):
        config.add_argument(flag, type=int, default=number, help=f"{text} (default: {number})")
    config.add_argument("--doveadm-port", type=int, default=None,
                        help="doveadm HTTP port on 127.0.0.1 (default: the port of "
                             "$MAILPROV_DOVEADM_URL; 0: none)")
    dkim = command(stack, "dkim", cmd_dkim, "write OpenDKIM's KeyTable, SigningTable, "
                                            "opendkim.conf and key files")
    dkim.add_argument(
        "--out", required=True, metavar="DIR",
        help="where to write them (created; keys 0600 under DIR/keys, mode 0700)")
    dkim.add_argument("--socket", default=opendkim.DEFAULT_SOCKET,
                      help=f"OpenDKIM's milter socket (default {opendkim.DEFAULT_SOCKET})")
