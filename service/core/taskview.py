"""A task as the resource API shows it (GET /api/v1/tasks/{id}): the web answers it, and the
worker sends it to webhooks (worker/webhooks.py), so it lives here, outside the web."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def iso(moment: datetime | None) -> str | None:
    """`2026-04-14T09:30:00Z`."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def item_results(task: Any, passwords: dict[str, str], *,
                 selectors: bool = True) -> dict[str, Any]:
    """A task's per-item results as both faces show them: each item's status, and for a
    mailbox whose password was generated, `password`; with `selectors`, for a domain whose
    DKIM key the task made, `dkim_selector` (the resource API's; the MailAPI's items keep
    the seed's shape). `passwords` holds the generated passwords still within their TTL;
    an expired one shows as `null`."""
    results: dict[str, Any] = {}
    for name, item in task["results"].items():
        shown = {"status": item["status"]}
        if item.get("generated"):
            shown["password"] = passwords.get(name)
        if selectors and "dkim_selector" in item:
            shown["dkim_selector"] = item["dkim_selector"]
        results[name] = shown
    return results


def task_view(row: Any, passwords: dict[str, str] | None = None) -> dict[str, Any]:
    """A task; a generated password shows in its item while `passwords` holds it (a page
    of tasks shows none: it reads no passwords)."""
    return {
        "id": row["id"], "type": row["type"], "status": row["status"], "domain": row["domain"],
        "progress": {"done": row["progress_done"], "total": row["progress_total"]},
        "results": item_results(row, passwords or {}), "error": row["error"],
        "created_at": iso(row["created_at"]), "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
    }
