"""The data-access layer: the only code that runs SQL, one typed method per named query.

Each method runs the statement of its own name in `sql/queries.sql` (a unit test holds
the two lists together), so callers pass keyword arguments and get typed values back,
and no query name or positional parameter list leaks out of this module. Driver errors
that mean something to a client are turned into domain exceptions here, by constraint
name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from service.core import errors
from service.core.dkim import NewKey as NewDkimKey
from service.core.paging import Page, PageRequest
from service.core.sql import PAGING, QUERIES

Row: TypeAlias = asyncpg.Record

# unique constraint name -> what a client is told
CONSTRAINT_ERRORS: dict[str, type[errors.ApiError]] = {
    "domains_name_key": errors.DomainExists,
    "alias_domains_name_key": errors.AliasDomainExists,
}


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        mapped = CONSTRAINT_ERRORS.get(exc.constraint_name or "")
        if mapped is None:
            raise
        raise mapped() from exc


@dataclass(frozen=True)
class NewMailbox:
    """One mailbox row to insert."""

    local_part: str
    address: str
    password_hash: str
    display_name: str | None
    quota_mb: int
    active: bool = True
    force_pw_update: bool = False
    tls_enforce_in: bool = False
    tls_enforce_out: bool = False


@dataclass(frozen=True)
class Listing:
    """How one `page_*` query is filtered and sorted. Everything here is SQL of ours, chosen
    by name: a client's values only ever travel as parameters."""

    # API sort field -> (column of the listing, its SQL type)
    sorts: dict[str, tuple[str, str]]
    # API filter -> condition on `t`, with {} where its parameter goes
    filters: dict[str, str] = field(default_factory=dict)
    # the filter that narrows the listing to one domain, replacing the account condition
    # (its index serves the page: see schema.sql)
    scope: str = ""
    soft_deleted: bool = True
    # the condition that keeps to a key's domains (a key limited to some), {} its parameter
    in_domains: str = ""


ACCOUNT = "t.account_id = $1"
IN_DOMAIN = "t.domain_id = (SELECT id FROM domains WHERE account_id = $1 AND name = {})"
IN_DOMAINS = "t.domain_id IN (SELECT id FROM domains WHERE account_id = $1 AND name = ANY({}))"
DELETED = {"without": "t.deleted_at IS NULL", "with": "true", "only": "t.deleted_at IS NOT NULL"}
CREATED = ("created_at", "timestamptz")
LISTINGS: dict[str, Listing] = {
    "page_domains": Listing(
        {"domain": ("name", "text"), "created_at": CREATED},
        {"search": "strpos(t.name, {}) > 0", "active": "t.active = {}"},
        in_domains="t.name = ANY({})"),
    "page_mailboxes": Listing(
        {"email": ("address", "text"), "created_at": CREATED},
        {"domain": IN_DOMAIN,
         "search": "(strpos(t.address, {0}) > 0 OR strpos(lower(t.display_name), {0}) > 0)",
         "active": "t.active = {}"}, scope="domain", in_domains=IN_DOMAINS),
    "page_aliases": Listing(
        {"address": ("address", "text"), "created_at": CREATED},
        {"domain": IN_DOMAIN, "search": "strpos(t.address, {}) > 0", "active": "t.active = {}"},
        scope="domain", in_domains=IN_DOMAINS),
    "page_alias_domains": Listing(
        {"alias_domain": ("name", "text"), "created_at": CREATED},
        {"domain": "t.target_id = (SELECT id FROM domains WHERE account_id = $1 AND name = {})",
         "search": "strpos(t.name, {}) > 0", "active": "t.active = {}"},
        soft_deleted=False,
        in_domains="t.target_id IN (SELECT id FROM domains WHERE account_id = $1 "
                   "AND name = ANY({}))"),
    "page_tasks": Listing(
        {"created_at": CREATED}, {"status": "t.status = {}", "type": "t.type = {}"},
        soft_deleted=False, in_domains="t.domain = ANY({})"),
}
# the comparisons of paging.sql, by the sort's direction
ASCENDING = {"at_or_after": ">=", "at_or_before": "<=", "before": "<", "after": ">"}
DESCENDING = {"at_or_after": "<=", "at_or_before": ">=", "before": ">", "after": "<"}


