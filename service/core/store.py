"""The data-access layer: the only code that runs SQL, one typed method per named query.

Each method runs the statement of its own name in `sql/queries.sql` (a unit test holds
the two lists together), so callers pass keyword arguments and get typed values back,
and no query name or positional parameter list leaks out of this module. Driver errors
that mean something to a client are turned into domain exceptions here, by constraint
name.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from service.core import errors
from service.core.sql import QUERIES

Row: TypeAlias = asyncpg.Record

# unique constraint name -> what a client is told
CONSTRAINT_ERRORS: dict[str, type[errors.ApiError]] = {
    "domains_name_key": errors.DomainExists,
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


class Store:
    """Every query, bound to a pool or to one connection (inside a transaction)."""

    def __init__(self, executor: asyncpg.Pool | asyncpg.Connection) -> None:
        self._ex = executor

    async def _rows(self, name: str, *args: Any) -> list[Row]:
        with _mapped_errors():
            return await self._ex.fetch(QUERIES[name], *args)

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

    async def create_domain_task(self, *, account_id: int, domain: str, quota_mb: int,
                                 max_mailboxes: int, default_mailbox_quota_mb: int,
                                 description: str | None) -> int:
        """The domain row (pending; DomainExists when it is taken) and its task."""
        return await self._value("create_domain_task", account_id, domain, {"domain": domain},
                                 quota_mb, max_mailboxes, default_mailbox_quota_mb,
                                 description)

    # reads of the MailAPI lists

    async def list_domains(self, *, account_id: int,
                           domains: Sequence[str] | None = None) -> list[Row]:
        """The account's domains; only those in `domains` when it is given."""
        return await self._rows("list_domains", account_id,
                                None if domains is None else list(domains))

    async def list_mailboxes(self, *, domain_id: int) -> list[Row]:
        return await self._rows("list_mailboxes", domain_id)

    # jobs

    async def start_task(self, *, task_id: int) -> Row | None:
        """The task, now `processing` with one more attempt; None when it is finished."""
        return await self._row("start_task", task_id)

    async def lock_task(self, *, task_id: int, keys: Sequence[str]) -> Row | None:
        return await self._row("lock_task", task_id, list(keys))

    async def lock_domain(self, *, domain_id: int) -> Row | None:
        return await self._row("lock_domain", domain_id)

    async def existing_addresses(self, *, addresses: Sequence[str]) -> set[str]:
        return set(await self._value("existing_addresses", list(addresses)))

    async def insert_mailboxes(self, *, domain_id: int, task_id: int,
                               mailboxes: Sequence[NewMailbox]) -> set[str]:
        """Insert in one statement, counters included; the addresses inserted."""
        rows = await self._rows(
            "insert_mailboxes", domain_id, task_id, [m.local_part for m in mailboxes],
            [m.address for m in mailboxes], [m.password_hash for m in mailboxes],
            [m.display_name for m in mailboxes], [m.quota_mb for m in mailboxes])
        return {r["address"] for r in rows}

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

    async def erase_item_secrets(self, *, task_id: int, local_parts: Sequence[str]) -> None:
        """Strip the client's secrets (a sealed password, a hash) of these items from the
        task's payload."""
        await self._run("erase_item_secrets", task_id, list(local_parts))

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
