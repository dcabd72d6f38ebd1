"""The mail stack scenario: how soon a mailbox made by POST is usable.

A real Postfix and Dovecot (tests/integration/mailservers.py, configured by `mailprov
mailstack config`) read the bench's database; mailprov's web and worker run as processes.
For each try, one `POST /mailboxes` with a supplied password, and at once, side by side:
an IMAP login tried again and again until it works, and an SMTP RCPT to the new address
tried until Postfix accepts it, then the message sent and waited for in the mailbox's
Maildir. Times
are counted from the moment a client polling the task every 5 ms sees it completed: a
negative figure means the mailbox worked before the client could know it was there.
"""

from __future__ import annotations

import asyncio
import imaplib
import shutil
import smtplib
import tempfile
import time
from pathlib import Path

from bench.load import percentile
from bench.scenarios import Context, Row, database, ms, provision_domain
from tests.integration.mailservers import MailServers

DOMAIN = "mail.bench.test"
PASSWORD = "bench-mailbox-password"  # noqa: S105 - a throwaway mailbox's


def _login_when_ready(port: int, user: str, give_up: float) -> tuple[float, imaplib.IMAP4]:
    """Log in as soon as Dovecot lets us; when, and the session."""
    while time.time() < give_up:
        imap = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        try:
            imap.login(user, PASSWORD)
            return time.time(), imap
        except imaplib.IMAP4.error:
            imap.shutdown()
        time.sleep(0.002)
    raise RuntimeError(f"{user} never logged in")


def _deliver_when_ready(port: int, user: str, give_up: float) -> float:
    """Send to `user` as soon as Postfix accepts the address; when it accepted the message."""
    while time.time() < give_up:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.ehlo()
            smtp.mail("bench@outside.example")
            code, _ = smtp.rcpt(user)
            if code == 250:
                smtp.data(f"Subject: bench\r\nTo: {user}\r\n\r\nhello\r\n")
                return time.time()
            smtp.rset()
        time.sleep(0.002)
    raise RuntimeError(f"Postfix never accepted {user}")


def _delivered(vmail: Path) -> int:
    """How many messages Dovecot has delivered under `vmail`, every mailbox together."""
    return sum(1 for _ in vmail.glob("*/Maildir/new/*"))


def _arrival(vmail: Path, before: int, give_up: float) -> float:
    """When Dovecot has delivered one more message than `before`: the file is in the
    mailbox's Maildir (what IMAP would show next), seen without a login in between."""
    while time.time() < give_up:
        if _delivered(vmail) > before:
            return time.time()
        time.sleep(0.002)
    raise RuntimeError("the message never arrived")


async def mailstack(ctx: Context) -> list[Row]:
    tries = 3 if ctx.sizes.rounds == 1 else 30  # --quick: a smoke test
    servers = MailServers(Path(tempfile.mkdtemp(prefix="mailprov-bench-mail-")), "")
    t = await ctx.stack.target("mailstack", MAILPROV_DOVEADM_URL=servers.doveadm_url,
                               MAILPROV_DOVEADM_KEY=servers.doveadm_key)
    servers.database_url = t.database_url
    vmail = servers.directory / "vmail"
    logins, deliveries, transits = [], [], []
    try:
        await servers.start()
        await t.start_web()
        await t.start_worker()
        async with database(t) as conn:
            await provision_domain(ctx, t, conn, DOMAIN)
            bearer = {"Authorization": f"Bearer {t.key}"}
            for n in range(tries):
                user = f"u{n}@{DOMAIN}"
                give_up = time.time() + 30
                async with ctx.session.post(t.api("mailboxes"), headers=bearer, json={
                        "domain": DOMAIN, "local_part": f"u{n}", "password": PASSWORD}) as r:
                    body = await r.json()
                    if r.status != 202:
                        raise RuntimeError(f"POST /mailboxes: {r.status} {body}")
                before = _delivered(vmail)
                login = asyncio.to_thread(_login_when_ready, servers.imap_port, user, give_up)
                sent = asyncio.to_thread(_deliver_when_ready, servers.smtp_port, user, give_up)
                (logged_in, imap), accepted, finished = await asyncio.gather(
                    login, sent, _completed(ctx, t.api(f"tasks/{body['task_id']}"), bearer))
                await asyncio.to_thread(imap.logout)
                arrived = await asyncio.to_thread(_arrival, vmail, before, give_up)
                logins.append(logged_in - finished)
                deliveries.append(arrived - finished)
                transits.append(arrived - accepted)
    finally:
        await t.stop_all()
        await servers.stop()
        shutil.rmtree(servers.directory, ignore_errors=True)

    def spread(values: list[float]) -> str:
        return (f"p50 {ms(1000 * percentile(values, 50))}, "
                f"p95 {ms(1000 * percentile(values, 95))}")

    what = f"{tries} POST /mailboxes one after another, Postfix and Dovecot on loopback"
    return [
        Row("mailstack", "mailstack, login: task seen completed → first IMAP login that "
                         f"works, {what}",
            figure=spread(logins), rounds=f"max {ms(1000 * max(logins))}"),
        Row("mailstack", "mailstack, delivery: task seen completed → message in the Maildir (RCPT "
                         f"tried until accepted), {what}",
            figure=spread(deliveries),
            rounds=f"SMTP accepted → in the Maildir {spread(transits)}"),
    ]


async def _completed(ctx: Context, url: str, bearer: dict[str, str]) -> float:
    """When a client polling the task every 5 ms first sees it completed. (The task's
    `finished_at` is its transaction's start, before the mailbox's hash is made.)"""
    while True:
        async with ctx.session.get(url, headers=bearer) as r:
            body = await r.json()
        if body.get("status") == "completed":
            return time.time()
        if body.get("status") == "failed":
            raise RuntimeError(f"task failed: {body}")
        await asyncio.sleep(0.005)


MAILSTACK = {"mailstack": mailstack}
