"""Webhook deliveries: each finished task POSTed to every endpoint of its account.

A delivery row is written by a trigger (schema.sql) in the transaction that finishes the
task, so it exists exactly when the finish committed, whichever worker, retry or crash
came between. Every worker runs `SENDERS` loops beside arq's; each takes one due delivery
(`claim_delivery`: FOR UPDATE SKIP LOCKED) and keeps its transaction open while it sends:
senders never take the same delivery, and one killed mid-send loses its connection, so
Postgres releases the row at once and another sender delivers it (at least once: the
`Mailprov-Delivery` header lets a receiver drop a repeat).

The body is the task as GET /api/v1/tasks/{id} shows it, without generated passwords
(they show as null: the API shows them to the key's holder only). It is signed as Stripe
signs: `Mailprov-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">` under the
endpoint's secret. A non-2xx answer, a timeout or a refused connection is retried after
1, 2, 4, ... seconds (doubling, at most an hour apart) until the delivery is 24 h old,
then it is `failed`. Each attempt is recorded on the row.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from service.core import secrets
from service.core.errors import BACKEND_DOWN
from service.core.taskview import iso, task_view
from service.core.webhooks import SECRET_PURPOSE, SIGNATURE_HEADER, allowed
from worker.context import JobContext

log = logging.getLogger("mailprov.webhooks")

SENDERS = 2
TIMEOUT_S = 10.0
GIVE_UP_S = 24 * 3600
IDLE_S = 0.5
MAX_BACKOFF_S = 3600.0


def sign(secret: str, moment: int, body: bytes) -> str:
    """The signature header's value."""
    mac = hmac.new(secret.encode(), f"{moment}.".encode() + body, hashlib.sha256)
    return f"t={moment},v1={mac.hexdigest()}"


def backoff(tries: int) -> float:
    """Seconds until the next attempt after `tries` failed ones: 1, 2, 4, ..."""
    return min(2.0 ** (tries - 1), MAX_BACKOFF_S)


def _task(row: Any) -> dict[str, Any]:
    return task_view({
        "id": row["t_id"], "type": row["type"], "status": row["status"],
        "domain": row["domain"], "results": row["results"],
        "progress_done": row["progress_done"], "progress_total": row["progress_total"],
        "error": row["error"], "created_at": row["t_created_at"],
        "started_at": row["started_at"], "finished_at": row["finished_at"]})


async def deliver_one(job: JobContext, session: aiohttp.ClientSession) -> bool:
    """Send one due delivery and record the attempt; whether there was one."""
    settings = job.settings
    async with job.db.transaction() as store:
        row = await store.claim_delivery()
        if row is None:
            return False
        body = json.dumps(_task(row)).encode()
        status: int | None = None
        error: str | None = None
        try:
            secret = secrets.unseal(settings.secret_key, row["secret_sealed"], SECRET_PURPOSE)
            if not await allowed(row["url"], settings.webhook_allow_private):
                raise PermissionError("the address is private")
            async with session.post(row["url"], data=body, allow_redirects=False, headers={
                    "Content-Type": "application/json", "Mailprov-Delivery": str(row["id"]),
                    SIGNATURE_HEADER: sign(secret, int(time.time()), body)},
                    timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as answer:
                status = answer.status
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except secrets.Unsealable:
            error = "the endpoint's secret cannot be read (MAILPROV_SECRET_KEY changed)"
        except (aiohttp.ClientError, TimeoutError, OSError, PermissionError,
                ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:200]
        tries = row["tries"] + 1
        if error is None:
            state, retry_in = "delivered", 0.0
        elif (datetime.now(UTC) - row["created_at"]).total_seconds() >= GIVE_UP_S:
            state, retry_in = "failed", 0.0
        else:
            state, retry_in = "pending", backoff(tries)
        await store.record_attempt(
            delivery_id=row["id"], state=state, retry_in_s=retry_in,
            attempt={"at": iso(datetime.now(UTC)), "status": status, "error": error})
    if error is not None:
        log.info("webhook delivery %s (task %s): attempt %s failed (%s); %s", row["id"],
                 row["task_id"], tries, error,
                 "given up" if state == "failed" else f"again in {retry_in:g} s")
    return True


async def _sender(job: JobContext, session: aiohttp.ClientSession) -> None:
    while True:
        try:
            if await deliver_one(job, session):
                continue
        except BACKEND_DOWN as exc:
            log.warning("webhook deliveries paused: Postgres unavailable (%s)",
                        type(exc).__name__)
        except Exception:
            log.exception("webhook delivery failed")
        await asyncio.sleep(IDLE_S)


async def run(job: JobContext) -> None:
    """The worker's delivery loops (until cancelled)."""
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(_sender(job, session) for _ in range(SENDERS)))
