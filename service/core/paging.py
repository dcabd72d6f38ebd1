"""Pages of a listing: what a client asks for, what the store answers, and the cursors
that the `next` and `prev` links carry (the SQL is service/core/sql/paging.sql).

A cursor names the first row of the next page (`from`) or the last row of the previous
one (`to`) by its sort key and id, so following links never rescans what came before,
however deep the page. It is opaque to clients: URL-safe base64 of a small JSON array,
which also names the sort it belongs to.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from asyncpg import Record

DIRECTIONS = ("from", "to")


@dataclass(frozen=True)
class Cursor:
    """Where a linked page starts (`from`) or ends (`to`): the sort key, as text, and id."""

    how: str
    key: str
    id: int
    sort: str

    def encode(self) -> str:
        raw = json.dumps([self.how, self.key, self.id, self.sort], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """The cursor of a token; ValueError when it is not one."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            how, key, id_, sort = json.loads(raw)
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
            raise ValueError("Not a cursor of this API.") from None
        if (how not in DIRECTIONS or not isinstance(key, str) or not isinstance(sort, str)
                or not isinstance(id_, int) or isinstance(id_, bool) or not 0 < id_ < 2**63):
            raise ValueError("Not a cursor of this API.")
        return cls(how, key, id_, sort)


def key_text(value: Any) -> str:
    """A sort key as a cursor holds it: text that Postgres casts back exactly."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


@dataclass(frozen=True)
class PageRequest:
    """One page of one account's listing. `sort` is an API sort field (`-` stripped),
    `filters` maps API filter names to values; `deleted` is `without`, `with` or `only`."""

    account_id: int
    number: int = 1
    size: int = 100
    sort: str = ""
    descending: bool = False
    cursor: Cursor | None = None
    filters: dict[str, Any] = field(default_factory=dict)
    deleted: str = "without"
    # the domains of a key limited to some (None: all of the account's)
    domains: Sequence[str] | None = None

    @property
    def sort_spec(self) -> str:
        """The sort as the `sort` parameter spells it, which a cursor must match."""
        return ("-" if self.descending else "") + self.sort


@dataclass(frozen=True)
class Page:
    """A page's rows in the sort's order, the total, and the rows just past each side
    of it (None at either end), from which the `next` and `prev` cursors are made."""

    total: int
    rows: list[Record]
    next: Record | None
    prev: Record | None
