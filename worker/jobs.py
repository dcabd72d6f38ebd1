"""The provisioning jobs: one per task type, each `async def job(ctx, task_id)`.

Every job is safe to run twice, or twice at once (arq re-runs a job whose worker died, and
the sweeper re-enqueues a job Redis lost). Each transaction starts by locking the task row
(`lock_task`), so runs of one task take turns and skip what an earlier run recorded; the
task's rows and its results are written in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from arq import Retry

from service import logs, passwords
from service.db import Database, Queries
from service.errors import BACKEND_DOWN, ProvisioningError
from service.passwords import Hasher
from service.settings import Settings
from service.tasks import passwords_key

log = logging.getLogger("mailprov.worker")

CREATED = "Created successfully."
EXISTS = "Already exists."
LIMIT = "Mailbox limit reached."
QUOTA = "Domain quota exceeded."
# how a single mailbox task that could not create its mailbox reports it
SINGLE_FAILURES = {EXISTS: "Mailbox already exists.", LIMIT: LIMIT, QUOTA: QUOTA}

# worth another try: a backing service went away, or Postgres asked us to retry
TRANSIENT = (*BACKEND_DOWN, asyncpg.SerializationError, asyncpg.DeadlockDetectedError)



@dataclass(frozen=True)
class Outcome:
    """How one run ended: what the worker's metrics and log line report, without reading
    the task back. `status` is the task status this run left (None: it left none)."""

    result: str  # done, failed, already finished, finished by another run
    status: str | None = None
    created: int = 0  # items this run created
    reason: str | None = None


# a task body: (status it left the task in, items created, failure reason)
Body = Callable[[dict[str, Any], asyncpg.Record], Awaitable[tuple[str, int, str | None]]]


class TaskFinished(Exception):
    """Another run of this task finished it meanwhile."""


def _backoff(tries: int) -> float:
    return min(2 ** tries, 30)


async def _run(ctx: dict[str, Any], task_id: int, body: Body) -> Outcome:
    try:
        return await _attempt(ctx, task_id, body)
    except TRANSIENT as exc:
        # Postgres went away before the run could start, or while it recorded a failure:
        # nothing new was recorded, so arq tries again after a pause. If arq gives up (its
        # max_tries), the sweeper finds the task unfinished and enqueues it afresh.
        tries = ctx.get("job_try", 1)
        log.warning("task %s: %s before the run could record anything (try %s), retrying",
                    task_id, type(exc).__name__, tries)
        raise Retry(defer=_backoff(tries)) from exc


async def _attempt(ctx: dict[str, Any], task_id: int, body: Body) -> Outcome:
    """One run of a task. `attempts` counts runs in Postgres, so the limit holds whatever
    ended the earlier ones: a transient error, a killed worker, a timeout, a SIGTERM, or
    Redis losing the job and its arq try counter."""
    db: Database = ctx["db"]
    settings: Settings = ctx["settings"]
    limit = settings.worker_max_tries
    task = await db.fetchrow("start_task", task_id)
    if task is None:
        return Outcome("already finished")
    logs.bind(account_id=task["account_id"])

    async def fail(reason: str) -> Outcome:
        await db.execute("finish_task", task_id, "failed", reason, {})
        return Outcome("failed", "failed", reason=reason)

    if task["attempts"] > limit:
        log.error("task %s: %s runs were cut off, giving up", task_id, limit)
        return await fail(f"Gave up after {limit} attempts that did not finish; the task can "
                          "be retried.")
    try:
        status, created, reason = await body(ctx, task)
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


async def _lock_task(q: Queries, task_id: int, keys: list[str]) -> set[str]:
    """Lock the task row; the subset of `keys` already recorded in its results."""
    row = await q.fetchrow("lock_task", task_id, keys)
    if row is None or row["status"] not in ("queued", "processing"):
        raise TaskFinished
    return set(row["done"])


async def _domain(ctx: dict[str, Any], task: asyncpg.Record) -> tuple[str, int, str | None]:
    async with ctx["db"].transaction() as q:
        await _lock_task(q, task["id"], [])
        name = await q.fetchval("activate_domain", task["id"])
        if name is None:
            raise ProvisioningError("The domain was removed before it was provisioned.")
        await q.execute("finish_task", task["id"], "completed", None,
                        {name: {"status": CREATED}})
    return "completed", 1, None


async def _sub_domains(ctx: dict[str, Any],
                       task: asyncpg.Record) -> tuple[str, int, str | None]:
    payload = task["payload"]
    async with ctx["db"].transaction() as q:
        await _lock_task(q, task["id"], [])
        if await q.fetchrow("lock_domain", payload["parent_id"]) is None:
            raise ProvisioningError("The parent domain no longer exists.")
        created = {r["name"] for r in await q.fetch("insert_sub_domains", payload["parent_id"],
                                                    payload["names"], task["id"])}
        results = {n: {"status": CREATED if n in created else EXISTS} for n in payload["names"]}
        await q.execute("finish_task", task["id"], "completed", None, results)
    return "completed", len(created), None


def _address(item: dict[str, Any], domain: str) -> str:
    return f"{item['local_part']}@{domain}"


async def _hashes(hasher: Hasher, plain: list[str]) -> AsyncIterator[str]:
    """The hashes of `plain`, in order, computed ahead by the process pool."""
    per_batch = max(1, min(8, len(plain) // (hasher.processes * 4)))
    for batch in hasher.hash_batches(plain, per_batch):
        for hashed in await batch:
            yield hashed


async def _mailboxes(ctx: dict[str, Any],
                     task: asyncpg.Record) -> tuple[str, int, str | None]:
    settings: Settings = ctx["settings"]
    db: Database = ctx["db"]
    domain, task_id = task["domain"], task["id"]
    domain_id = task["payload"]["domain_id"]
    single = task["type"] == "mailbox_single"
    recorded = task["results"]
    pending = [i for i in task["payload"]["items"] if _address(i, domain) not in recorded]
    generated = {_address(i, domain): passwords.generate()
                 for i in pending if "password_hash" not in i}
    hashes = _hashes(ctx["hasher"], list(generated.values()))
    # each chunk rewrites the task's results so far: a bounded number of chunks (~10) keeps
    # that work proportional to the task's size, so a 10 000-mailbox task stays linear
    size = max(settings.bulk_chunk_size, -(-len(pending) // 10))
    done = len(recorded)
    created = 0
    status, reason = "completed", None
    chunks = [pending[i:i + size] for i in range(0, len(pending), size)] or [[]]
    for number, chunk in enumerate(chunks):
        addresses = [_address(i, domain) for i in chunk]
        for item, address in zip(chunk, addresses, strict=True):
            if address in generated:
                item["password_hash"] = await anext(hashes)
        async with db.transaction() as q:
            already = await _lock_task(q, task_id, addresses)
            fresh = [(i, a) for i, a in zip(chunk, addresses, strict=True) if a not in already]
            results = await _write_chunk(q, task_id, domain_id, fresh)
            shown = {a: r for a, r in results.items() if r["status"] == CREATED and a in generated}
            for address in shown:
                results[address]["generated"] = True
            if shown:
                # before COMMIT: a run that dies after it has already kept its passwords
                key = passwords_key(settings.redis_prefix, task_id)
                await ctx["redis"].hset(key, mapping={a: generated[a] for a in shown})
                await ctx["redis"].expire(key, settings.password_ttl_s)
            done += len(chunk)
            created += sum(r["status"] == CREATED for r in results.values())
            if number < len(chunks) - 1:
                await q.execute("record_progress", task_id, results, done)
                continue
            if single and results and results[addresses[0]]["status"] != CREATED:
                status, reason = "failed", SINGLE_FAILURES[results[addresses[0]]["status"]]
            await q.execute("finish_task", task_id, status, reason, results)
    return status, created, reason


async def _write_chunk(q: Queries, task_id: int, domain_id: int,
                       items: list[tuple[dict[str, Any], str]]) -> dict[str, dict[str, Any]]:
    """Insert what fits the domain's limits, in one statement; the per-item outcomes."""
    domain = await q.fetchrow("lock_domain", domain_id)
    if domain is None:
        raise ProvisioningError("The domain no longer exists.")
    existing = set(await q.fetchval("existing_addresses", [a for _, a in items]))
    count, used = domain["mailbox_count"], domain["quota_used_mb"]
    results: dict[str, dict[str, Any]] = {}
    accepted = []
    for item, address in items:
        if address in existing:
            results[address] = {"status": EXISTS}
        elif count >= domain["max_mailboxes"]:
            results[address] = {"status": LIMIT}
        elif used + item["quota_mb"] > domain["quota_mb"]:
            results[address] = {"status": QUOTA}
        else:
            accepted.append((item, address))
            count += 1
            used += item["quota_mb"]
    if accepted:
        inserted = {r["address"] for r in await q.fetch(
            "insert_mailboxes", domain_id, task_id,
            [i["local_part"] for i, _ in accepted], [a for _, a in accepted],
            [i["password_hash"] for i, _ in accepted], [i.get("display_name") for i, _ in accepted],
            [i["quota_mb"] for i, _ in accepted],
        )}
        for _, address in accepted:
            results[address] = {"status": CREATED if address in inserted else EXISTS}
    return results


async def provision_domain(ctx: dict[str, Any], task_id: int) -> Outcome:
    return await _run(ctx, task_id, _domain)


async def provision_sub_domain(ctx: dict[str, Any], task_id: int) -> Outcome:
    return await _run(ctx, task_id, _sub_domains)


async def provision_mailbox_single(ctx: dict[str, Any], task_id: int) -> Outcome:
    return await _run(ctx, task_id, _mailboxes)


async def provision_mailbox_bulk(ctx: dict[str, Any], task_id: int) -> Outcome:
    return await _run(ctx, task_id, _mailboxes)
