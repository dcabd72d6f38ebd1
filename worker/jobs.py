"""The provisioning jobs: one arq function per task type, each `job(ctx, task_id)`.

Every job is safe to run twice, or twice at once (arq re-runs a job whose worker died, and
the sweeper re-enqueues a job Redis lost). Each transaction starts by locking the task row
(`lock_task`), so runs of one task take turns and skip what an earlier run recorded; the
task's rows and its results are written in the same transaction.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import asyncpg
from arq import Retry

from service.core import logs, passwords, secrets
from service.core.errors import BACKEND_DOWN
from service.core.settings import Settings
from service.core.store import NewMailbox, Row, Store
from service.core.tasks import (
    CREATED,
    EXISTS,
    LIMIT,
    MAX_QUOTA,
    QUOTA,
    passwords_key,
)
from worker import domain_dns, kicks, lifecycle
from worker.context import JobContext, Outcome, context
from worker.steps import (
    Body,
    ProvisioningError,
    TaskFinished,
    live_domain,
    lock_task,
    unseal_password,
)

log = logging.getLogger("mailprov.worker")

# how a single mailbox task that could not create its mailbox reports it
SINGLE_FAILURES = {EXISTS: "Mailbox already exists.", LIMIT: LIMIT, QUOTA: QUOTA,
                   MAX_QUOTA: MAX_QUOTA}
# what a new mailbox may set besides its name, quota and password (NewMailbox's defaults)
FLAGS = ("active", "force_pw_update", "tls_enforce_in", "tls_enforce_out")

# worth another try: a backing service went away, or Postgres asked us to retry
TRANSIENT = (*BACKEND_DOWN, asyncpg.SerializationError, asyncpg.DeadlockDetectedError)


def _backoff(tries: int) -> float:
    return min(2 ** tries, 30)


async def run_task(ctx: dict[str, Any], task_id: int,
                   bodies: Mapping[str, Body] | None = None) -> Outcome:
    """The job of every task type: the task's row says which of `bodies` (default: each
    type's own) runs it."""
    try:
        return await _attempt(ctx, task_id, BODIES if bodies is None else bodies)
    except TRANSIENT as exc:
        # Postgres went away before the run could start, or while it recorded a failure:
        # nothing new was recorded, so arq tries again after a pause. If arq gives up (its
        # max_tries), the sweeper finds the task unfinished and enqueues it afresh.
        tries = ctx.get("job_try", 1)
        log.warning("task %s: %s before the run could record anything (try %s), retrying",
                    task_id, type(exc).__name__, tries)
        raise Retry(defer=_backoff(tries)) from exc


async def _attempt(ctx: dict[str, Any], task_id: int, bodies: Mapping[str, Body]) -> Outcome:
    """One run of a task. `attempts` counts runs in Postgres, so the limit holds whatever
    ended the earlier ones: a transient error, a killed worker, a timeout, a SIGTERM, or
    Redis losing the job and its arq try counter."""
    job = context(ctx)
    db = job.db
    limit = job.settings.worker_max_tries
    # the worker's id is the task's lease (worker/sweeper.py); arq copies the worker's ctx
    # into each job's
    task = await db.start_task(task_id=task_id, worker_id=ctx.get("worker_id"))
    if task is None:
        return Outcome("already finished")
    logs.bind(account_id=task["account_id"])

    async def fail(reason: str) -> Outcome:
        await db.finish_task(task_id=task_id, status="failed", error=reason)
        return Outcome("failed", "failed", reason=reason)

    if task["attempts"] > limit:
        log.error("task %s: %s runs were cut off, giving up", task_id, limit)
        return await fail(f"Gave up after {limit} attempts that did not finish; the task can "
                          "be retried.")
    try:
        status, created, reason = await bodies[task["type"]](job, task)
        if task["type"] in kicks.KICKING:
            await _kick(job)
    except TaskFinished:
        return Outcome("finished by another run")
    except ProvisioningError as exc:
        return await fail(exc.reason)
    except TRANSIENT as exc:
        tries = task["attempts"]
        if tries < limit:
            log.warning("task %s: %s on try %s, retrying", task_id, type(exc).__name__, tries)
            raise Retry(defer=_backoff(tries)) from exc
        log.error("task %s: %s on the last try", task_id, type(exc).__name__)
        return await fail(f"Internal error after {tries} attempts; the task can be retried.")
    except Exception:
        log.exception("task %s: unexpected error", task_id)
        return await fail("Internal error.")
    return Outcome("done", status, created, reason)


async def _kick(job: JobContext) -> None:
    """End the sessions the task's change took away, now that it is committed. The task
    is finished whatever happens here: the sweeper retries what is left."""
    try:
        await kicks.deliver(job.settings, job.db)
    except Exception:
        log.exception("doveadm kicks: left for the sweeper")


async def _domain(job: JobContext, task: Row) -> tuple[str, int, str | None]:
    # its DKIM key is part of the domain's task: made first, stored with the activation
    (key,) = await domain_dns.new_keys(job, 1)
    async with job.db.transaction() as store:
        await lock_task(store, task["id"], [])
        name = await store.activate_domain(task_id=task["id"])
        if name is None:
            raise ProvisioningError("The domain was removed before it was provisioned.")
        shown = await domain_dns.store_first_keys(store, task["id"], {name: key})
        await store.finish_task(task_id=task["id"], status="completed",
                                results={name: {"status": CREATED, **shown.get(name, {})}})
    return "completed", 1, None


