"""What every job body shares: the errors that end a run, the task lock each of its
transactions starts with, and the loop that works through a task's items in chunks.

Each chunk is one transaction that starts by locking the task row (`lock_task`): runs of
one task take turns, and a run skips the items an earlier one recorded. A chunk's rows
and its items' results commit together, and the last chunk finishes the task in the same
transaction, so a task is never half-applied however often it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from service.core import secrets
from service.core.settings import Settings
from service.core.store import Row, Store
from service.core.tasks import UNFINISHED
from worker.context import JobContext

log = logging.getLogger("mailprov.worker")

# what runs a task of one type: (status it left the task in, items changed, reason)
Body = Callable[[JobContext, Row], Awaitable[tuple[str, int, str | None]]]
# what a chunk does to its fresh items: their results ({item: {"status": ...}})
Act = Callable[[Store, list[str]], Awaitable[dict[str, dict[str, Any]]]]


class ProvisioningError(Exception):
    """The task could not be done; its message becomes the failed task's reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class TaskFinished(Exception):
    """Another run of this task finished it meanwhile."""


async def lock_task(store: Store, task_id: int, keys: Sequence[str]) -> set[str]:
    """Lock the task row; the subset of `keys` already recorded in its results."""
    row = await store.lock_task(task_id=task_id, keys=keys)
    if row is None or row["status"] not in UNFINISHED:
        raise TaskFinished
    return set(row["done"])


async def live_domain(store: Store, domain_id: int, reason: str) -> Row:
    """Lock a domain (the lock every writer of its mailboxes and aliases holds); its row,
    counters current. ProvisioningError(`reason`) when it is gone or deleted."""
    domain = await store.lock_domain(domain_id=domain_id)
    if domain is None or domain["deleted_at"] is not None:
        raise ProvisioningError(reason)
    return domain


async def run_items(job: JobContext, task: Row, items: Sequence[str], act: Act,
                    success: Sequence[str], single: bool = False,
                    chunk: int | None = None) -> tuple[str, int, str | None]:
    """Work through `items` (the keys of their results) in chunks of `chunk` (default: the
    bulk chunk size), recording each chunk's results; the task is completed at the end, or
    failed when `single` and its one item's status is not one of `success` (the status is
    then the reason)."""
    task_id = task["id"]
    pending = [item for item in items if item not in task["results"]]
    # ~10 chunks at most, as mailbox creates: each rewrites the results recorded so far
    size = chunk or max(job.settings.bulk_chunk_size, -(-len(pending) // 10))
    parts = [pending[i:i + size] for i in range(0, len(pending), size)] or [[]]
    done = len(items) - len(pending)
    changed = 0
    status, reason = "completed", None
    for number, part in enumerate(parts):
        async with job.db.transaction() as store:
            already = await lock_task(store, task_id, part)
            fresh = [item for item in part if item not in already]
            results = await act(store, fresh) if fresh else {}
            done += len(part)
            changed += sum(r["status"] in success for r in results.values())
            if number < len(parts) - 1:
                await store.record_progress(task_id=task_id, results=results, done=done)
                continue
            outcome = results.get(items[0], {}).get("status") if single else None
            if outcome is not None and outcome not in success:
                status, reason = "failed", outcome
            await store.finish_task(task_id=task_id, status=status, error=reason,
                                    results=results)
    return status, changed, reason


def unseal_password(settings: Settings, sealed: str) -> str:
    """A password a client supplied, unsealed for hashing (only ever in memory). One sealed
    under another secret key fails the task: it cannot be read, however often it is
    tried."""
    try:
        return secrets.unseal(settings.secret_key, sealed)
    except secrets.Unsealable:
        log.error("a supplied password cannot be unsealed: MAILPROV_SECRET_KEY is not the one "
                  "the web process sealed it with")
        raise ProvisioningError("A supplied password could not be decrypted (the service's "
                                "secret key changed); send the request again.") from None
