"""What a task is: its types, its statuses, and the words its items end with.

This is the one list of task types. The schema's `task_types` table is filled from it by
`mailprov migrate`, the worker registers one job per type, and the metrics, the OpenAPI
document and the formats read it from here.
"""

from __future__ import annotations

TASK_TYPES = (
    "domain", "sub_domain", "mailbox_single", "mailbox_bulk",
    # the resource API's (api-resources.md); its mailbox and domain creates are the above
    "domain_update", "domain_delete", "domain_restore", "domain_bulk_delete",
    "mailbox_update", "mailbox_delete", "mailbox_restore", "mailbox_bulk_action",
    "alias", "alias_update", "alias_delete", "alias_restore", "alias_forget",
    "alias_bulk_action",
    "alias_domain", "alias_domain_update", "alias_domain_delete",
    # a domain's DKIM key and DNS records (worker/domain_dns.py)
    "dkim_rotate", "domain_verify",
)
STATUSES = ("queued", "processing", "completed", "failed")
UNFINISHED = ("queued", "processing")

# per-item outcomes, in the MailAPI seed's wording
CREATED = "Created successfully."
EXISTS = "Already exists."
LIMIT = "Mailbox limit reached."
QUOTA = "Domain quota exceeded."
# ... and in the same style, those of the lifecycle
MAX_QUOTA = "Mailbox quota above the domain's maximum."
UPDATED = "Updated successfully."
DELETED = "Deleted successfully."
PURGED = "Deleted for good."
RESTORED = "Restored successfully."
ACTIVATED = "Activated successfully."
DEACTIVATED = "Deactivated successfully."
NOT_FOUND = "Not found."
ALREADY_DELETED = "Already deleted."
DELETED_FIRST = "Deleted; restore it first."
NOT_DELETED = "Not deleted."
DOMAIN_DELETED = "Its domain is deleted."
EXPIRED = "Past the retention period."
ALIAS_LIMIT = "Alias limit reached."
SHADOWS = "A mailbox has this address."
# ... a DKIM rotation, and a domain_verify task's items: one per DNS record
ROTATED = "Rotated: a new key signs."
DNS_VERIFIED = "Published as expected."
DNS_MISSING = "Missing."
DNS_WRONG = "Published with another value."
DNS_ERROR = "DNS did not answer."
ITEM_STATUSES = (CREATED, EXISTS, LIMIT, QUOTA, MAX_QUOTA, UPDATED, DELETED, PURGED, RESTORED,
                 ACTIVATED, DEACTIVATED, NOT_FOUND, ALREADY_DELETED, DELETED_FIRST,
                 NOT_DELETED, DOMAIN_DELETED, EXPIRED, ALIAS_LIMIT, SHADOWS, ROTATED,
                 DNS_VERIFIED, DNS_MISSING, DNS_WRONG, DNS_ERROR)
# what a bulk action of the resource API does to each item
ACTIONS = ("activate", "deactivate", "delete", "restore", "forget")


def job_name(task_type: str) -> str:
    """The arq function that runs tasks of this type."""
    return f"provision_{task_type}"


def passwords_key(prefix: str, task_id: int) -> str:
    """Redis hash of a task's generated passwords, address -> password, with a TTL."""
    return f"{prefix}pw:{task_id}"