async def _sub_domains(job: JobContext, task: Row) -> tuple[str, int, str | None]:
    payload = task["payload"]
    keys = await domain_dns.new_keys(job, len(payload["names"]))
    async with job.db.transaction() as store:
        await lock_task(store, task["id"], [])
        await live_domain(store, payload["parent_id"], "The parent domain no longer exists.")
        created = await store.insert_sub_domains(parent_id=payload["parent_id"],
                                                 names=payload["names"], task_id=task["id"])
        # a key for each sub-domain made here, none for a name someone else holds
        shown = await domain_dns.store_first_keys(store, task["id"], {
            n: k for n, k in zip(payload["names"], keys, strict=True) if n in created})
        results = {n: {"status": CREATED, **shown.get(n, {})} if n in created
                   else {"status": EXISTS} for n in payload["names"]}
        await store.finish_task(task_id=task["id"], status="completed", results=results)
    return "completed", len(created), None


def _address(item: dict[str, Any], domain: str) -> str:
    return f"{item['local_part']}@{domain}"


def _secrets_to_hash(settings: Settings, items: list[dict[str, Any]], domain: str,
                     generated: dict[str, str]) -> dict[str, str]:
    """address -> the password to hash for it: one the client supplied (unsealed here, and
    only ever in memory), or a generated one."""
    plain = {}
    for item in items:
        address = _address(item, domain)
        if secrets.SEALED_PASSWORD in item:
            plain[address] = unseal_password(settings, item[secrets.SEALED_PASSWORD])
        elif address in generated:
            plain[address] = generated[address]
    return plain


async def _mailboxes(job: JobContext, task: Row) -> tuple[str, int, str | None]:
    settings, db = job.settings, job.db
    domain, task_id = task["domain"], task["id"]
    domain_id = task["payload"]["domain_id"]
    single = task["type"] == "mailbox_single"
    recorded = task["results"]
    pending = [i for i in task["payload"]["items"] if _address(i, domain) not in recorded]
    # items whose password is sealed in the payload until their mailbox is written
    sealed = {_address(i, domain) for i in pending if secrets.SEALED_PASSWORD in i}
    generated = {_address(i, domain): passwords.generate() for i in pending
                 if _address(i, domain) not in sealed and "password_hash" not in i}
    plain = _secrets_to_hash(settings, pending, domain, generated)
    # each chunk rewrites the task's results so far: a bounded number of chunks (~10) keeps
    # that work proportional to the task's size, so a 10 000-mailbox task stays linear
    size = max(settings.bulk_chunk_size, -(-len(pending) // 10))
    done = len(recorded)
    created = 0
    status, reason = "completed", None
    chunks = [pending[i:i + size] for i in range(0, len(pending), size)] or [[]]
    # every salt is drawn afresh: items that share a password get hashes of their own
    async with contextlib.aclosing(job.hashing.hashes(task["account_id"],
                                                      list(plain.values()))) as hashes:
        for number, chunk in enumerate(chunks):
            addresses = [_address(i, domain) for i in chunk]
            for item, address in zip(chunk, addresses, strict=True):
                if address in plain:
                    item["password_hash"] = await anext(hashes)
            async with db.transaction() as store:
                already = await lock_task(store, task_id, addresses)
                fresh = [(i, a) for i, a in zip(chunk, addresses, strict=True)
                         if a not in already]
                offered = {a: generated[a] for _, a in fresh if a in generated}
                if offered:
                    # before COMMIT (a run that dies after it has already kept its
                    # passwords), and before the domain's lock: only the mailboxes the
                    # results mark `generated` ever show theirs
                    key = passwords_key(settings.redis_prefix, task_id)
                    await job.redis.hset(key, mapping=offered)  # type: ignore[misc]
                    await job.redis.expire(key, settings.password_ttl_s)
                done += len(chunk)
                last = number == len(chunks) - 1
                # the domain's lock: taken by this one statement, which also records the
                # chunk in the task (or finishes it), and held only until COMMIT, so one
                # domain's tasks barely wait on each other
                results = await _write_chunk(
                    store, task_id, domain_id, fresh, sealed, set(generated), done, last,
                    SINGLE_FAILURES if single else None)
                created += sum(r["status"] == CREATED for r in results.values())
                if last and single and results and results[addresses[0]]["status"] != CREATED:
                    status, reason = "failed", SINGLE_FAILURES[results[addresses[0]]["status"]]
    return status, created, reason


VERDICTS = {"created": CREATED, "exists": EXISTS, "limit": LIMIT, "quota": QUOTA,
            "max_quota": MAX_QUOTA}


async def _write_chunk(store: Store, task_id: int, domain_id: int,
                       items: list[tuple[dict[str, Any], str]], sealed: set[str],
                       generated: set[str], done: int, last: bool,
                       failures: dict[str, str] | None) -> dict[str, dict[str, Any]]:
    """Insert what fits the domain's limits and record it in the task (its progress, or,
    when `last`, its end), in one statement; the per-item outcomes."""
    outcomes = await store.add_mailboxes(
        domain_id=domain_id, task_id=task_id,
        mailboxes=[NewMailbox(item["local_part"], address, item["password_hash"],
                              item.get("display_name"), item["quota_mb"],
                              **{flag: item[flag] for flag in FLAGS if flag in item})
                   for item, address in items],
        sealed=[item["local_part"] for item, address in items if address in sealed],
        statuses=VERDICTS, generated=[a for _, a in items if a in generated], done=done,
        finish=last, failures=failures)
    if outcomes == [(None, "gone")]:
        raise ProvisioningError("The domain no longer exists.")
    return {address: {"status": VERDICTS[verdict]} for address, verdict in outcomes
            if address is not None}


# the body of each task type (service/core/tasks.py lists them; the worker checks the two
# lists agree when it starts)
BODIES: dict[str, Body] = {
    "domain": _domain,
    "sub_domain": _sub_domains,
    "mailbox_single": _mailboxes,
    "mailbox_bulk": _mailboxes,
    **lifecycle.BODIES,
    **domain_dns.BODIES,
}
