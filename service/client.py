"""An async client for the mailprov API: POST a create request, then poll its task.

It needs nothing but aiohttp (no server-side imports), so any program can use it:

    async with MailprovClient("http://127.0.0.1:8080", key) as api:
        task_id = await api.create_mailboxes("example.com", prefix="team", count=500)
        task = await api.wait(task_id, on_progress=lambda done, total: print(done, total))

Field names are the API contract's (`Domain`, `Params`, `Email_fullname`, `single_bulk`);
the key goes in the body of a POST and in the query string of a GET, as in the contract.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import aiohttp

log = logging.getLogger("mailprov.client")

API = "/api/v1"
# called as on_progress(done, total); may be a coroutine function
ProgressCallback = Callable[[int, int], Awaitable[None] | None]


class MailprovError(Exception):
    """Anything the client raises about a request or a task."""


class ApiError(MailprovError):
    """The API answered with an error: `{"status": "error", "reason": ..., "errors": ...}`."""

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
                       body: dict[str, Any] | None = None) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.request(method, self.base_url + path, params=query, json=body,
                                         timeout=self._timeout) as response:
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
        if status == 200:
            return data
        reason = str(data.get("reason") or f"HTTP {status}")
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

    async def task(self, task_id: int) -> dict[str, Any]:
        """The task as GET /api/v1/get/task shows it (queued, processing or completed).
        A failed task raises TaskFailed: the API answers it with a 422."""
        return await self._request("GET", "/get/task",
                                   query={"key": self._key, "task_id": str(task_id)})

    # a `timeout` of our own: the deadline also bounds the Retry-After sleeps and backoff
    async def wait(self, task_id: int, *, timeout: float | None = 600.0,  # noqa: ASYNC109
                   on_progress: ProgressCallback | None = None,
                   poll_min: float = 0.1, poll_max: float = 2.0) -> dict[str, Any]:
        """Poll the task until it completes; its body.

        Polls back off from `poll_min` doubling to `poll_max` seconds. A 429 or 503 is
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

        while True:
            try:
                last = await self.task(task_id)
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
                pause = delay
                delay = min(delay * 2, poll_max)
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    raise WaitTimeout(task_id, timeout or 0.0, last)
                pause = min(pause, left)
            await asyncio.sleep(pause)
