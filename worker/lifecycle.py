"""The jobs of the lifecycle: changing, deleting, restoring and forgetting domains,
mailboxes and aliases, and the alias domains (the resource API's writes).

Each is safe to run twice or at once, as the creates are (worker/steps.py). Every change
to a domain's mailboxes or aliases is made under the domain's row lock, domains locked in
id order, with the domain's counters changed in the same statement as the rows: limits
and counters stay exact whatever runs at the same time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from service.core import limits, secrets
from service.core.errors import AliasDomainExists, DomainExists
from service.core.store import Row, Store
from service.core.tasks import (
    ACTIVATED,
    ALREADY_DELETED,
    CREATED,
    DEACTIVATED,
    DELETED,
    DELETED_FIRST,
    DOMAIN_DELETED,
    EXISTS,
    EXPIRED,
    NOT_DELETED,
    NOT_FOUND,
    PURGED,
    RESTORED,
    SHADOWS,
    UPDATED,
)
from worker.context import JobContext
from worker.steps import (
    Body,
    ProvisioningError,
    live_domain,
    lock_task,
    run_items,
    unseal_password,
)

# a bulk action's item outcome when it did what was asked
DONE = {"activate": ACTIVATED, "deactivate": DEACTIVATED, "delete": DELETED,
        "restore": RESTORED, "forget": PURGED}
# the task types whose one item fails the task when it cannot be done
SINGLE = frozenset({"domain_delete", "domain_restore", "mailbox_delete", "mailbox_restore",
                    "alias_delete", "alias_restore", "alias_forget"})
Outcome = tuple[str, int, str | None]
GONE = "The domain is deleted or no longer exists."


def _cutoff(job: JobContext) -> datetime:
    """Rows deleted before this are past the retention: no longer restorable."""
    return datetime.now(UTC) - timedelta(days=job.settings.retention_days)


async def _finish_one(store: Store, task: Row, key: str, status: str) -> Outcome:
    """Finish a task of one item with its result."""
    await store.finish_task(task_id=task["id"], status="completed",
                            results={key: {"status": status}})
    return "completed", 1, None


async def stored_password(job: JobContext, task: Row,
                          changes: Mapping[str, Any]) -> dict[str, Any]:
    """The mailbox columns a change's password fields become: a supplied password, sealed
    in the payload (service/web/api/secrets.py), unsealed and hashed here with a salt of
    its own; a `password_hash` kept as it is. finish_task erases both from the payload in
    the transaction that writes them."""
    if secrets.SEALED_PASSWORD in changes:
        plain = unseal_password(job.settings, changes[secrets.SEALED_PASSWORD])
        async with contextlib.aclosing(job.hashing.hashes(task["account_id"], [plain])) as hashes:
            return {"password_hash": await anext(hashes)}
    return {"password_hash": changes["password_hash"]} if "password_hash" in changes else {}


# domains


async def _lock_tree(store: Store, domain_id: int) -> list[int]:
    """Lock a domain and its sub-domains at any depth, in id order; their ids. A sub-domain
    is inserted under its parent's lock, so once a level is locked no new one appears
    under it; a new domain's id is larger than every locked one, so the order holds."""
    locked: list[int] = []
    tree = [domain_id]
    while new := sorted(set(tree) - set(locked)):
        await store.lock_domains(domain_ids=new)
        locked += new
        tree = await store.domain_subtree(domain_id=domain_id)
    return locked


async def _domain_update(job: JobContext, task: Row) -> Outcome:
    payload = task["payload"]
    changes = payload["changes"]
    async with job.db.transaction() as store:
        await lock_task(store, task["id"], [])
        domain = await live_domain(store, payload["domain_id"], GONE)
        largest = (await store.largest_mailbox_quota(domain_id=domain["id"])
                   if "max_mailbox_quota_mb" in changes else 0)
        problems = limits.domain_problems(domain, changes, largest)
        if problems:
            field, texts = next(iter(problems.items()))
            raise ProvisioningError(f"{field}: {texts[0]}")
        await store.update_domain(domain_id=domain["id"], changes=changes)
        return await _finish_one(store, task, domain["name"], UPDATED)


