"""A mailbox made by POST is a mailbox: a real Postfix and a real Dovecot, configured by
`mailprov mailstack config` (tests/integration/mailservers.py), serve what the API made,
and stop serving what it takes away.

Everything is done through the API and checked over SMTP and IMAP, as a mail client
sees it. The one deadline (an open session ends within 2 s of its task completing) is a
behaviour check with room to spare: the kick is sent before the task's job returns.
"""

from __future__ import annotations

import asyncio
import imaplib
import re
import smtplib
import uuid
from functools import partial
from typing import Any

import pytest

from tests.integration import mailservers
from tests.integration.harness import until
from worker import kicks

# a session ended by a kick is closed by then: a generous bound, the bench has the figures
SESSION_END_S = 2.0
DELIVERY_WAIT_S = 15.0


@pytest.fixture
async def stack(settings):
    async with mailservers.running(settings.database_url) as servers:
        yield servers


def _login(port: int, user: str, password: str) -> imaplib.IMAP4:
    imap = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    try:
        imap.login(user, password)
    except BaseException:
        imap.shutdown()
        raise
    return imap


async def login(stack: mailservers.MailServers, user: str, password: str) -> imaplib.IMAP4:
    return await asyncio.to_thread(_login, stack.imap_port, user, password)


async def refused(stack: mailservers.MailServers, user: str, password: str) -> bool:
    try:
        imap = await login(stack, user, password)
    except imaplib.IMAP4.error:
        return True
    await asyncio.to_thread(imap.logout)
    return False


def _subjects(port: int, user: str, password: str) -> list[str]:
    imap = _login(port, user, password)
    try:
        imap.select("INBOX", readonly=True)
        _, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        return [part[1].decode().split(":", 1)[1].strip() for part in data
                if isinstance(part, tuple)]
    except imaplib.IMAP4.error:
        return []  # an empty INBOX: "1:*" names no message
    finally:
        imap.logout()


async def inbox(stack: mailservers.MailServers, user: str, password: str) -> list[str]:
    return await asyncio.to_thread(_subjects, stack.imap_port, user, password)


