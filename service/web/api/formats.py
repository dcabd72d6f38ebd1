"""How stored values are shown in the seed API's shapes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from service.core.taskview import item_results


def day(moment: datetime) -> str:
    """`14-04-2026`: the seed's DD-MM-YYYY, in UTC."""
    return moment.astimezone(UTC).strftime("%d-%m-%Y")


def domain_quota(mb: int) -> str:
    """`10GB` when the MB figure divides by 1024, else `1536MB`."""
    return f"{mb // 1024}GB" if mb % 1024 == 0 else f"{mb}MB"


def mailbox_quota(mb: int) -> str:
    """Always in MB, as the seed shows mailbox quotas (`1024MB`)."""
    return f"{mb}MB"


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
