"""An async client for the mailprov API: send a request, then poll its task.

It needs nothing but aiohttp (no server-side imports), so any program can use it:

    async with MailprovClient("http://127.0.0.1:8080", key) as api:
        task_id = await api.create_mailboxes("example.com", prefix="team", count=500)
        task = await api.wait(task_id, on_progress=lambda done, total: print(done, total))
        await api.wait(await api.change_password("team1@example.com", "a-new-secret"))

The creates speak the MailAPI (`Domain`, `Params`, `Email_fullname`, `single_bulk`; the
key in the body of a POST and in the query string of a GET, as in its contract); reads,
changes, deletes, restores, aliases and alias domains speak the resource API (seed 003's
field names, the key as a Bearer header). Every write answers a task id, which `wait`
polls, whichever API recorded it.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

log = logging.getLogger("mailprov.client")

API = "/api/v1"
# called as on_progress(done, total); may be a coroutine function
ProgressCallback = Callable[[int, int], Awaitable[None] | None]


class MailprovError(Exception):
    """Anything the client raises about a request or a task."""


class ApiError(MailprovError):
    """The API answered with an error: `{"status": "error", "reason": ..., "errors": ...}`
    (the MailAPI), or `{"type": "error", "msg": ..., "errors": ...}` (the resource API);
    `reason` holds the sentence either way."""

    def __init__(self, status: int, reason: str, errors: dict[str, list[str]] | None = None,
                 *, body: dict[str, Any] | None = None, retry_after: float | None = None) -> None:
        self.status = status
        self.reason = reason
        self.errors = errors or {}
        self.body = body or {}
        # seconds the server asked us to wait (Retry-After), when it said
        self.retry_after = retry_after
        super().__init__(f"HTTP {status}: {reason}")


class RateLimited(ApiError):
    """429: the account's hourly limit is used up; `retry_after` says for how long."""


class TaskFailed(MailprovError):
    """The task ran and failed as a whole; `reason` says why, `results` holds the items."""

    def __init__(self, task_id: int, reason: str, results: dict[str, Any],
                 body: dict[str, Any]) -> None:
        self.task_id = task_id
        self.reason = reason
        self.results = results
        self.body = body
        super().__init__(f"task {task_id} failed: {reason}")


class WaitTimeout(MailprovError, TimeoutError):
    """The task did not finish in time; `task` is the last body seen (None if none was)."""

    def __init__(self, task_id: int, timeout: float, task: dict[str, Any] | None) -> None:
        self.task_id = task_id
        self.task = task
        state = task["status"] if task else "unknown"
        progress = (task or {}).get("progress")
        if progress:
            state += f" {progress['done']}/{progress['total']}"
        super().__init__(f"task {task_id} is not finished after {timeout:g} s ({state})")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _params(params: Mapping[str, Any]) -> dict[str, Any]:
    # None means "not given", so callers (the CLI) can pass every option through
    return {name: value for name, value in params.items() if value is not None}


def _page_query(page: int, size: int, sort: str | None,
                filters: Mapping[str, Any]) -> dict[str, str]:
    """A resource list's query: `page[number]`, `page[size]`, `sort`, `filter[...]`."""
    query = {"page[number]": str(page), "page[size]": str(size)}
    if sort:
        query["sort"] = sort
    for name, value in _params(filters).items():
        query[f"filter[{name}]"] = str(value).lower() if isinstance(value, bool) else str(value)
    return query


def _segment(value: str | int) -> str:
    """A path segment: an address keeps its @, anything else is quoted."""
    return quote(str(value), safe="@")