def _send(port: int, recipient: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail("sender@outside.example", [recipient],
                      f"From: sender@outside.example\r\nTo: {recipient}\r\n"
                      f"Subject: {subject}\r\n\r\nhello\r\n")


async def send(stack: mailservers.MailServers, recipient: str) -> str:
    """Send a message with a subject of its own; the subject."""
    subject = f"to {recipient} {uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(_send, stack.smtp_port, recipient, subject)
    return subject


async def delivered(stack: mailservers.MailServers, subject: str,
                    owner: tuple[str, str], others: list[tuple[str, str]]) -> None:
    """`subject` arrives in owner's INBOX and in none of the others'."""
    async def arrived() -> bool:
        return subject in await inbox(stack, *owner)

    await until(arrived, f"{subject!r} in {owner[0]}'s INBOX", stack.logs, DELIVERY_WAIT_S)
    for other in others:
        assert subject not in await inbox(stack, *other), other


def _rcpt_code(port: int, recipient: str) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail("sender@outside.example")
        code, _ = smtp.rcpt(recipient)
        return code


def _ends(imap: imaplib.IMAP4, within_s: float) -> bool:
    """Whether the server closes this open session within `within_s`."""
    imap.sock.settimeout(within_s)
    try:
        while imap.readline():  # "* BYE ...", then the end of the stream
            pass
    except TimeoutError:
        return False
    except OSError:
        pass  # reset: closed too
    finally:
        imap.shutdown()
    return True


async def session_ends(imap: imaplib.IMAP4) -> bool:
    return await asyncio.to_thread(_ends, imap, SESSION_END_S)


async def _quota(stack: mailservers.MailServers, user: str, password: str) -> Any:
    imap = await login(stack, user, password)
    try:
        return (await asyncio.to_thread(imap.getquotaroot, "INBOX"))[1]
    finally:
        await asyncio.to_thread(imap.logout)


async def test_a_mailbox_made_by_post_is_a_mailbox(make, settings, run_worker, stack):
    # the worker calls this Dovecot's doveadm to end sessions
    make.run_worker = partial(run_worker, settings=settings.replace(
        doveadm_url=stack.doveadm_url, doveadm_key=stack.doveadm_key))
    _, key = await make.account()
    for body in ({"domain": "example.org"}, {"domain": "other.example"}):
        await make.done(key, await make.rest("POST", "domain_create", key, body))
    john = ("john@example.org", "john-first-secret")
    await make.done(key, await make.rest("POST", "mailbox_create", key, {
        "domain": "example.org", "local_part": "john", "password": john[1], "quota": 2048}))
    made = await make.done(key, await make.rest("POST", "mailbox_create", key, {
        "domain": "example.org", "local_part": "mary"}))
    mary = ("mary@example.org", made["results"]["mary@example.org"]["password"])
    bob = ("bob@other.example", "bob-secret-password")
    await make.done(key, await make.rest("POST", "mailbox_create", key, {
        "domain": "other.example", "local_part": "bob", "password": bob[1]}))
    for alias in ({"address": "sales@example.org", "goto": ["mary@example.org"]},
                  {"address": "@other.example", "goto": ["bob@other.example"]}):
        await make.done(key, await make.rest("POST", "alias_create", key, alias))
    await make.done(key, await make.rest("POST", "alias_domain_create", key, {
        "alias_domain": "example.net", "target_domain": "example.org"}))
    everyone = [john, mary, bob]

    # generated and supplied passwords log in; a wrong one does not
    for user, password in everyone:
        await asyncio.to_thread((await login(stack, user, password)).logout)
    assert await refused(stack, john[0], "not-johns-password")

    # each message reaches its own mailbox, and only it
    for recipient, owner in (("john@example.org", john), ("sales@example.org", mary),
                             ("anything@other.example", bob),  # the catch-all
                             ("mary@example.net", mary),  # the alias domain
                             ("postmaster@example.org", john),  # its first mailbox
                             ("abuse@example.org", john)):
        subject = await send(stack, recipient)
        await delivered(stack, subject, owner, [o for o in everyone if o != owner])

    # unknown addresses are refused at RCPT, in a domain and behind an alias domain; and
    # nothing is relayed elsewhere (Postfix's default answer to that is a 4xx)
    for unknown in ("nobody@example.org", "nobody@example.net"):
        assert await asyncio.to_thread(_rcpt_code, stack.smtp_port, unknown) == 550, unknown
    assert await asyncio.to_thread(_rcpt_code, stack.smtp_port, "x@elsewhere.example") >= 400

    # the domain's owner names its postmaster: it takes the catch-all's place for that name
    await make.done(key, await make.rest("PUT", "domain_update", key,
                                         {"postmaster": "mary@example.org"},
                                         domain="other.example"))
    subject = await send(stack, "postmaster@other.example")
    await delivered(stack, subject, mary, [john, bob])

    # the quota set through the API is the one IMAP reports (KiB), with what john's three
    # messages use
    quota = b" ".join((await _quota(stack, *john))[-1]).decode()
    assert re.search(r'"User quota" \(STORAGE [1-9]\d* 2097152\)', quota), quota

    # a new password works at once, the old one no more, and the open session ends
    session = await login(stack, *john)
    await make.done(key, await make.rest("PUT", "mailbox_update", key,
                                         {"password": "john-second-secret"}, email=john[0]))
    assert await session_ends(session)
    assert await refused(stack, *john)
    john = (john[0], "john-second-secret")
    await asyncio.to_thread((await login(stack, *john)).logout)

    # switched off: its session ends and it no longer logs in
    session = await login(stack, *mary)
    await make.done(key, await make.rest("PUT", "mailbox_update", key, {"active": False},
                                         email=mary[0]))
    assert await session_ends(session)
    assert await refused(stack, *mary)

    # deleted: the same
    session = await login(stack, *bob)
    await make.done(key, await make.rest("DELETE", "mailbox_delete", key, email=bob[0]))
    assert await session_ends(session)
    assert await refused(stack, *bob)

    # a domain switched off takes its mailboxes' logins and sessions with it
    session = await login(stack, *john)
    await make.done(key, await make.rest("PUT", "domain_update", key, {"active": False},
                                         domain="example.org"))
    assert await session_ends(session)
    assert await refused(stack, *john)
    # ... and its mail: it is no longer hosted here (a relay, refused)
    assert await asyncio.to_thread(_rcpt_code, stack.smtp_port, john[0]) >= 400


async def test_a_kick_doveadm_does_not_take_is_retried(make, settings, run_worker, stack,
                                                       db, caplog):
    """The task completes all the same, the failure is logged without the key, and the
    sweeper sends the kick once doveadm takes it."""
    wrong = settings.replace(doveadm_url=stack.doveadm_url, doveadm_key="not-the-key")
    make.run_worker = partial(run_worker, settings=wrong)
    _, key = await make.account()
    await make.done(key, await make.rest("POST", "domain_create", key,
                                         {"domain": "example.org"}))
    await make.done(key, await make.rest("POST", "mailbox_create", key, {
        "domain": "example.org", "local_part": "john", "password": "john-first-secret"}))
    session = await login(stack, "john@example.org", "john-first-secret")
    task = await make.done(key, await make.rest("PUT", "mailbox_update", key,
                                                {"active": False}, email="john@example.org"))
    assert task["status"] == "completed"
    assert "doveadm kick of 1 sessions failed (KickFailed: HTTP 401)" in caplog.text
    assert "not-the-key" not in caplog.text
    assert await db.pool.fetchval("SELECT count(*) FROM doveadm_kicks") == 1
    # the retry, as the sweeper makes it once the row is due (here: at once)
    await db.pool.execute("UPDATE doveadm_kicks SET due_at = now()")
    await kicks.sweep(settings.replace(doveadm_url=stack.doveadm_url,
                                       doveadm_key=stack.doveadm_key), db)
    assert await session_ends(session)
    assert await db.pool.fetchval("SELECT count(*) FROM doveadm_kicks") == 0