async def _domain_delete(job: JobContext, task: Row) -> Outcome:
    """Soft delete (or with `purge`, delete for good) each named domain, with its
    sub-domains, mailboxes and aliases: one transaction per domain."""
    payload = task["payload"]
    purge = payload.get("purge", False)

    async def act(store: Store, names: list[str]) -> dict[str, dict[str, Any]]:
        found = {r["name"]: r["id"] for r in await store.domains_by_name(
            account_id=task["account_id"], names=names)}
        results = {}
        for name in names:
            if name not in found:
                results[name] = {"status": NOT_FOUND}
                continue
            tree = await _lock_tree(store, found[name])
            if purge:
                await store.purge_domains(domain_ids=tree)
                results[name] = {"status": PURGED}
                continue
            # what of the tree was live goes; a sub-domain deleted on its own before keeps
            # its own time, so the parent's restore leaves it deleted
            deleted = await store.soft_delete_domains(domain_ids=tree)
            results[name] = {"status": DELETED if name in deleted else ALREADY_DELETED}
        return results

    # a transaction per domain: a large domain's rows do not hold the others' locks
    return await run_items(job, task, payload["names"], act, (DELETED, PURGED),
                           task["type"] in SINGLE, chunk=1)


async def _domain_restore(job: JobContext, task: Row) -> Outcome:
    """A domain back, with what was deleted with it, within the retention."""
    name = task["payload"]["name"]

    async def act(store: Store, names: list[str]) -> dict[str, dict[str, Any]]:
        found = await store.domains_by_name(account_id=task["account_id"], names=names)
        if not found:
            return {name: {"status": NOT_FOUND}}
        domain_id, parent_id = found[0]["id"], found[0]["parent_id"]
        # with its parent, which comes first: every job locks domains in id order
        locked = {r["id"]: r for r in await store.lock_domains(
            domain_ids=[i for i in (parent_id, domain_id) if i is not None])}
        row, parent = locked.get(domain_id), locked.get(parent_id)
        if row is None:
            return {name: {"status": NOT_FOUND}}
        if parent is not None and parent["deleted_at"] is not None:
            return {name: {"status": DOMAIN_DELETED}}
        if row["deleted_at"] is None:
            return {name: {"status": NOT_DELETED}}
        if row["deleted_at"] < _cutoff(job):
            return {name: {"status": EXPIRED}}
        tree = await _lock_tree(store, domain_id)
        await store.restore_domains(domain_ids=tree, deleted_at=row["deleted_at"])
        return {name: {"status": RESTORED}}

    return await run_items(job, task, [name], act, (RESTORED,), single=True)


# mailboxes and aliases: the bulk actions, of which delete, restore and forget of one are
# the single-item case


@dataclass(frozen=True)
class Kind:
    """How the actions reach one kind of row. Items are addresses or alias ids as text
    (the keys of the task's results); rows carry them as `item`."""

    domain_ids: Callable[[Store, int, list[str]], Awaitable[list[int]]]
    rows: Callable[[Store, int, list[str], list[int]], Awaitable[list[Row]]]
    delete: Callable[[Store, list[int]], Awaitable[set[str]]]
    restore: Callable[[Store, list[int]], Awaitable[set[str]]]
    purge: Callable[[Store, list[int]], Awaitable[set[str]]]
    set_active: Callable[[Store, list[int], bool], Awaitable[set[str]]]
    # why one more of these does not fit its domain (running counters): None if it does
    fits: Callable[[Row, dict[str, Any]], str | None]
    # what a restore adds to its domain's running counters
    counted: Callable[[Row, dict[str, Any]], None]


def _mailbox_fits(row: Row, domain: dict[str, Any]) -> str | None:
    return limits.mailbox_fits(
        quota_mb=row["quota_mb"], domain_quota_mb=domain["quota_mb"],
        max_mailbox_quota_mb=domain["max_mailbox_quota_mb"],
        quota_used_mb=domain["quota_used_mb"], max_mailboxes=domain["max_mailboxes"],
        mailbox_count=domain["mailbox_count"])


def _mailbox_counted(row: Row, domain: dict[str, Any]) -> None:
    domain["mailbox_count"] += 1
    domain["quota_used_mb"] += row["quota_mb"]


def _alias_counted(row: Row, domain: dict[str, Any]) -> None:
    domain["alias_count"] += 1


def _ids(items: Sequence[str]) -> list[int]:
    return [int(item) for item in items]