def page_sql(name: str, request: PageRequest) -> tuple[str, list[Any]]:
    """The statement and parameters of one page of the listing `name`."""
    listing = LISTINGS[name]
    column, kind = listing.sorts[request.sort]
    params: list[Any] = [request.account_id]
    where = [] if listing.scope in request.filters else [ACCOUNT]
    for filter_name, value in request.filters.items():
        params.append(value)
        where.append(listing.filters[filter_name].format(f"${len(params)}"))
    if request.domains is not None:
        params.append(list(request.domains))
        where.append(listing.in_domains.format(f"${len(params)}"))
    if listing.soft_deleted:
        where.append(DELETED[request.deleted])
    order, against = ("DESC", "ASC") if request.descending else ("ASC", "DESC")
    cursor = request.cursor
    slots = {f: f"${len(params) + i}" for i, f in enumerate(
        ("size", "number", "how", "k1", "k2"), start=1)}
    # bigint: a far page[number] times the size overflows the integer Postgres would infer
    slots["size"] += "::bigint"
    slots["number"] += "::bigint"
    params += [request.size, request.number, cursor and cursor.how, cursor and cursor.key,
               cursor and cursor.id]
    listing_sql = QUERIES[name].format(where=" AND ".join(where))
    sql = PAGING.format(
        listing=listing_sql, key=column, type=kind,
        forward=f"{column} {order}, id {order}", backward=f"{column} {against}, id {against}",
        **(DESCENDING if request.descending else ASCENDING), **slots)
    return sql, params


def _page(rows: list[Row]) -> Page:
    """paging.sql's rows as a page: ahead rows are in the sort's order and behind rows
    against it; one more than the page is read beyond it."""
    total, size = rows[0]["page_total"], rows[0]["page_rows"]
    parts: dict[str | None, list[Row]] = {}
    for row in sorted(rows, key=lambda r: r["page_pos"] or 0):
        parts.setdefault(row["page_part"], []).append(row)
    ahead, behind = parts.get("ahead", []), parts.get("behind", [])
    beyond = (ahead or behind)[size:size + 1]
    page = ahead[:size] if ahead else behind[:size][::-1]
    if ahead or "before" in parts:
        return Page(total, page, beyond[0] if beyond else None,
                    parts["before"][0] if "before" in parts else None)
    return Page(total, page, parts["after"][0] if "after" in parts else None,
                beyond[0] if beyond else None)


