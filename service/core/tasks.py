"""What a task is: its types, its statuses, and the words its items end with.

This is the one list of task types. The schema's `task_types` table is filled from it by
`mailprov migrate`, the worker registers one job per type, and the metrics, the OpenAPI
document and the formats read it from here.
"""

from __future__ import annotations

TASK_TYPES = ("domain", "sub_domain", "mailbox_single", "mailbox_bulk")
STATUSES = ("queued", "processing", "completed", "failed")
UNFINISHED = ("queued", "processing")

# per-item outcomes, in the MailAPI seed's wording
CREATED = "Created successfully."
EXISTS = "Already exists."
LIMIT = "Mailbox limit reached."
QUOTA = "Domain quota exceeded."
ITEM_STATUSES = (CREATED, EXISTS, LIMIT, QUOTA)


def job_name(task_type: str) -> str:
    """The arq function that runs tasks of this type."""
    return f"provision_{task_type}"


def passwords_key(prefix: str, task_id: int) -> str:
    """Redis hash of a task's generated passwords, address -> password, with a TTL."""
    return f"{prefix}pw:{task_id}"