MAILBOXES = Kind(
    domain_ids=lambda s, account, items: s.mailbox_domain_ids(account_id=account,
                                                               addresses=items),
    rows=lambda s, account, items, domains: s.mailboxes_for_action(
        account_id=account, addresses=items, domain_ids=domains),
    delete=lambda s, ids: s.delete_mailboxes(ids=ids),
    restore=lambda s, ids: s.restore_mailboxes(ids=ids),
    purge=lambda s, ids: s.purge_mailboxes(ids=ids),
    set_active=lambda s, ids, active: s.set_mailboxes_active(ids=ids, active=active),
    fits=_mailbox_fits, counted=_mailbox_counted)
ALIASES = Kind(
    domain_ids=lambda s, account, items: s.alias_domain_ids(account_id=account,
                                                            ids=_ids(items)),
    rows=lambda s, account, items, domains: s.aliases_for_action(
        account_id=account, ids=_ids(items), domain_ids=domains),
    delete=lambda s, ids: s.delete_aliases(ids=ids),
    restore=lambda s, ids: s.restore_aliases(ids=ids),
    purge=lambda s, ids: s.purge_aliases(ids=ids),
    set_active=lambda s, ids, active: s.set_aliases_active(ids=ids, active=active),
    fits=lambda row, domain: limits.alias_fits(max_aliases=domain["max_aliases"],
                                               alias_count=domain["alias_count"]),
    counted=_alias_counted)


def _actions(kind: Kind) -> Body:
    """The body of every action task on one kind of row: payload `action` and `items`."""

    async def body(job: JobContext, task: Row) -> Outcome:
        action = task["payload"]["action"]
        # the domains of a key limited to some (None: the account's all)
        scope = task["payload"].get("domains")
        cutoff = _cutoff(job)

        async def act(store: Store, items: list[str]) -> dict[str, dict[str, Any]]:
            account = task["account_id"]
            locked = await store.lock_domains(
                domain_ids=await kind.domain_ids(store, account, items))
            domains = {d["id"]: dict(d) for d in locked}
            rows = {r["item"]: r for r in await kind.rows(store, account, items,
                                                          list(domains))}
            results: dict[str, dict[str, Any]] = {}
            chosen: list[Row] = []
            for item in items:
                row = rows.get(item)
                refusal = None
                if row is None or (scope is not None and domains[row["domain_id"]]["name"] \
                        not in scope):
                    refusal = NOT_FOUND
                elif action == "restore":
                    refusal = (NOT_DELETED if row["deleted_at"] is None
                               else DOMAIN_DELETED if row["domain_deleted_at"] is not None
                               else EXPIRED if row["deleted_at"] < cutoff
                               else kind.fits(row, domains[row["domain_id"]]))
                    if refusal is None:
                        kind.counted(row, domains[row["domain_id"]])
                elif action in ("delete", "activate", "deactivate"):
                    if row["deleted_at"] is not None:
                        refusal = ALREADY_DELETED if action == "delete" else DELETED_FIRST
                if refusal is None:
                    chosen.append(row)
                else:
                    results[item] = {"status": refusal}
            ids = [picked["id"] for picked in chosen]
            if action == "delete":
                changed = await kind.delete(store, ids)
            elif action == "restore":
                changed = await kind.restore(store, ids)
            elif action == "forget":
                changed = await kind.purge(store, ids)
            else:
                changed = await kind.set_active(store, ids, action == "activate")
            for picked in chosen:
                # under the domains' locks nothing else changed them: each one was changed
                results[picked["item"]] = {"status": DONE[action] if picked["item"] in changed
                                           else NOT_FOUND}
            return results

        return await run_items(job, task, task["payload"]["items"], act, (DONE[action],),
                               task["type"] in SINGLE)

    return body


async def _mailbox_update(job: JobContext, task: Row) -> Outcome:
    payload = task["payload"]
    changes = {k: v for k, v in payload["changes"].items()
               if k not in ("password_hash", secrets.SEALED_PASSWORD)}
    changes.update(await stored_password(job, task, payload["changes"]))
    async with job.db.transaction() as store:
        await lock_task(store, task["id"], [])
        mailbox = await store.get_mailbox(mailbox_id=payload["mailbox_id"])
        if mailbox is None:
            raise ProvisioningError("The mailbox no longer exists.")
        domain = await store.lock_domain(domain_id=mailbox["domain_id"])
        # again, now that its domain is locked: what an earlier lock holder left
        mailbox = await store.get_mailbox(mailbox_id=payload["mailbox_id"])
        if mailbox is None or domain is None:
            raise ProvisioningError("The mailbox no longer exists.")
        if mailbox["deleted_at"] is not None or domain["deleted_at"] is not None:
            raise ProvisioningError("The mailbox is deleted.")
        if "quota_mb" in changes:
            refusal = limits.mailbox_fits(
                quota_mb=changes["quota_mb"], domain_quota_mb=domain["quota_mb"],
                max_mailbox_quota_mb=domain["max_mailbox_quota_mb"],
                quota_used_mb=domain["quota_used_mb"] - mailbox["quota_mb"])
            if refusal is not None:
                raise ProvisioningError(refusal)
        await store.update_mailbox(mailbox_id=mailbox["id"], changes=changes)
        return await _finish_one(store, task, mailbox["address"], UPDATED)