class Store:
    """Every query, bound to a pool or to one connection (inside a transaction)."""

    def __init__(self, executor: asyncpg.Pool | asyncpg.Connection) -> None:
        self._ex = executor

    async def _rows(self, name: str, *args: Any) -> list[Row]:
        with _mapped_errors():
            return await self._ex.fetch(QUERIES[name], *args)

    async def _paged(self, name: str, request: PageRequest) -> Page:
        sql, params = page_sql(name, request)
        return _page(await self._ex.fetch(sql, *params))

    async def _row(self, name: str, *args: Any) -> Row | None:
        with _mapped_errors():
            return await self._ex.fetchrow(QUERIES[name], *args)

    async def _value(self, name: str, *args: Any) -> Any:
        with _mapped_errors():
            return await self._ex.fetchval(QUERIES[name], *args)

    async def _run(self, name: str, *args: Any) -> None:
        with _mapped_errors():
            await self._ex.execute(QUERIES[name], *args)

    async def add_task_types(self, *, names: Sequence[str]) -> None:
        await self._run("add_task_types", list(names))

    # accounts and keys

    async def resolve_key(self, *, key_hash: str) -> Row | None:
        """A live key: its account_id, key_id, read_only and domains."""
        return await self._row("resolve_key", key_hash)

    async def touch_key(self, *, key_id: int) -> None:
        await self._run("touch_key", key_id)

    async def list_keys(self, *, account_id: int) -> list[Row]:
        return await self._rows("list_keys", account_id)

    async def create_account(self, *, name: str) -> int:
        return await self._value("create_account", name)

    async def account_exists(self, *, account_id: int) -> bool:
        return await self._value("account_exists", account_id)

    async def create_api_key(self, *, account_id: int, key_hash: str, prefix: str,
                             read_only: bool = False, domains: Sequence[str] | None = None,
                             expires_at: datetime | None = None) -> int:
        return await self._value("create_api_key", account_id, key_hash, prefix, read_only,
                                 None if domains is None else list(domains), expires_at)

    async def find_keys(self, *, key_hash: str, prefix: str) -> list[Row]:
        return await self._rows("find_keys", key_hash, prefix)

    async def revoke_keys(self, *, key_hash: str, prefix: str) -> list[Row]:
        return await self._rows("revoke_keys", key_hash, prefix)

    # what a request reads together with its key, in one round trip

    async def resolve_key_with_task(self, *, key_hash: str, task_id: int) -> Row | None:
        return await self._row("resolve_key_with_task", key_hash, task_id)

    async def resolve_key_with_domain(self, *, key_hash: str, domain: str) -> Row | None:
        return await self._row("resolve_key_with_domain", key_hash, domain)

    # recording tasks

    async def create_task(self, *, account_id: int, task_type: str, domain: str,
                          payload: dict[str, Any], total: int) -> int:
        return await self._value("create_task", account_id, task_type, domain, payload, total)

    async def create_tasks_as_read(self, *, key_hashes: Sequence[str],
                                   domains: Sequence[Row], task_types: Sequence[str],
                                   payloads: Sequence[dict[str, Any]],
                                   totals: Sequence[int]) -> dict[int, int]:
        """`domains`: the rows resolve_key_with_domain returned. {position from 0: new
        task id} of the tasks recorded; the others' key or domain has changed since."""
        rows = await self._rows(
            "create_tasks_as_read", list(key_hashes), [d["id"] for d in domains],
            list(task_types), list(payloads), list(totals), [d["name"] for d in domains],
            [d["quota_mb"] for d in domains], [d["max_mailboxes"] for d in domains],
            [d["default_mailbox_quota_mb"] for d in domains],
            [d["max_mailbox_quota_mb"] for d in domains])
        return {row["pos"] - 1: row["id"] for row in rows}

    async def forget_unheard_tasks(self, *, task_ids: Sequence[int]) -> None:
        await self._run("forget_unheard_tasks", list(task_ids))

    async def lock_sub_domain_window(self, *, parent_id: int) -> None:
        await self._value("lock_sub_domain_window", parent_id)

    async def create_sub_domain_task(self, *, account_id: int, domain: str,
                                     payload: dict[str, Any], total: int, parent_id: int,
                                     window_s: int) -> Row:
        """Run after lock_sub_domain_window, in its transaction: `id` is None when the
        parent had its request in the window, which ends at `reset_ms`."""
        row = await self._row("create_sub_domain_task", account_id, domain, payload, total,
                              parent_id, window_s)
        assert row is not None  # the aggregate always gives one row
        return row

    async def create_domain_task(self, *, account_id: int, domain: str, quota_mb: int,
                                 max_mailboxes: int, default_mailbox_quota_mb: int,
                                 description: str | None, max_mailbox_quota_mb: int,
                                 max_aliases: int, backupmx: bool = False,
                                 active: bool = True, postmaster: str | None = None) -> int:
        """The domain row (pending; DomainExists when it is taken) and its task."""
        return await self._value("create_domain_task", account_id, domain, {"domain": domain},
                                 quota_mb, max_mailboxes, default_mailbox_quota_mb,
                                 description, max_mailbox_quota_mb, max_aliases, backupmx,
                                 active, postmaster)

    async def create_alias_task(self, *, account_id: int, domain: str,
                                payload: dict[str, Any]) -> Row:
        """The task of a new alias, and the alias's id, drawn with it (`id`, `alias_id`)."""
        row = await self._row("create_alias_task", account_id, domain, payload)
        assert row is not None  # an INSERT ... RETURNING of one row
        return row

    # reads of the MailAPI lists

    async def list_domains(self, *, account_id: int,
                           domains: Sequence[str] | None = None) -> list[Row]:
        """The account's domains; only those in `domains` when it is given."""
        return await self._rows("list_domains", account_id,
                                None if domains is None else list(domains))

    async def list_mailboxes(self, *, domain_id: int) -> list[Row]:
        return await self._rows("list_mailboxes", domain_id)

    # jobs

    async def start_task(self, *, task_id: int, worker_id: str | None) -> Row | None:
        """The task, now `processing` by `worker_id` with one more attempt; None when it
        is finished."""
        return await self._row("start_task", task_id, worker_id)

    async def lock_task(self, *, task_id: int, keys: Sequence[str]) -> Row | None:
        return await self._row("lock_task", task_id, list(keys))

    async def lock_domain(self, *, domain_id: int) -> Row | None:
        return await self._row("lock_domain", domain_id)

    async def add_mailboxes(self, *, domain_id: int, task_id: int,
                            mailboxes: Sequence[NewMailbox], sealed: Sequence[str],
                            statuses: Mapping[str, str], generated: Sequence[str], done: int,
                            finish: bool,
                            failures: Mapping[str, str] | None) -> list[tuple[str | None, str]]:
        """Insert what fits the domain's limits, counters included, and record it in the
        task, in one statement under the domain's lock (schema.sql:
        mailprov_add_mailboxes says what each argument does); (address, verdict) in order:
        created, exists, limit, quota or max_quota, or one (None, "gone") when the domain
        is missing or deleted."""
        rows = await self._rows(
            "add_mailboxes", domain_id, task_id, [m.local_part for m in mailboxes],
            [m.address for m in mailboxes], [m.password_hash for m in mailboxes],
            [m.display_name for m in mailboxes], [m.quota_mb for m in mailboxes],
            [m.active for m in mailboxes], [m.force_pw_update for m in mailboxes],
            [m.tls_enforce_in for m in mailboxes], [m.tls_enforce_out for m in mailboxes],
            list(sealed), dict(statuses), list(generated), done, finish,
            None if failures is None else dict(failures))
        return [(r["item"], r["verdict"]) for r in rows]

    async def insert_sub_domains(self, *, parent_id: int, names: Sequence[str],
                                 task_id: int) -> set[str]:
        rows = await self._rows("insert_sub_domains", parent_id, list(names), task_id)
        return {r["name"] for r in rows}

    async def activate_domain(self, *, task_id: int) -> str | None:
        return await self._value("activate_domain", task_id)

    async def record_progress(self, *, task_id: int, results: dict[str, Any],
                              done: int) -> None:
        await self._run("record_progress", task_id, results, done)

    async def finish_task(self, *, task_id: int, status: str, error: str | None = None,
                          results: dict[str, Any] | None = None) -> None:
        await self._run("finish_task", task_id, status, error, results or {})

    async def leaseholders(self) -> list[str]:
        """The workers that hold a processing task."""
        return [r["worker_id"] for r in await self._rows("leaseholders")]

    async def free_tasks(self, *, worker_ids: Sequence[str]) -> list[Row]:
        """Put the processing tasks of `worker_ids` back to queued; their ids and types."""
        return await self._rows("free_tasks", list(worker_ids))

    async def erase_kept_secrets(self, *, after_s: int, limit: int) -> None:
        await self._run("erase_kept_secrets", after_s, limit)

    async def stale_tasks(self, *, queued_after_s: float, silent_for_s: float,
                          limit: int) -> list[Row]:
        return await self._rows("stale_tasks", queued_after_s, silent_for_s, limit)

    # operations

    async def schema_missing(self, *, names: Sequence[str]) -> list[str]:
        return [r["name"] for r in await self._rows("schema_missing", list(names))]

    async def queue_counts(self) -> Row:
        row = await self._row("queue_counts")
        assert row is not None  # an aggregate always returns its row
        return row

    async def finished_per_minute(self) -> list[Row]:
        return await self._rows("finished_per_minute")

    async def recent_failures(self, *, limit: int) -> list[Row]:
        return await self._rows("recent_failures", limit)

    async def ops_list_tasks(self, *, status: str | None, since_s: float | None,
                             account_id: int | None, limit: int) -> list[Row]:
        return await self._rows("ops_list_tasks", status, since_s, account_id, limit)

    async def ops_get_task(self, *, task_id: int) -> Row | None:
        return await self._row("ops_get_task", task_id)

    async def task_status(self, *, task_id: int) -> str | None:
        return await self._value("task_status", task_id)

    async def retry_task(self, *, task_id: int, keep: str) -> Row | None:
        return await self._row("retry_task", task_id, keep)

    # the resource API's lookups (each with its key, in one round trip)

    async def resolve_key_with_domain_entry(self, *, key_hash: str, domain: str,
                                            usage: bool = False) -> Row | None:
        return await self._row("resolve_key_with_domain_entry", key_hash, domain, usage)

    async def resolve_key_with_mailbox(self, *, key_hash: str, address: str) -> Row | None:
        return await self._row("resolve_key_with_mailbox", key_hash, address)

    async def resolve_key_with_alias(self, *, key_hash: str, alias_id: int) -> Row | None:
        return await self._row("resolve_key_with_alias", key_hash, alias_id)

    async def resolve_key_with_address(self, *, key_hash: str, domain: str,
                                       address: str) -> Row | None:
        return await self._row("resolve_key_with_address", key_hash, domain, address)

    async def resolve_key_with_alias_domain(self, *, key_hash: str, name: str) -> Row | None:
        return await self._row("resolve_key_with_alias_domain", key_hash, name)

    async def resolve_key_with_alias_target(self, *, key_hash: str, name: str,
                                            target: str) -> Row | None:
        return await self._row("resolve_key_with_alias_target", key_hash, name, target)

    # pages (service/core/sql/paging.sql)

    async def page_domains(self, request: PageRequest) -> Page:
        return await self._paged("page_domains", request)

    async def page_mailboxes(self, request: PageRequest) -> Page:
        return await self._paged("page_mailboxes", request)

    async def page_aliases(self, request: PageRequest) -> Page:
        return await self._paged("page_aliases", request)

    async def page_alias_domains(self, request: PageRequest) -> Page:
        return await self._paged("page_alias_domains", request)

    async def page_tasks(self, request: PageRequest) -> Page:
        return await self._paged("page_tasks", request)

    # jobs of the lifecycle: domains

    async def lock_domains(self, *, domain_ids: Sequence[int]) -> list[Row]:
        return await self._rows("lock_domains", list(domain_ids))

    async def domain_subtree(self, *, domain_id: int) -> list[int]:
        return list(await self._value("domain_subtree", domain_id))

    async def domains_by_name(self, *, account_id: int, names: Sequence[str]) -> list[Row]:
        return await self._rows("domains_by_name", account_id, list(names))

    async def largest_mailbox_quota(self, *, domain_id: int) -> int:
        return await self._value("largest_mailbox_quota", domain_id)

    async def update_domain(self, *, domain_id: int, changes: dict[str, Any]) -> str | None:
        """Change the fields in `changes` (schema column names); the domain's name, None
        when it is gone or deleted."""
        return await self._value(
            "update_domain", domain_id, changes.get("active"), changes.get("max_aliases"),
            changes.get("max_mailboxes"), changes.get("default_mailbox_quota_mb"),
            changes.get("max_mailbox_quota_mb"), changes.get("quota_mb"),
            changes.get("backupmx"), "description" in changes, changes.get("description"),
            "postmaster" in changes, changes.get("postmaster"))

    async def soft_delete_domains(self, *, domain_ids: Sequence[int]) -> list[str]:
        return [r["name"] for r in await self._rows("soft_delete_domains", list(domain_ids))]

    async def restore_domains(self, *, domain_ids: Sequence[int],
                              deleted_at: datetime) -> list[str]:
        rows = await self._rows("restore_domains", list(domain_ids), deleted_at)
        return [r["name"] for r in rows]

    async def purge_domains(self, *, domain_ids: Sequence[int]) -> list[str]:
        return [r["name"] for r in await self._rows("purge_domains", list(domain_ids))]

    # mailboxes

    async def mailbox_domain_ids(self, *, account_id: int,
                                 addresses: Sequence[str]) -> list[int]:
        return list(await self._value("mailbox_domain_ids", account_id, list(addresses)))

    async def mailboxes_for_action(self, *, account_id: int, addresses: Sequence[str],
                                   domain_ids: Sequence[int]) -> list[Row]:
        return await self._rows("mailboxes_for_action", account_id, list(addresses),
                                list(domain_ids))

    async def get_mailbox(self, *, mailbox_id: int) -> Row | None:
        return await self._row("get_mailbox", mailbox_id)

    async def update_mailbox(self, *, mailbox_id: int, changes: dict[str, Any]) -> str | None:
        """Change the fields in `changes` (schema column names), the domain's quota_used
        with them; the address, None when it is gone or deleted."""
        return await self._value(
            "update_mailbox", mailbox_id, "display_name" in changes,
            changes.get("display_name"), changes.get("quota_mb"), changes.get("active"),
            changes.get("force_pw_update"), changes.get("tls_enforce_in"),
            changes.get("tls_enforce_out"), changes.get("password_hash"))

    async def delete_mailboxes(self, *, ids: Sequence[int]) -> set[str]:
        return {r["address"] for r in await self._rows("delete_mailboxes", list(ids))}

    async def restore_mailboxes(self, *, ids: Sequence[int]) -> set[str]:
        return {r["address"] for r in await self._rows("restore_mailboxes", list(ids))}

    async def set_mailboxes_active(self, *, ids: Sequence[int], active: bool) -> set[str]:
        rows = await self._rows("set_mailboxes_active", list(ids), active)
        return {r["address"] for r in rows}

    async def purge_mailboxes(self, *, ids: Sequence[int]) -> set[str]:
        return {r["address"] for r in await self._rows("purge_mailboxes", list(ids))}

    # aliases

    async def alias_domain_ids(self, *, account_id: int, ids: Sequence[int]) -> list[int]:
        return list(await self._value("alias_domain_ids", account_id, list(ids)))

    async def address_holder(self, *, address: str) -> str | None:
        return await self._value("address_holder", address)

    async def aliases_for_action(self, *, account_id: int, ids: Sequence[int],
                                 domain_ids: Sequence[int]) -> list[Row]:
        return await self._rows("aliases_for_action", account_id, list(ids), list(domain_ids))

    async def insert_alias(self, *, alias_id: int, domain_id: int, address: str,
                           goto: Sequence[str], active: bool, task_id: int) -> bool:
        """The alias and its domain's counter; False when its id or address is taken."""
        return bool(await self._value("insert_alias", alias_id, domain_id, address,
                                      list(goto), active, task_id))

    async def update_alias(self, *, alias_id: int, goto: Sequence[str] | None,
                           active: bool | None) -> str | None:
        return await self._value("update_alias", alias_id,
                                 None if goto is None else list(goto), active)

    async def delete_aliases(self, *, ids: Sequence[int]) -> set[str]:
        return {r["item"] for r in await self._rows("delete_aliases", list(ids))}

    async def restore_aliases(self, *, ids: Sequence[int]) -> set[str]:
        return {r["item"] for r in await self._rows("restore_aliases", list(ids))}

    async def set_aliases_active(self, *, ids: Sequence[int], active: bool) -> set[str]:
        return {r["item"] for r in await self._rows("set_aliases_active", list(ids), active)}

    async def purge_aliases(self, *, ids: Sequence[int]) -> set[str]:
        return {r["item"] for r in await self._rows("purge_aliases", list(ids))}

    # alias domains

    async def insert_alias_domain(self, *, name: str, target_id: int, active: bool,
                                  task_id: int) -> bool:
        """The alias domain; False when an alias domain has the name (AliasDomainExists
        when a domain has it)."""
        return await self._value("insert_alias_domain", name, target_id, active,
                                 task_id) is not None

    async def update_alias_domain(self, *, alias_domain_id: int, active: bool) -> str | None:
        return await self._value("update_alias_domain", alias_domain_id, active)

    async def delete_alias_domain(self, *, alias_domain_id: int) -> str | None:
        return await self._value("delete_alias_domain", alias_domain_id)

    # retention (worker/retention.py)

    async def purge_expired_mailboxes(self, *, days: int, limit: int) -> int:
        return await self._value("purge_expired_mailboxes", days, limit)

    async def purge_expired_aliases(self, *, days: int, limit: int) -> int:
        return await self._value("purge_expired_aliases", days, limit)

    async def purge_expired_domains(self, *, days: int, limit: int) -> int:
        return await self._value("purge_expired_domains", days, limit)

    # Idempotency-Key records

    async def idempotency_lock(self, *, account_id: int, key: str) -> bool:
        return await self._value("idempotency_lock", account_id, key)

    async def get_idempotency_key(self, *, account_id: int, key: str,
                                  ttl_s: int) -> Row | None:
        return await self._row("get_idempotency_key", account_id, key, ttl_s)

    async def save_idempotency_key(self, *, account_id: int, key: str, fingerprint: str,
                                   status: int, body: str, task_id: int | None) -> None:
        await self._run("save_idempotency_key", account_id, key, fingerprint, status, body,
                        task_id)

    async def delete_expired_idempotency_keys(self, *, ttl_s: int, limit: int) -> None:
        await self._run("delete_expired_idempotency_keys", ttl_s, limit)

    # the mail stack's kicks

    async def claim_kicks(self, *, limit: int, max_backoff_s: int) -> list[Row]:
        return await self._rows("claim_kicks", limit, max_backoff_s)

    async def delete_kicks(self, *, ids: Sequence[int]) -> None:
        await self._run("delete_kicks", list(ids))

    async def drop_old_kicks(self, *, older_than_s: int, limit: int) -> int:
        return int(await self._value("drop_old_kicks", older_than_s, limit))
    # DKIM keys and DNS checks (service/core/dkim.py, service/core/dnscheck.py)

    async def insert_dkim_key(self, *, domain: str, key: NewDkimKey, task_id: int | None,
                              first: bool) -> str | None:
        """Store `key` for `domain`; with `first`, only if it has no key yet. The selector
        stored, or None."""
        return await self._value("insert_dkim_key", domain, key.selector, key.algorithm,
                                 key.public_key, key.private_key_sealed, task_id, first)

    async def retire_dkim_keys(self, *, domain_id: int, grace_s: int) -> list[str]:
        """The selectors that stop signing, published `grace_s` longer."""
        return [r["selector"] for r in await self._rows("retire_dkim_keys", domain_id,
                                                        float(grace_s))]

    async def domain_dkim_keys(self, *, domain_id: int) -> list[Row]:
        return await self._rows("domain_dkim_keys", domain_id)

    async def delete_retired_dkim_keys(self, *, limit: int) -> int:
        return len(await self._rows("delete_retired_dkim_keys", limit))

    async def signing_keys(self) -> list[Row]:
        return await self._rows("signing_keys")

    async def domain_dns(self, *, domain_id: int) -> Row | None:
        return await self._row("domain_dns", domain_id)

    async def record_dns_check(self, *, domain_id: int, results: dict[str, Any],
                               verified: bool | None) -> Row | None:
        """Store a check's findings; the domain's status before (`was`) and after."""
        return await self._row("record_dns_check", domain_id, results, verified)

    async def domains_to_recheck(self, *, after_s: int, limit: int) -> list[Row]:
        return await self._rows("domains_to_recheck", float(after_s), limit)

    # webhooks
    async def create_webhook(self, *, account_id: int, url: str, secret_sealed: str) -> Row:
        row = await self._row("create_webhook", account_id, url, secret_sealed)
        assert row is not None
        return row

    async def list_webhooks(self, *, account_id: int) -> list[Row]:
        return await self._rows("list_webhooks", account_id)

    async def delete_webhook(self, *, account_id: int, webhook_id: int) -> bool:
        return await self._value("delete_webhook", account_id, webhook_id) is not None

    async def webhook_deliveries(self, *, account_id: int, webhook_id: int,
                                 limit: int) -> list[dict[str, Any]] | None:
        """The endpoint's latest deliveries, newest first; None when it is not the
        account's."""
        row = await self._row("webhook_deliveries", account_id, webhook_id, limit)
        return None if row is None else list(row["deliveries"])

    async def task_deliveries(self, *, task_id: int) -> list[Row]:
        return await self._rows("task_deliveries", task_id)

    async def claim_delivery(self) -> Row | None:
        """A due delivery, locked until this store's transaction ends."""
        return await self._row("claim_delivery")

    async def record_attempt(self, *, delivery_id: int, attempt: dict[str, Any], state: str,
                             retry_in_s: float) -> None:
        await self._run("record_attempt", delivery_id, attempt, state, retry_in_s)
