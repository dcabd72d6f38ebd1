"""How stored rows are shown in the resource API: seed 003's field names, quotas as MB
integers, times as ISO 8601 in UTC. A lookup's row and a page's rows have the same
columns, so one function shows both."""

from __future__ import annotations

from typing import Any

from service.core.taskview import iso, task_view


def _status(row: Any) -> str:
    """active, inactive or deleted: a mailbox's or an alias's state at a glance."""
    if row["deleted_at"] is not None:
        return "deleted"
    return "active" if row["active"] else "inactive"


def domain(row: Any) -> dict[str, Any]:
    return {
        "domain": row["name"], "active": row["active"], "aliases": row["max_aliases"],
        "mailboxes": row["max_mailboxes"], "defquota": row["default_mailbox_quota_mb"],
        "maxquota": row["max_mailbox_quota_mb"], "quota": row["quota_mb"],
        "backupmx": row["backupmx"], "description": row["description"],
        "postmaster": row["postmaster"],
        # provisioning's status, unless it is deleted
        "status": "deleted" if row["deleted_at"] is not None else row["status"],
        "mailbox_count": row["mailbox_count"], "alias_count": row["alias_count"],
        "quota_used": row["quota_used_mb"], "parent": row["parent"],
        "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
        "deleted_at": iso(row["deleted_at"]),
    }


def mailbox(row: Any) -> dict[str, Any]:
    return {
        "email": row["address"], "domain": row["domain"], "local_part": row["local_part"],
        "name": row["display_name"], "quota": row["quota_mb"], "active": row["active"],
        "force_pw_update": row["force_pw_update"], "tls_enforce_in": row["tls_enforce_in"],
        "tls_enforce_out": row["tls_enforce_out"], "status": _status(row),
        "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
        "deleted_at": iso(row["deleted_at"]),
    }


def alias(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"], "address": row["address"], "goto": list(row["goto"]),
        "active": row["active"], "domain": row["domain"], "status": _status(row),
        "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
        "deleted_at": iso(row["deleted_at"]),
    }


def alias_domain(row: Any) -> dict[str, Any]:
    return {
        "alias_domain": row["name"], "target_domain": row["target"], "active": row["active"],
        "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
    }


task = task_view
