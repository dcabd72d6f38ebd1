"""Ending the IMAP sessions that a change took away: Dovecot's doveadm HTTP API `kick`.

A mailbox switched off, deleted, renamed or given a new password, and a domain switched
off or deleted, leave a row in `doveadm_kicks`, written by triggers in the transaction of
the change (schema.sql). The worker that ran the task sends them as soon as the task is
finished; the sweeper sends what is left, every `sweep_interval_s`. A failed call (Dovecot
down, a wrong key) fails nobody's task: it is logged and tried again with a backoff, for a
day. Rows in Postgres rather than an arq job: they commit with the change (a worker that
dies between the commit and the call loses nothing), survive Redis losing its jobs, and
need no second outbox; the sweeper that already runs every few seconds is the retry loop.
Without MAILPROV_DOVEADM_URL and MAILPROV_DOVEADM_KEY nothing is sent, and the rows are
dropped after a day.
"""

from __future__ import annotations

import base64
import logging

import aiohttp

from service.core.settings import Settings
from service.core.store import Store

log = logging.getLogger("mailprov.kicks")

# the task types whose changes may leave kicks
KICKING = frozenset({"domain_update", "domain_delete", "domain_bulk_delete", "mailbox_update",
                     "mailbox_delete", "mailbox_bulk_action"})
BATCH = 500
MAX_BACKOFF_S = 300
GIVE_UP_AFTER_S = 24 * 3600
# doveadm's answer when none of the users had a session: nothing to end, done
EX_NOUSER = 68


class KickFailed(Exception):
    """doveadm did not take the kick."""


def enabled(settings: Settings) -> bool:
    return bool(settings.doveadm_url and settings.doveadm_key)


async def kick(settings: Settings, masks: list[str]) -> None:
    """End every Dovecot session of `masks` (addresses, or `*@domain`) in one call."""
    key = base64.b64encode(settings.doveadm_key.encode()).decode()
    timeout = aiohttp.ClientTimeout(total=settings.doveadm_timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
            settings.doveadm_url.rstrip("/") + "/doveadm/v1",
            json=[["kick", {"mask": masks}, "mailprov"]],
            headers={"Authorization": f"X-Dovecot-API {key}"}) as response:
        if response.status != 200:
            raise KickFailed(f"HTTP {response.status}")
        answer = await response.json(content_type=None)
    kind, body = answer[0][0], answer[0][1]
    if kind == "error" and body.get("exitCode") != EX_NOUSER:
        raise KickFailed(f"doveadm error {body}")


async def deliver(settings: Settings, store: Store) -> int:
    """Send the kicks that are due; how many doveadm took. Never raises for doveadm's
    sake: what fails stays due again after its backoff."""
    if not enabled(settings):
        return 0
    sent = 0
    while claimed := await store.claim_kicks(limit=BATCH, max_backoff_s=MAX_BACKOFF_S):
        masks = sorted({row["mask"] for row in claimed})
        try:
            await kick(settings, masks)
        except (TimeoutError, aiohttp.ClientError, KickFailed, ValueError, LookupError) as exc:
            # the reason, never the key or the request's headers
            log.warning("doveadm kick of %s sessions failed (%s: %s); retried in %s s",
                        len(masks), type(exc).__name__, exc,
                        min(2 ** min(row["attempts"] for row in claimed), MAX_BACKOFF_S))
            return sent
        await store.delete_kicks(ids=[row["id"] for row in claimed])
        log.info("doveadm kicked the sessions of %s", ", ".join(masks[:20]))
        sent += len(claimed)
    return sent


async def sweep(settings: Settings, store: Store) -> None:
    """The sweeper's part: retries, and giving up on what is a day old."""
    dropped = await store.drop_old_kicks(older_than_s=GIVE_UP_AFTER_S, limit=BATCH * 10)
    if dropped and enabled(settings):
        log.error("gave up on %s doveadm kicks a day old", dropped)
    await deliver(settings, store)
