"""The rules a domain's limits follow, in one place: the web checks a request against them
before it is accepted (a clear 422 that changes nothing), and the job checks again under
the domain's row lock, where the counters are exact.

Every limit is checked on what is not deleted: counters (`mailbox_count`, `alias_count`,
`quota_used_mb`) leave deleted rows out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.core.tasks import ALIAS_LIMIT, LIMIT, MAX_QUOTA, QUOTA

# API field -> the domain column it is stored in
DOMAIN_FIELDS = {
    "active": "active", "aliases": "max_aliases", "mailboxes": "max_mailboxes",
    "defquota": "default_mailbox_quota_mb", "maxquota": "max_mailbox_quota_mb",
    "quota": "quota_mb", "backupmx": "backupmx", "description": "description",
    "postmaster": "postmaster",
}


def domain_problems(domain: Mapping[str, Any], changes: Mapping[str, Any],
                    largest_quota_mb: int) -> dict[str, list[str]]:
    """Why `changes` (domain columns) cannot be made to `domain` (a row with its limits and
    counters), by API field; {} when they can. No limit may drop below what is in use, and
    defquota <= maxquota <= quota must hold afterwards."""
    after = {column: changes.get(column, domain[column]) for column in (
        "max_mailboxes", "max_aliases", "quota_mb", "max_mailbox_quota_mb",
        "default_mailbox_quota_mb")}
    problems: dict[str, list[str]] = {}

    def below(field: str, column: str, in_use: int, what: str) -> None:
        if column in changes and changes[column] < in_use:
            problems.setdefault(field, []).append(
                f"Cannot be lower than what is in use: {in_use} {what}.")

    below("mailboxes", "max_mailboxes", domain["mailbox_count"], "mailboxes")
    below("aliases", "max_aliases", domain["alias_count"], "aliases")
    below("quota", "quota_mb", domain["quota_used_mb"], "MB given to mailboxes")
    below("maxquota", "max_mailbox_quota_mb", largest_quota_mb,
          "MB, the largest mailbox quota")
    if not problems:
        if after["default_mailbox_quota_mb"] > after["max_mailbox_quota_mb"]:
            problems["defquota"] = ["Cannot be larger than maxquota."]
        elif after["max_mailbox_quota_mb"] > after["quota_mb"]:
            problems["maxquota"] = ["Cannot be larger than quota."]
    return problems


def mailbox_fits(*, quota_mb: int, domain_quota_mb: int, max_mailbox_quota_mb: int,
                 quota_used_mb: int, max_mailboxes: int | None = None,
                 mailbox_count: int = 0) -> str | None:
    """Why a mailbox of `quota_mb` (new, or back from a deletion, when `max_mailboxes` is
    given) does not fit its domain, as an item status; None when it fits. For a change of
    an existing mailbox's quota, `quota_used_mb` leaves its old quota out."""
    if max_mailboxes is not None and mailbox_count >= max_mailboxes:
        return LIMIT
    if quota_mb > max_mailbox_quota_mb:
        return MAX_QUOTA
    if quota_used_mb + quota_mb > domain_quota_mb:
        return QUOTA
    return None


def alias_fits(*, max_aliases: int, alias_count: int) -> str | None:
    """Why one more alias does not fit its domain; None when it does."""
    return ALIAS_LIMIT if alias_count >= max_aliases else None
