"""A domain's DKIM keys and DNS checks: key generation for new domains, `dkim_rotate`,
`domain_verify`, and the cron job that rechecks verified domains and retires old keys.

Keys are generated outside any transaction (RSA 2048 takes tens of milliseconds, in a
thread so other jobs run meanwhile) and stored in the task's transaction; a run repeated
after a crash stores nothing new (`first`), or finds its task finished. DNS is read
outside the transaction too, then the findings and the status change commit with the
task.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from service.core import dkim, dnscheck
from service.core.store import Row, Store
from service.core.tasks import (
    DNS_ERROR,
    DNS_MISSING,
    DNS_VERIFIED,
    DNS_WRONG,
    ROTATED,
)
from worker.context import JobContext, context
from worker.steps import Body, live_domain, lock_task

log = logging.getLogger("mailprov.dns")

Outcome = tuple[str, int, str | None]
GONE = "The domain is deleted or no longer exists."
# how each finding reads as a task item's status
STATUS = {dnscheck.VERIFIED: DNS_VERIFIED, dnscheck.MISSING: DNS_MISSING,
          dnscheck.WRONG: DNS_WRONG, dnscheck.ERROR: DNS_ERROR}
BATCH = 100


async def new_keys(job: JobContext, count: int, algorithm: str | None = None) -> list[dkim.NewKey]:
    """`count` new keys, made in a thread: the event loop keeps serving other jobs."""
    chosen = algorithm or job.settings.dkim_algorithm
    return await asyncio.gather(*(asyncio.to_thread(dkim.generate, job.settings.secret_key,
                                                    chosen) for _ in range(count)))


async def store_first_keys(store: Store, task_id: int,
                           keys: dict[str, dkim.NewKey]) -> dict[str, dict[str, str]]:
    """Each new domain's first key (domain name -> key), in the task's transaction; what
    the task's result shows of each (its selector). The task's lock makes a second run
    of a finished task stop before this, so each insert stores its key."""
    shown = {}
    for name, key in keys.items():
        if await store.insert_dkim_key(domain=name, key=key, task_id=task_id, first=True):
            shown[name] = {"dkim_selector": key.selector}
    return shown


async def _rotate(job: JobContext, task: Row) -> Outcome:
    payload = task["payload"]
    (key,) = await new_keys(job, 1, payload.get("algorithm"))
    async with job.db.transaction() as store:
        await lock_task(store, task["id"], [])
        domain = await live_domain(store, payload["domain_id"], GONE)
        retired = await store.retire_dkim_keys(domain_id=domain["id"],
                                               grace_s=job.settings.dkim_grace_s)
        await store.insert_dkim_key(domain=domain["name"], key=key, task_id=task["id"],
                                    first=False)
        await store.finish_task(task_id=task["id"], status="completed", results={
            domain["name"]: {"status": ROTATED, "dkim_selector": key.selector}})
    log.info("domain %s: DKIM key %s (%s) signs now; %s published until the grace period "
             "ends", domain["name"], key.selector, key.algorithm, ", ".join(retired) or "none")
    return "completed", 1, None


async def check_domain(job: JobContext, domain_id: int,
                       name: str) -> tuple[list[dnscheck.Record], dict[str, dnscheck.Finding]]:
    """What DNS serves for each of the domain's records."""
    keys = await job.db.domain_dkim_keys(domain_id=domain_id)
    records = dnscheck.expected(job.settings, name, keys)
    return records, await dnscheck.check(job.settings, records)


def _findings_json(findings: dict[str, dnscheck.Finding]) -> dict[str, Any]:
    return {rid: f.as_json() for rid, f in findings.items()}


def _log_change(name: str, was: str, now: str, findings: dict[str, dnscheck.Finding]) -> None:
    if was == "verified" and now != "verified":
        gone = [rid for rid, f in findings.items() if f.state in (dnscheck.MISSING,
                                                                  dnscheck.WRONG)]
        log.warning("domain %s: no longer verified, records missing or wrong: %s", name,
                    ", ".join(gone))
    elif was != "verified" and now == "verified":
        log.info("domain %s: verified", name)


async def _verify(job: JobContext, task: Row) -> Outcome:
    payload = task["payload"]
    async with job.db.transaction() as store:
        domain = await live_domain(store, payload["domain_id"], GONE)
    records, findings = await check_domain(job, domain["id"], domain["name"])
    verdict = dnscheck.verdict(records, findings)
    async with job.db.transaction() as store:
        await lock_task(store, task["id"], [])
        await live_domain(store, domain["id"], GONE)
        change = await store.record_dns_check(domain_id=domain["id"],
                                              results=_findings_json(findings),
                                              verified=verdict)
        assert change is not None  # the domain is locked, and live
        await store.finish_task(task_id=task["id"], status="completed", results={
            rid: {"status": STATUS[f.state]} for rid, f in findings.items()})
    _log_change(domain["name"], change["was"], change["status"], findings)
    return "completed", sum(f.state == dnscheck.VERIFIED for f in findings.values()), None


async def recheck(ctx: dict[str, Any]) -> int:
    """The cron job: check verified domains whose last check is older than
    MAILPROV_DNS_RECHECK_AFTER_S (a domain whose records are gone goes back to `active`,
    flagged), and delete keys past their grace period. How many domains it checked."""
    job = context(ctx)
    retired = await job.db.delete_retired_dkim_keys(limit=BATCH * 10)
    if retired:
        log.info("dkim: %s keys past their grace period deleted", retired)
    due = await job.db.domains_to_recheck(after_s=job.settings.dns_recheck_after_s,
                                          limit=BATCH)
    for domain in due:
        records, findings = await check_domain(job, domain["id"], domain["name"])
        async with job.db.transaction() as store:
            row = await store.lock_domain(domain_id=domain["id"])
            if row is None or row["deleted_at"] is not None:
                continue
            change = await store.record_dns_check(
                domain_id=domain["id"], results=_findings_json(findings),
                verified=dnscheck.verdict(records, findings))
        if change is not None:
            _log_change(domain["name"], change["was"], change["status"], findings)
    return len(due)


BODIES: dict[str, Body] = {"dkim_rotate": _rotate, "domain_verify": _verify}