class MailprovClient:
    """A client of one mailprov installation with one API key.

    `session` lends an aiohttp session (the client then leaves it open); otherwise the
    client opens its own and `close()` / `async with` closes it. `timeout` bounds each
    HTTP request; `max_retry_after` is the longest Retry-After `wait` honours by sleeping
    (a longer one, such as an hourly limit used up, raises at once instead).
    """

    def __init__(self, base_url: str, key: str, *, session: aiohttp.ClientSession | None = None,
                 timeout: float = 30.0, max_retry_after: float = 60.0) -> None:
        base = base_url.rstrip("/")
        self.base_url = base if base.endswith(API) else base + API
        self._key = key
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_retry_after = max_retry_after

    def __repr__(self) -> str:
        # never the key
        return f"MailprovClient({self.base_url!r})"

    async def __aenter__(self) -> MailprovClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session, if the client opened it."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                       body: dict[str, Any] | None = None, bearer: bool = False,
                       held: float = 0.0) -> dict[str, Any]:
        """`held`: seconds the server may hold the answer (a long poll), on top of the
        request's timeout."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {self._key}"} if bearer else None
        timeout = self._timeout
        if held and timeout.total is not None:
            timeout = aiohttp.ClientTimeout(total=timeout.total + held)
        async with self._session.request(method, self.base_url + path, params=query, json=body,
                                         headers=headers, timeout=timeout) as response:
            text = await response.text()
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            status = response.status
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            # not the API talking: a proxy's error page, a wrong URL
            raise ApiError(status, f"Unexpected response that is not a JSON object: "
                                   f"{text[:200]!r}", retry_after=retry_after)
        if status in (200, 202):
            return data
        reason = str(data.get("reason") or data.get("msg") or f"HTTP {status}")
        if status == 422 and "Task_id" in data:
            raise TaskFailed(int(data["Task_id"]), reason, data.get("results") or {}, data)
        kind = RateLimited if status == 429 else ApiError
        raise kind(status, reason, data.get("errors"), body=data, retry_after=retry_after)

    async def _post(self, path: str, body: dict[str, Any]) -> int:
        # no retries: a 503 may come after the task was recorded, and a second POST would
        # then create it twice (or answer 409)
        data = await self._request("POST", path, body={**body, "key": self._key})
        return int(data["task_id"])

    async def create_domain(self, domain: str, **params: Any) -> int:
        """Ask for a domain; the task id. `params`: quota_mb, max_mailboxes,
        default_mailbox_quota_mb, description (None values are left out)."""
        return await self._post("/create/domain", {"Domain": domain, "Params": _params(params)})

    async def create_mailbox(self, address_or_local: str, domain: str | None = None,
                             **params: Any) -> int:
        """Ask for one mailbox, given as `john@example.com` or as `john` plus `domain`; the
        task id. `params`: display_name, quota_mb, password or password_hash."""
        if domain is None:
            local, at, domain = address_or_local.rpartition("@")
            if not at or not local:
                raise ValueError("give a full address, or a local part and a domain")
        return await self._post("/create/mailbox/single", {
            "Email_fullname": address_or_local, "single_bulk": "single", "Domain": domain,
            "Params": _params(params),
        })

    async def create_mailboxes(self, domain: str, *, prefix: str | None = None,
                               count: int | None = None, start: int = 1,
                               mailboxes: Iterable[Mapping[str, Any]] | None = None,
                               **params: Any) -> int:
        """Ask for a batch of mailboxes; the task id. Either `prefix` and `count` (makes
        prefix{start} ... prefix{start+count-1}), or `mailboxes`, a list of objects with
        `local_part` and optional display_name, quota_mb, password, password_hash (then
        `prefix` is only the batch's label). `params` (display_name, quota_mb, password)
        apply to every mailbox."""
        if mailboxes is not None:
            if count is not None:
                raise ValueError("give count (with a prefix) or mailboxes, not both")
            label = prefix or "batch"
            batch: dict[str, Any] = {"mailboxes": [dict(m) for m in mailboxes]}
        else:
            if prefix is None or count is None:
                raise ValueError("give a prefix and a count, or mailboxes")
            label = prefix
            batch = {"count": count, "start": start}
        return await self._post("/create/mailbox/bulk", {
            "Email_fullname": label, "single_bulk": "bulk", "Domain": domain,
            "Params": {**batch, **_params(params)},
        })

    # the resource API: reads answer the resource or a page, writes a task id

    async def _read(self, path: str, query: dict[str, str] | None = None) -> dict[str, Any]:
        return await self._request("GET", path, query=query, bearer=True)

    async def _write(self, method: str, path: str, body: dict[str, Any] | None = None,
                     query: dict[str, str] | None = None) -> int:
        # no retries, as for the creates: a repeat may record a second task
        data = await self._request(method, path, body=body, query=query, bearer=True)
        return int(data["task_id"])

    async def _delete(self, path: str, purge: bool) -> int:
        return await self._write("DELETE", path, query={"purge": "true"} if purge else None)

    async def get_domain(self, domain: str) -> dict[str, Any]:
        return await self._read(f"/domains/{_segment(domain)}")

    async def list_domains(self, *, page: int = 1, size: int = 100, sort: str | None = None,
                           **filters: Any) -> dict[str, Any]:
        """One page (`data`, `meta`, `links`); filters: search, active, deleted."""
        return await self._read("/domains", _page_query(page, size, sort, filters))

    async def update_domain(self, domain: str, **fields: Any) -> int:
        """Change active, aliases, mailboxes, defquota, maxquota, quota, backupmx or
        description (None: unchanged); the task id."""
        return await self._write("PUT", f"/domains/{_segment(domain)}", _params(fields))

    async def delete_domain(self, domain: str, *, purge: bool = False) -> int:
        """Soft delete, with sub-domains, mailboxes and aliases (`purge`: for good)."""
        return await self._delete(f"/domains/{_segment(domain)}", purge)

    async def restore_domain(self, domain: str) -> int:
        return await self._write("POST", f"/domains/{_segment(domain)}/restore")

    async def delete_domains(self, domains: Sequence[str]) -> int:
        """Soft delete up to 100 domains in one task, a result per domain."""
        return await self._write("POST", "/domains/bulk-delete", {"domains": list(domains)})

    async def get_mailbox(self, email: str) -> dict[str, Any]:
        return await self._read(f"/mailboxes/{_segment(email)}")

    async def list_mailboxes(self, *, page: int = 1, size: int = 100, sort: str | None = None,
                             **filters: Any) -> dict[str, Any]:
        """One page; filters: domain, search, active, deleted."""
        return await self._read("/mailboxes", _page_query(page, size, sort, filters))

    async def update_mailbox(self, email: str, **fields: Any) -> int:
        """Change name, quota, active, force_pw_update, tls_enforce_in, tls_enforce_out,
        password or password_hash (None: unchanged); the task id."""
        return await self._write("PUT", f"/mailboxes/{_segment(email)}", _params(fields))

    async def change_password(self, email: str, password: str | None = None, *,
                              password_hash: str | None = None) -> int:
        """A new password (hashed by mailprov) or a `{SCHEME}...` hash; the task id."""
        if (password is None) == (password_hash is None):
            raise ValueError("give a password or a password_hash")
        return await self.update_mailbox(email, password=password, password_hash=password_hash)

    async def delete_mailbox(self, email: str, *, purge: bool = False) -> int:
        return await self._delete(f"/mailboxes/{_segment(email)}", purge)

    async def restore_mailbox(self, email: str) -> int:
        return await self._write("POST", f"/mailboxes/{_segment(email)}/restore")

    async def mailbox_action(self, action: str, emails: Sequence[str]) -> int:
        """activate, deactivate, delete, restore or forget many mailboxes in one task."""
        return await self._write("POST", "/mailboxes/bulk",
                                 {"action": action, "emails": list(emails)})

    async def create_alias(self, address: str, goto: Sequence[str], *,
                           active: bool = True) -> tuple[int, int]:
        """An alias (`@example.com`: the catch-all); (task id, alias id)."""
        data = await self._request("POST", "/aliases", bearer=True, body={
            "address": address, "goto": list(goto), "active": active})
        return int(data["task_id"]), int(data["id"])

    async def get_alias(self, alias_id: int) -> dict[str, Any]:
        return await self._read(f"/aliases/{alias_id}")

    async def list_aliases(self, *, page: int = 1, size: int = 100, sort: str | None = None,
                           **filters: Any) -> dict[str, Any]:
        """One page; filters: domain, search, active, deleted."""
        return await self._read("/aliases", _page_query(page, size, sort, filters))

    async def update_alias(self, alias_id: int, *, goto: Sequence[str] | None = None,
                           active: bool | None = None) -> int:
        return await self._write("PUT", f"/aliases/{alias_id}", _params(
            {"goto": None if goto is None else list(goto), "active": active}))

    async def delete_alias(self, alias_id: int, *, purge: bool = False) -> int:
        return await self._delete(f"/aliases/{alias_id}", purge)

    async def restore_alias(self, alias_id: int) -> int:
        return await self._write("POST", f"/aliases/{alias_id}/restore")

    async def forget_alias(self, alias_id: int) -> int:
        return await self._write("DELETE", f"/aliases/{alias_id}/forget")

    async def alias_action(self, action: str, ids: Sequence[int]) -> int:
        """activate, deactivate, delete, restore or forget up to 25 aliases in one task."""
        return await self._write("POST", "/aliases/bulk", {"action": action, "ids": list(ids)})

    async def create_alias_domain(self, alias_domain: str, target_domain: str, *,
                                  active: bool = True) -> int:
        return await self._write("POST", "/alias-domains", {
            "alias_domain": alias_domain, "target_domain": target_domain, "active": active})

    async def get_alias_domain(self, alias_domain: str) -> dict[str, Any]:
        return await self._read(f"/alias-domains/{_segment(alias_domain)}")

    async def list_alias_domains(self, *, page: int = 1, size: int = 100,
                                 sort: str | None = None, **filters: Any) -> dict[str, Any]:
        return await self._read("/alias-domains", _page_query(page, size, sort, filters))

    async def update_alias_domain(self, alias_domain: str, *, active: bool) -> int:
        return await self._write("PUT", f"/alias-domains/{_segment(alias_domain)}",
                                 {"active": active})

    async def delete_alias_domain(self, alias_domain: str) -> int:
        return await self._write("DELETE", f"/alias-domains/{_segment(alias_domain)}")

    async def task(self, task_id: int, *, wait: int = 0) -> dict[str, Any]:
        """The task as GET /api/v1/get/task shows it (queued, processing or completed).
        A failed task raises TaskFailed: the API answers it with a 422. `wait` (seconds,
        at most 60) lets the server hold the answer until the task finishes or its
        progress moves (long polling)."""
        query = {"key": self._key, "task_id": str(task_id)}
        if wait:
            query["wait"] = str(wait)
        return await self._request("GET", "/get/task", query=query, held=wait)

    # a `timeout` of our own: the deadline also bounds the Retry-After sleeps and backoff
    async def wait(self, task_id: int, *, timeout: float | None = 600.0,  # noqa: ASYNC109
                   on_progress: ProgressCallback | None = None,
                   poll_min: float = 0.1, poll_max: float = 2.0,
                   long_poll: int = 30) -> dict[str, Any]:
        """Poll the task until it completes; its body.

        Each poll is a long poll: the server holds it up to `long_poll` seconds until the
        task finishes or its progress moves, so a task is one request in the common case
        and a bulk one request per progress step. A poll answered with nothing new (a
        server that does not hold polls, or lost its subscription) is followed by a pause
        backing off from `poll_min` doubling to `poll_max` seconds. A 429 or 503 is
        retried after its Retry-After (up to `max_retry_after`; longer raises the error).
        `on_progress(done, total)` is called whenever the task's progress changes, and
        once with done == total when it completes. Raises TaskFailed when the task fails,
        WaitTimeout after `timeout` seconds, ApiError on any other error.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        delay = poll_min
        last: dict[str, Any] | None = None
        reported: tuple[int, int] | None = None

        async def report(done: int, total: int) -> None:
            nonlocal reported
            if on_progress is None or reported == (done, total):
                return
            reported = (done, total)
            outcome = on_progress(done, total)
            if inspect.isawaitable(outcome):
                await outcome

        seen: tuple[Any, Any] | None = None
        while True:
            hold = long_poll
            if deadline is not None:
                hold = min(hold, int(deadline - loop.time()))
            try:
                last = await self.task(task_id, wait=max(0, hold))
            except ApiError as exc:
                if exc.status not in (429, 503):
                    raise
                if exc.retry_after is not None and exc.retry_after > self.max_retry_after:
                    raise
                pause = delay if exc.retry_after is None else exc.retry_after
                log.info("task %s: HTTP %s, polling again in %.1f s", task_id, exc.status,
                         pause)
            else:
                if last.get("status") == "completed":
                    total = last.get("total_email") or len(last.get("results") or {})
                    await report(total, total)
                    return last
                progress = last.get("progress")
                if progress:
                    await report(int(progress["done"]), int(progress["total"]))
                state = (last.get("status"), progress and progress.get("done"))
                if hold > 0 and state != seen:
                    # news: ask again at once, the server holds the next poll for us
                    pause, delay = 0.0, poll_min
                else:
                    pause = delay
                    delay = min(delay * 2, poll_max)
                seen = state
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    raise WaitTimeout(task_id, timeout or 0.0, last)
                pause = min(pause, left)
            await asyncio.sleep(pause)
