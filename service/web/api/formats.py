"""How stored values are shown in the seed API's shapes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def day(moment: datetime) -> str:
    """`14-04-2026`: the seed's DD-MM-YYYY, in UTC."""
    return moment.astimezone(UTC).strftime("%d-%m-%Y")


def domain_quota(mb: int) -> str:
    """`10GB` when the MB figure divides by 1024, else `1536MB`."""
    return f"{mb // 1024}GB" if mb % 1024 == 0 else f"{mb}MB"


def mailbox_quota(mb: int) -> str:
    """Always in MB, as the seed shows mailbox quotas (`1024MB`)."""
    return f"{mb}MB"


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


def task_body(task: Any, passwords: dict[str, str]) -> dict[str, Any]:
    """A task in the seed's result shape (`Task_id` and `task_id`, odd as they are)."""
    results = item_results(task, passwords, selectors=False)
    body: dict[str, Any] = {
        "Task_id": task["id"],
        "total_email": task["progress_total"] if task["type"].startswith("mailbox") else 0,
        "domain": task["domain"],
        "results": results,
        "status": task["status"],
        "task_id": str(task["id"]),
    }
    if task["status"] in ("queued", "processing"):
        body["progress"] = {"done": task["progress_done"], "total": task["progress_total"]}
    return body