# aliases


async def _alias(job: JobContext, task: Row) -> Outcome:
    payload = task["payload"]
    key = str(payload["alias_id"])
    async with job.db.transaction() as store:
        await lock_task(store, task["id"], [])
        domain = await live_domain(store, payload["domain_id"], GONE)
        holder = await store.address_holder(address=payload["address"])
        refusal = (SHADOWS if holder == "mailbox" else EXISTS if holder == "alias"
                   else limits.alias_fits(max_aliases=domain["max_aliases"],
                                          alias_count=domain["alias_count"]))
        if refusal is None and not await store.insert_alias(
                alias_id=payload["alias_id"], domain_id=domain["id"],
                address=payload["address"], goto=payload["goto"], active=payload["active"],
                task_id=task["id"]):
            refusal = EXISTS
        if refusal is not None:
            await store.finish_task(task_id=task["id"], status="failed", error=refusal,
                                    results={key: {"status": refusal}})
            return "failed", 0, refusal
        return await _finish_one(store, task, key, CREATED)


async def _alias_update(job: JobContext, task: Row) -> Outcome:
    payload = task["payload"]
    async with job.db.transaction() as store:
        await lock_task(store, task["id"], [])
        changes = payload["changes"]
        if await store.update_alias(alias_id=payload["alias_id"], goto=changes.get("goto"),
                                    active=changes.get("active")) is None:
            raise ProvisioningError("The alias is deleted or no longer exists.")
        return await _finish_one(store, task, str(payload["alias_id"]), UPDATED)


# alias domains


async def _alias_domain(job: JobContext, task: Row) -> Outcome:
    payload = task["payload"]
    try:
        async with job.db.transaction() as store:
            await lock_task(store, task["id"], [])
            target = await live_domain(store, payload["target_id"], GONE)
            if await store.insert_alias_domain(name=payload["name"], target_id=target["id"],
                                               active=payload["active"], task_id=task["id"]):
                return await _finish_one(store, task, payload["name"], CREATED)
    except (AliasDomainExists, DomainExists):
        pass  # a domain has the name: hosted already, as below
    raise ProvisioningError(AliasDomainExists().reason)


async def _alias_domain_update(job: JobContext, task: Row) -> Outcome:
    payload = task["payload"]
    async with job.db.transaction() as store:
        await lock_task(store, task["id"], [])
        name = await store.update_alias_domain(alias_domain_id=payload["alias_domain_id"],
                                               active=payload["active"])
        if name is None:
            raise ProvisioningError("The alias domain no longer exists.")
        return await _finish_one(store, task, name, UPDATED)


async def _alias_domain_delete(job: JobContext, task: Row) -> Outcome:
    payload = task["payload"]
    async with job.db.transaction() as store:
        await lock_task(store, task["id"], [])
        name = await store.delete_alias_domain(alias_domain_id=payload["alias_domain_id"])
        if name is None:
            raise ProvisioningError("The alias domain no longer exists.")
        return await _finish_one(store, task, name, PURGED)


BODIES: dict[str, Body] = {
    "domain_update": _domain_update,
    "domain_delete": _domain_delete,
    "domain_bulk_delete": _domain_delete,
    "domain_restore": _domain_restore,
    "mailbox_update": _mailbox_update,
    "mailbox_delete": _actions(MAILBOXES),
    "mailbox_restore": _actions(MAILBOXES),
    "mailbox_bulk_action": _actions(MAILBOXES),
    "alias": _alias,
    "alias_update": _alias_update,
    "alias_delete": _actions(ALIASES),
    "alias_restore": _actions(ALIASES),
    "alias_forget": _actions(ALIASES),
    "alias_bulk_action": _actions(ALIASES),
    "alias_domain": _alias_domain,
    "alias_domain_update": _alias_domain_update,
    "alias_domain_delete": _alias_domain_delete,
}
